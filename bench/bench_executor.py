"""Benchmark of the notebook executor; writes ``bench/results/executor.md``.

1. Wall time of ``python -m executor batch`` (8 runs, 2 kernels at once) against the same 8
   runs one after another with the plain ``papermill`` command.
2. Writes to the output object per run on GCS (fake-gcs-server, counted at a proxy in front
   of it) for a 50-cell notebook: ours at two mirror intervals against plain papermill
   writing to ``gs://`` itself.

Run::

    .venv/bin/python bench/bench_executor.py
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))

from executor_helpers import (  # noqa: E402
    TRAIN_CELLS,
    TRAIN_PARAMS,
    CountingGCSProxy,
    notebook,
    sleepy_notebook,
    write,
)

from jobcommon import storage  # noqa: E402
from jobcommon.localgcs import LocalGCS  # noqa: E402

PY = sys.executable


def _run(cmd: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=REPO, timeout=1800)
    return time.perf_counter() - start


def bench_batch(workdir: str, runs: int, parallel: int) -> list[tuple[str, str]]:
    nb = notebook(TRAIN_PARAMS, "import time\ntime.sleep(1.0)", *TRAIN_CELLS)
    path = write(nb, os.path.join(workdir, "train.ipynb"))
    specs = [{"epochs": i + 1, "lr": 0.5} for i in range(runs)]
    runs_file = os.path.join(workdir, "runs.json")
    with open(runs_file, "w") as f:
        json.dump(specs, f)
    ours = _run(
        [
            PY,
            "-m",
            "executor",
            "batch",
            path,
            os.path.join(workdir, "sweep"),
            "--runs",
            runs_file,
            "-j",
            str(parallel),
            "--log-format",
            "json",
        ]
    )
    plain = 0.0
    for i, spec in enumerate(specs):
        plain += _run(
            [
                PY,
                "-m",
                "papermill",
                "-k",
                "python3",
                "--no-progress-bar",
                path,
                os.path.join(workdir, f"plain-{i}.ipynb"),
                "-p",
                "epochs",
                str(spec["epochs"]),
                "-p",
                "lr",
                str(spec["lr"]),
            ]
        )
    return [
        ("runs", str(runs)),
        (f"`executor batch -j {parallel}` wall time (s)", f"{ours:.1f}"),
        ("plain `papermill`, one run after another (s)", f"{plain:.1f}"),
        ("speed-up (plain / ours)", f"{plain / ours:.2f}x"),
    ]


def bench_writes(workdir: str, cells: int) -> list[tuple[str, str, str, str]]:
    rows = []
    nb_local = write(sleepy_notebook(cells, 0.05), os.path.join(workdir, "sleepy.ipynb"))
    with LocalGCS(buckets=["bench"]) as gcs, CountingGCSProxy(gcs.endpoint) as proxy:
        env = gcs.env()
        env["STORAGE_EMULATOR_HOST"] = proxy.url
        os.environ["STORAGE_EMULATOR_HOST"] = proxy.url
        storage.upload_file(nb_local, "gs://bench/sleepy.ipynb")
        for interval in (10, 2):
            out = f"gs://bench/out/ours-{interval}.ipynb"
            _run(
                [
                    PY,
                    "-m",
                    "executor",
                    "run",
                    "gs://bench/sleepy.ipynb",
                    out,
                    "--mirror-interval",
                    str(interval),
                    "--log-format",
                    "json",
                ],
                env,
            )
            duration = json.loads(storage.read_text(out + ".status.json"))["duration_seconds"]
            writes = proxy.uploads[f"out/ours-{interval}.ipynb"]
            bound = math.ceil(duration / interval) + 3
            rows.append(
                (
                    f"`executor run --mirror-interval {interval}`",
                    f"{duration:.1f}",
                    str(writes),
                    f"<= {bound}",
                )
            )
        start = time.perf_counter()
        _run(
            [
                PY,
                "-m",
                "papermill",
                "-k",
                "python3",
                "--no-progress-bar",
                "gs://bench/sleepy.ipynb",
                "gs://bench/out/plain.ipynb",
            ],
            env,
        )
        rows.append(
            (
                "plain `papermill` to gs://",
                f"{time.perf_counter() - start:.1f}",
                str(proxy.uploads["out/plain.ipynb"]),
                ">= 100 expected",
            )
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--cells", type=int, default=50)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "executor.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        batch_rows = bench_batch(workdir, args.runs, args.parallel)
        write_rows = bench_writes(workdir, args.cells)
    lines = [
        "# Notebook executor benchmark",
        "",
        f"Machine: {os.cpu_count()} cores. Real kernels (ipykernel python3); GCS is "
        "fake-gcs-server with writes counted at a proxy in front of it.",
        "",
        f"## {args.runs} parameterized runs: batch with {args.parallel} kernels vs sequential",
        "",
        "| measure | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in batch_rows],
        "",
        f"## Writes to the output object, {args.cells}-cell notebook (cells sleep 0.05 s)",
        "",
        "| command | run time (s) | writes to output object | bound |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in write_rows],
        "",
    ]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
