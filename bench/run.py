"""Run every benchmark and write ``bench/RESULTS.md`` plus ``bench/results.png``.

    python bench/run.py                # all
    python bench/run.py trainer batch  # some
    python bench/run.py --quick        # smaller sizes, for a smoke run
    python bench/run.py --no-run       # only gather bench/results/*.json into RESULTS.md

Each ``bench_<name>.py`` measures ratios against a baseline in one run and saves rows through
``bench/common.py``; this script runs them one after another (never in parallel: they would
measure each other) and gathers the rows with the machine, versions and date.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import RESULTS_DIR, Row, markdown  # noqa: E402

BENCHMARKS = ["trainer", "batch", "batch_lines", "executor", "startup", "tabular"]
# Written by the image test (docker/test-images.sh, part of CI), not by a bench script here.
GATHERED_ONLY = ["images"]
PACKAGES = ["tensorflow", "keras", "apache-beam", "papermill", "gcsfs", "orjson", "pysimdjson"]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Python {platform.python_version()}"


def versions() -> str:
    out = []
    for p in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out.append(f"{p} {importlib.metadata.version(p)}")
    return ", ".join(out)


def load_rows(name: str) -> tuple[list[Row], str]:
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    if not os.path.exists(path):
        return [], ""
    with open(path) as f:
        raw = json.load(f)
    fields = set(Row.__dataclass_fields__)
    return [Row(**{k: v for k, v in r.items() if k in fields}) for r in raw["rows"]], raw.get(
        "notes", ""
    )


def _short(text: str, width: int = 100) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def chart(rows: list[Row], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.target is not None]
    if not rows:
        return
    labels = [_short(f"{r.benchmark}: {r.measure}".replace("`", "")) for r in rows]
    # Plot how far each ratio is from its target: >= 1 means the target is met.
    score = [
        (r.target / r.achieved if r.lower_is_better else r.achieved / r.target) if r.achieved else 0
        for r in rows
    ]
    fig, ax = plt.subplots(figsize=(15, 0.45 * len(rows) + 1.2))
    colors = ["tab:green" if s >= 1 else "tab:red" for s in score]
    ax.barh(labels, score, color=colors)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("achieved / target (>= 1: target met; log scale)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", default=BENCHMARKS, help=f"any of {BENCHMARKS}")
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--no-run", action="store_true", help="only gather saved results")
    args = parser.parse_args()
    failed = []
    if not args.no_run:
        for name in args.names:
            script = os.path.join(HERE, f"bench_{name}.py")
            if not os.path.exists(script):
                print(f"[bench] no {script}; skipped", flush=True)
                continue
            print(f"[bench] {name}", flush=True)
            cmd = [sys.executable, script] + (["--quick"] if args.quick else [])
            if subprocess.run(cmd, cwd=os.path.dirname(HERE)).returncode != 0:
                failed.append(name)

    all_rows: list[Row] = []
    parts = [
        "# Benchmark results",
        "",
        f"- date: {datetime.date.today().isoformat()}",
        f"- machine: {machine()}",
        f"- versions: {versions()}",
        "- command: `make bench` (`python bench/run.py`); every ratio is measured against its "
        "baseline in the same run; value columns show the median of the repeats.",
        "",
        "![achieved vs target](results.png)",
        "",
    ]
    for name in BENCHMARKS + GATHERED_ONLY:
        rows, notes = load_rows(name)
        if not rows:
            continue
        all_rows += rows
        parts += [f"## {name}", "", markdown(rows)]
        if notes:
            parts += [notes, ""]
    with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
        f.write("\n".join(parts))
    chart(all_rows, os.path.join(HERE, "results.png"))
    print(f"[bench] wrote {os.path.join(HERE, 'RESULTS.md')}")
    if failed:
        print(f"[bench] failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
