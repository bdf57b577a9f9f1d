"""A sweep, ``python -m executor batch`` (alias ``sweep``): one notebook, many parameter
sets, N kernels at once.

Parameter sets come from a YAML/JSON list of mappings, a grid
(``{"grid": {"lr": [0.1, 0.01], "epochs": [5, 10]}}`` = every combination), a mapping with
``runs: [...]``, or a CSV with one column per parameter. Each run is an ordinary
``executor run`` into ``OUTPUT_PREFIX/<run name>/output.ipynb``; afterwards
``metrics.csv``, ``metrics.md`` (one row per run: status and glued values) and, when some
glued values are numbers, ``summary.png`` are written in OUTPUT_PREFIX. With
``--backend vertex`` each run is a Vertex AI CustomJob instead (:mod:`executor.vertex`); the
table and plot are gathered the same way, from the runs' status files.

Example::

    python -m executor batch gs://bkt/train.ipynb gs://bkt/sweep --runs grid.yaml -j 2
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import itertools
import json
import logging
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from executor import exitcodes, runner
from executor import params as paramlib
from executor.options import PARAMETER_SOURCES, RunOptions
from jobcommon import storage
from jobcommon.errors import UsageError

log = logging.getLogger(__name__)

KERNEL_MEMORY_BYTES = 2 * 2**30  # what one kernel with a small model typically holds


def default_parallelism() -> int:
    """Kernels the machine can hold: one per core, and no more than memory / 2 GiB."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError):
        memory = KERNEL_MEMORY_BYTES * (cores or 1)
    return max(1, min(cores or 1, memory // KERNEL_MEMORY_BYTES))


def load_runs(path: str) -> list[dict[str, paramlib.Given]]:
    """Parameter sets from a list, a grid or a CSV file (local or gs://)."""
    text = storage.read_text(path)
    if path.lower().endswith(".csv"):
        rows = list(csv.DictReader(io.StringIO(text)))
        if not rows:
            raise UsageError(f"--runs {path}: the CSV has no rows under its header")
        return [
            {k.strip(): paramlib.Given(paramlib.convert_cli_value(v), raw=v, source=path)
             for k, v in row.items() if k and v is not None and v != ""}
            for row in rows
        ]  # fmt: skip
    if path.lower().endswith(".json"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"--runs {path}: not valid JSON ({exc})") from exc
    else:
        data = paramlib.safe_yaml(text, f"--runs {path}")
    if isinstance(data, dict) and "grid" in data:
        grid = data["grid"]
        if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
            raise UsageError(f"--runs {path}: 'grid' must map names to non-empty lists")
        names = list(grid)
        data = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())]
    elif isinstance(data, dict) and "runs" in data:
        data = data["runs"]
    if not isinstance(data, list) or not data or not all(isinstance(r, dict) for r in data):
        raise UsageError(
            f"--runs {path}: expected a list of name: value mappings, {{grid: ...}} or a CSV"
        )
    return [{k: paramlib.Given(v, source=path) for k, v in run.items()} for run in data]


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def metrics_rows(results: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """One row per run: name, state, duration, parameters, then glued scalar values."""
    param_cols: list[str] = []
    glued_cols: list[str] = []
    for r in results:
        param_cols += [k for k in r["parameters"] if k not in param_cols]
        glued_cols += [
            k for k, v in r["glued"].items()
            if k not in glued_cols and not isinstance(v, dict | list)
        ]  # fmt: skip
    columns = [
        "run",
        "state",
        "exit_code",
        "duration_seconds",
        *param_cols,
        *[f"glued.{c}" for c in glued_cols],
        "output",
    ]
    rows = []
    for r in results:
        row = {
            "run": r["run_id"],
            "state": r["state"],
            "exit_code": r["exit_code"],
            "duration_seconds": r["duration_seconds"],
            "output": r["output"],
        }
        row |= {c: r["parameters"].get(c, "") for c in param_cols}
        row |= {f"glued.{c}": r["glued"].get(c, "") for c in glued_cols}
        rows.append(row)
    return columns, rows


def to_csv(columns: list[str], rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def to_markdown(columns: list[str], rows: list[dict[str, Any]]) -> str:
    def cell(v: Any) -> str:
        return (f"{v:.4g}" if isinstance(v, float) else str(v)).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def summary_plot(rows: list[dict[str, Any]], path: str, param_cols: list[str] = ()) -> bool:
    """Bar charts of every numeric glued value per run; runs that did not succeed are
    marked with a red x. Tick labels show the parameters that differ between runs."""
    metrics = sorted(
        {c for r in rows for c, v in r.items() if c.startswith("glued.") and _numeric(v)}
    )
    if not metrics:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    varying = [c for c in param_cols if len({str(r.get(c)) for r in rows}) > 1]
    labels = ["\n".join([r["run"], *(f"{c}={r.get(c)}" for c in varying)]) for r in rows]
    fig, axes = plt.subplots(
        len(metrics), 1, figsize=(max(6, 0.9 * len(rows)), 3.2 * len(metrics)), squeeze=False
    )
    positions = list(range(len(rows)))
    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        ok = [i for i, r in enumerate(rows) if _numeric(r.get(metric))]
        bad = [i for i, r in enumerate(rows) if r["state"] != exitcodes.SUCCEEDED]
        ax.bar(ok, [rows[i][metric] for i in ok], color="tab:blue")
        if bad:
            ax.scatter(
                bad,
                [0] * len(bad),
                marker="x",
                s=80,
                color="tab:red",
                zorder=3,
                label="not succeeded",
            )
            ax.legend(loc="upper left")
        ax.set_title(metric.removeprefix("glued."))
        ax.set_xticks(positions, labels, fontsize=8)
    fig.suptitle(f"{len(rows)} runs")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(args: argparse.Namespace) -> int:

    vertex_backend = getattr(args, "backend", "local") == "vertex"
    if vertex_backend:
        from executor import vertex

        vertex.check_args(args)  # before anything is read
    runs = load_runs(args.runs)
    options = RunOptions.from_args(args)
    # The common -p/-f/... options apply to every run; a run's own values win over them.
    common = runner.collect_parameters(options)
    sources = {name: () for name, _ in PARAMETER_SOURCES}
    prefix = args.output_prefix.rstrip("/")
    width = max(3, len(str(len(runs) - 1)))
    # Check every run before starting any: a typo in run 7 should not cost runs 1-6.
    requests = []
    for i, given in enumerate(runs):
        run_name = f"run-{i:0{width}d}"
        requests.append(
            runner.prepare(
                args.input, storage.join(prefix, run_name, "output.ipynb"),
                dataclasses.replace(options, run_id=run_name, **sources),
                given={**common, **given}, log_format=args.log_format, log_level=args.log_level,
            )
        )  # fmt: skip
    if vertex_backend:
        log.info("batch: %d runs of %s as Vertex AI CustomJobs", len(requests), args.input)
        gathered = vertex.run_backend(args, requests)
        if gathered is None:  # --dry-run: the requests are printed, nothing ran
            return exitcodes.EXIT_OK
        return write_summary(prefix, gathered)
    return write_summary(prefix, run_locally(requests, args.parallel))


def run_locally(requests: list[runner.RunRequest], parallel: int | None) -> list[dict[str, Any]]:
    """Execute the prepared runs here, ``parallel`` kernels at once; their status records."""
    from tqdm import tqdm

    parallel = parallel or default_parallelism()
    log.info("batch: %d runs of %s, %d at a time", len(requests), requests[0].input, parallel)
    results: list[dict[str, Any]] = []
    bar = tqdm(total=len(requests), unit="run", disable=not sys.stderr.isatty())
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        futures = [pool.submit(runner.execute, req) for req in requests]
        for future in as_completed(futures):
            result = future.result()
            results.append(result.status)
            bar.set_postfix_str(f"{result.status['run_id']} {result.state}")
            bar.update(1)
    bar.close()
    return results


def write_summary(prefix: str, results: list[dict[str, Any]]) -> int:
    """metrics.csv, metrics.md and summary.png in ``prefix`` from the runs' status records,
    whichever backend ran them; exit code 0 when every run succeeded, else 10."""
    results = sorted(results, key=lambda r: r["run_id"])
    columns, rows = metrics_rows(results)
    param_names = {k for r in results for k in r["parameters"]}
    storage.write_text(storage.join(prefix, "metrics.csv"), to_csv(columns, rows))
    storage.write_text(storage.join(prefix, "metrics.md"), to_markdown(columns, rows))
    with tempfile.TemporaryDirectory() as tmp:
        png = os.path.join(tmp, "summary.png")
        if summary_plot(rows, png, [c for c in columns if c in param_names]):
            storage.upload_file(png, storage.join(prefix, "summary.png"))
    failed = [r["run_id"] for r in results if r["state"] != exitcodes.SUCCEEDED]
    log.info(
        "batch done: %d succeeded, %d not: %s", len(results) - len(failed), len(failed), failed
    )
    return exitcodes.EXIT_FAILED if failed else exitcodes.EXIT_OK
