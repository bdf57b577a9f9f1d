"""Training throughput: TFRecords staged from GCS vs. the same model fed from numpy in memory.

The in-memory run is the limit (no I/O, no parsing); the target is that the trainer's input
pipeline (shards in fake-gcs-server -> staged to local disk -> tf.data) reaches >= 0.9 of
it. Both train the default MLP (Dense(512, relu) -> softmax) on scikit-learn's digits,
copied ``--copies`` times so an epoch is long enough to time. Throughput is measured over
the epochs after the first (the first one traces the model and fills the cache); the
staging time (download + schema check) is reported separately.

Also measured: the time from the start of ``python -m trainer.task`` to the log line of its
first finished epoch, on digits (1,797 rows) staged from fake-gcs-server (target <= 3 s): what
a job pays before it trains at all (imports, data staging, model build, first trace).

Run::

    python bench/bench_trainer.py --repeats 3 --epochs 6 --copies 10
    python bench/bench_trainer.py --quick        # a smoke run

Prints a Markdown table and saves it through ``bench/common.py``
(``bench/results/trainer.md`` and ``.json``, gathered by ``bench/run.py``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]

from common import Row, save  # noqa: E402

from jobcommon.localgcs import LocalGCS  # noqa: E402


class EpochTimer:
    """Seconds per epoch, as a Keras callback (built lazily: keras imports late)."""

    def __new__(cls):
        import keras

        class _Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.seconds: list[float] = []

            def on_epoch_begin(self, epoch, logs=None):
                self._t0 = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds.append(time.perf_counter() - self._t0)

        return _Timer()


def _data(copies: int):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.tile((d.data / 16.0).astype(np.float32), (copies, 1))
    y = np.tile(d.target.astype(np.int64), copies)
    return x, y


def _model(schema, seed: int):
    import keras

    from trainer import models

    keras.utils.set_random_seed(seed)
    return models.build(models.HParams(), schema)


def _throughput(n: int, timer) -> float:
    timed = timer.seconds[1:] or timer.seconds
    return n * len(timed) / sum(timed)


def _pipeline(bucket: str, schema, args, seed: int) -> tuple[float, float]:
    """(examples/s, staging seconds) of the trainer's input path: GCS -> local -> tf.data."""
    from trainer.data import make_dataset

    t0 = time.perf_counter()
    staging = tempfile.mkdtemp(prefix="bench-stage-")
    ds, stats = make_dataset(
        f"{bucket}/data/train-*",
        schema,
        args.batch_size,
        training=True,
        staging_dir=staging,
        seed=seed,
    )
    stage_seconds = time.perf_counter() - t0
    model = _model(schema, seed)
    timer = EpochTimer()
    model.fit(ds, epochs=args.epochs, verbose=0, shuffle=False, callbacks=[timer])
    return _throughput(stats.records, timer), stage_seconds


def _memory(x, y, schema, args, seed: int) -> float:
    model = _model(schema, seed)
    timer = EpochTimer()
    model.fit(
        {"pixels": x},
        y,
        batch_size=args.batch_size,
        epochs=args.epochs,
        verbose=0,
        shuffle=True,
        callbacks=[timer],
    )
    return _throughput(len(y), timer)


def run_once(bucket: str, x, y, schema, args, seed: int) -> dict:
    # Alternate which side runs first: on a shared machine load drifts within a repeat.
    if seed % 2:
        memory = _memory(x, y, schema, args, seed)
        pipeline, stage_seconds = _pipeline(bucket, schema, args, seed)
    else:
        pipeline, stage_seconds = _pipeline(bucket, schema, args, seed)
        memory = _memory(x, y, schema, args, seed)
    return {"pipeline": pipeline, "memory": memory, "stage_seconds": stage_seconds}


FIRST_EPOCH_TARGET_SECONDS = 3.0


def first_epoch_seconds(train_files: str, workdir: str, run: int) -> float:
    """Seconds from starting ``python -m trainer.task`` to its first epoch's log line."""
    import json
    import subprocess

    cmd = [
        sys.executable, "-m", "trainer.task", "--job-dir", os.path.join(workdir, f"job-{run}"),
        "--train-files", train_files, "--epochs", "2", "--log-format", "json",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=REPO)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    seconds = None
    for line in proc.stdout:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if seconds is None and isinstance(record, dict) and record.get("epoch") == 1:
            seconds = time.perf_counter() - start
    if proc.wait() != 0 or seconds is None:
        raise SystemExit(f"trainer run failed (exit {proc.returncode}): {' '.join(cmd)}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 copy, 2 repeats, 3 epochs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--copies", type=int, default=10, help="digits copies (1797 rows each)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--shards", type=int, default=8)
    args = parser.parse_args(argv)
    if args.quick:
        args.copies, args.repeats, args.epochs = 1, 2, 3

    from trainer.data import write_dataset

    x, y = _data(args.copies)
    results = []
    with LocalGCS(buckets=["bench"], set_env=True):
        info = write_dataset(
            {"pixels": x}, y, "gs://bench/data", num_shards=args.shards, eval_fraction=0.0
        )
        for r in range(args.repeats):
            results.append(run_once("gs://bench", x, y, info.schema, args, seed=r))
            print(f"repeat {r + 1}/{args.repeats}: {results[-1]}", file=sys.stderr)
        x1, y1 = _data(1)
        write_dataset({"pixels": x1}, y1, "gs://bench/digits", num_shards=1, eval_fraction=0.0)
        workdir = tempfile.mkdtemp(prefix="bench-first-epoch-")
        try:
            first = [
                first_epoch_seconds("gs://bench/digits/train-*", workdir, r)
                for r in range(args.repeats)
            ]
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        print(f"first epoch after: {first}", file=sys.stderr)

    def row(name: str, values: list[float], unit: str = "") -> str:
        return (
            f"| {name} | {min(values):,.0f}{unit} | {statistics.median(values):,.0f}{unit} "
            f"| {max(values):,.0f}{unit} |"
        )

    pipeline = [r["pipeline"] for r in results]
    memory = [r["memory"] for r in results]
    ratios = [p / m for p, m in zip(pipeline, memory, strict=True)]
    stage = [r["stage_seconds"] for r in results]
    ratio = statistics.median(ratios)
    lines = [
        "Trainer input throughput, in detail:",
        "",
        f"Default MLP on digits x{args.copies} ({len(y):,} rows, {args.shards} TFRecord shards), "
        f"batch {args.batch_size}, {args.epochs} epochs (first not timed), "
        f"{args.repeats} repeats; {os.cpu_count()} CPUs (load average at the end "
        f"{os.getloadavg()[0]:.1f}), Python {platform.python_version()}.",
        "",
        "| examples/s | min | median | max |",
        "|---|---:|---:|---:|",
        row("TFRecords staged from fake-gcs-server -> tf.data", pipeline),
        row("numpy arrays in memory (the limit)", memory),
        f"| ratio pipeline / memory | {min(ratios):.2f} | {statistics.median(ratios):.2f} "
        f"| {max(ratios):.2f} |",
        f"| staging + schema check (s) | {min(stage):.2f} | {statistics.median(stage):.2f} "
        f"| {max(stage):.2f} |",
        "",
        f"Median of the per-repeat ratios: **{ratio:.2f}** (target >= 0.90: "
        f"{'met' if ratio >= 0.9 else 'NOT met'}).",
        "",
    ]
    rows = [
        Row(
            benchmark="trainer",
            measure="training examples/s: TFRecords staged from GCS vs numpy in memory",
            value=statistics.median(pipeline),
            baseline=statistics.median(memory),
            unit="ex/s",
            target=0.9,
            spread=f"{min(pipeline):,.0f} / {statistics.median(pipeline):,.0f} / "
            f"{max(pipeline):,.0f}",
        )
    ]
    rows.append(
        Row(
            benchmark="trainer",
            measure="`python -m trainer.task` on digits (gs://, fake-gcs-server): command start "
            "to the first epoch's log line (s)",
            value=statistics.median(first),
            baseline=0,
            unit="s",
            target=FIRST_EPOCH_TARGET_SECONDS,
            lower_is_better=True,
            target_on="value",
            spread=f"{min(first):.3g} / {statistics.median(first):.3g} / {max(first):.3g}",
        )
    )
    lines += [
        f"Command start to the first epoch's log line (digits, 1,797 rows, batch 128, "
        f"{args.repeats} runs): {min(first):.2f} / {statistics.median(first):.2f} / "
        f"{max(first):.2f} s (target <= {FIRST_EPOCH_TARGET_SECONDS:g} s).",
        "",
    ]
    save("trainer", rows, notes="\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
