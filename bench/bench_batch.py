"""Throughput of batch prediction on MNIST-shaped instances, against simpler baselines.

Model: the chapter's network, Dense(512, relu) -> Dense(10, softmax) on 784 floats, with
random weights (throughput does not depend on them), exported by the trainer's exporter.
Data: ``--n`` instances (default 100,000) of 784 floats in [0, 1) with 3 decimals, written
as JSON lines and as TFRecords of tf.Example, 4 files each, on local disk.

Measured, in instances per second:
  (a)  our pipeline (``python -m batch.predict``, Beam's local runner, default settings),
       writing every output row. Two rates: *whole command* = ``--n`` / wall time of the
       command (start-up, TF import, model check included), and *steady state* =
       (``--n`` - ``--n-small``) / (run(n) - run(n_small)), where run() is the command's own
       timing of its pipeline (construction, model load, run, output naming): differencing
       with a small run of the same command takes out everything fixed, like the baselines,
       which time only their loops. The import-time noise of this shared machine (about
       +-0.5 s a run) stays out of the difference too;
  (b)  the per-element ``model.predict`` pattern of public samples (one JSON line parsed,
       one ``model.predict`` call per instance), on ``--b-subset`` instances;
  (c1) one process: stdlib ``json.loads`` + numpy + the SavedModel signature, batches of 64;
  (c2) the raw limit: the signature on pre-batched in-memory arrays, batches of 64;
  (c2x) for reference only: the tf.Example signature on pre-batched serialized records in
       memory (TF parses the examples), the ceiling for TFRecord input with this model.
Targets: (a) >= 100x (b); (a, JSON) >= 1.0x (c1); (a, TFRecord) >= 0.5x (c2).
Every case runs ``--repeats`` times, interleaved (one round of all cases, then the next),
and each ratio uses the medians from the same run. Data and outputs live on tmpfs
(``/dev/shm``) when there is one: the TFRecord job writes 430 MB of results (each row
echoes its 3 KB record as b64), and this VM's disk takes page-cache writes at about
350 MB/s with I/O-wait spikes; what is measured is the software, not the disk.

Usage::

    python bench/bench_batch.py            # 100k instances, writes bench/results/batch.md
    python bench/bench_batch.py --quick    # a smoke run (5k instances, one repeat)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import orjson  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]

from common import Row, save  # noqa: E402

BATCH = 64
FILES = 4


class PeakMemory:
    """Peak resident memory of a process tree (sum over its processes), sampled."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        import psutil

        self._proc = psutil.Process(pid)
        self._interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self._proc, *self._proc.children(recursive=True)]
                total = 0
                for p in procs:
                    with contextlib.suppress(psutil.Error):
                        total += p.memory_info().rss
                self.peak = max(self.peak, total)
            except psutil.Error:
                pass
            self._stop.wait(self._interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def build_model(workdir: str) -> tuple[object, str]:
    import keras

    from jobcommon.schema import Feature, Schema
    from trainer.export import export_model

    keras.utils.set_random_seed(0)
    inputs = keras.Input((784,), name="pixels")
    hidden = keras.layers.Dense(512, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden))
    schema = Schema(
        features=[Feature("pixels", "float32", [784])],
        label=Feature("label", "int64", []),
        num_classes=10,
    )
    export = export_model(model, schema, os.path.join(workdir, "job"))
    return model, export


def write_data(x: np.ndarray, workdir: str, tag: str = "") -> tuple[str, str]:
    import tensorflow as tf

    from batch.tfrecords import frame

    json_dir = os.path.join(workdir, "json" + tag)
    tfr_dir = os.path.join(workdir, "tfrecord" + tag)
    os.makedirs(json_dir)
    os.makedirs(tfr_dir)
    for i, part in enumerate(np.array_split(x, FILES)):
        with open(os.path.join(json_dir, f"part-{i}.jsonl"), "wb") as f:
            for row in part:
                f.write(orjson.dumps({"pixels": row}, option=orjson.OPT_SERIALIZE_NUMPY))
                f.write(b"\n")
        with open(os.path.join(tfr_dir, f"part-{i}.tfrecord"), "wb") as f:
            for row in part:
                ex = tf.train.Example(
                    features=tf.train.Features(
                        feature={
                            "pixels": tf.train.Feature(float_list=tf.train.FloatList(value=row))
                        }
                    )
                )
                f.write(frame(ex.SerializeToString()))
    return json_dir, tfr_dir


def run_pipeline(data_dir: str, fmt: str, export: str, workdir: str, n: int) -> dict:
    out = tempfile.mkdtemp(prefix=f"out-{fmt.lower()}-", dir=workdir)
    os.rmdir(out)
    pattern = os.path.join(data_dir, "*")
    cmd = [
        sys.executable, "-m", "batch.predict", "--input-paths", pattern, "--data-format", fmt,
        "--output-path", out, "--model-dir", export, "--batch-size", str(BATCH),
        "--log-format", "json",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=ROOT)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    mem = PeakMemory(proc.pid)
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - start
    peak = mem.stop()
    if proc.returncode != 0:
        raise SystemExit(f"pipeline failed:\n{stderr.decode()[-3000:]}")
    with open(os.path.join(out, "prediction.errors_stats-00000-of-00001")) as f:
        stats = json.loads(f.read())
    assert stats["predictions"] == n, stats
    shutil.rmtree(out, ignore_errors=True)
    return {
        "rate": n / seconds,
        "seconds": seconds,
        "peak": peak,
        "pipeline": _pipeline_seconds(stdout),
    }


def _pipeline_seconds(stdout: bytes) -> float:
    """The command's own timing of the pipeline run (from its summary log line)."""
    for line in stdout.decode().splitlines()[::-1]:
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if "seconds" in record:
                return float(record["seconds"])
    return float("nan")


def per_element_predict(model, json_dir: str, subset: int) -> dict:
    """The public samples' pattern: a DoFn that parses one line and calls model.predict."""
    lines = []
    with open(os.path.join(json_dir, "part-0.jsonl")) as f:
        for line in f:
            lines.append(line)
            if len(lines) >= subset:
                break
    model.predict(np.zeros((1, 784), np.float32), verbose=0)  # not counting the first trace
    start = time.perf_counter()
    for line in lines:
        x = np.asarray(json.loads(line)["pixels"], dtype=np.float32)[None, :]
        model.predict(x, verbose=0)
    seconds = time.perf_counter() - start
    return {"rate": len(lines) / seconds, "seconds": seconds}


def plain_loop(export: str, json_dir: str, n: int) -> dict:
    import tensorflow as tf

    fn = tf.saved_model.load(export).signatures["serving_default"]
    start = time.perf_counter()
    done = 0
    for name in sorted(os.listdir(json_dir)):
        batch = []
        with open(os.path.join(json_dir, name)) as f:
            for line in f:
                batch.append(json.loads(line)["pixels"])
                if len(batch) == BATCH:
                    fn(pixels=tf.constant(np.asarray(batch, dtype=np.float32)))
                    done += len(batch)
                    batch = []
        if batch:
            fn(pixels=tf.constant(np.asarray(batch, dtype=np.float32)))
            done += len(batch)
    seconds = time.perf_counter() - start
    assert done == n
    return {"rate": n / seconds, "seconds": seconds}


def raw_limit(export: str, x: np.ndarray) -> dict:
    import tensorflow as tf

    fn = tf.saved_model.load(export).signatures["serving_default"]
    batches = [tf.constant(x[i : i + BATCH]) for i in range(0, len(x), BATCH)]
    fn(pixels=batches[0])
    start = time.perf_counter()
    for b in batches:
        fn(pixels=b)
    seconds = time.perf_counter() - start
    return {"rate": len(x) / seconds, "seconds": seconds}


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    return f"{min(values):.4g} / {median(values):.4g} / {max(values):.4g}"


def raw_limit_examples(export: str, tfr_dir: str) -> dict:
    """(c2x), for reference: the tf.Example signature (parsing included) on pre-batched
    serialized records in memory: the ceiling for TFRecord input with this model."""
    import tensorflow as tf

    from batch.tfrecords import iter_records

    records = []
    for name in sorted(os.listdir(tfr_dir)):
        with open(os.path.join(tfr_dir, name), "rb") as f:
            records += list(iter_records(f, name))
    fn = tf.saved_model.load(export).signatures["serving_tf_example"]
    batches = [tf.constant(records[i : i + BATCH]) for i in range(0, len(records), BATCH)]
    fn(examples=batches[0])
    start = time.perf_counter()
    for b in batches:
        fn(examples=b)
    seconds = time.perf_counter() - start
    return {"rate": len(records) / seconds, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="instances (default %(default)s)")
    parser.add_argument(
        "--n-small", type=int, default=2_000, help="instances of the start-up run for the "
        "steady-state rate (default %(default)s)"
    )  # fmt: skip
    parser.add_argument("--b-subset", type=int, default=300, help="instances for (b)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="5k instances, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.n, args.n_small, args.b_subset, args.repeats = 5_000, 500, 50, 1

    workdir = tempfile.mkdtemp(prefix="bench-batch-", dir=_scratch())
    runs: dict[str, list[dict]] = {}
    try:
        rng = np.random.default_rng(0)
        x = np.round(rng.random((args.n, 784), dtype=np.float32), 3)
        print(f"writing {args.n} instances ...", flush=True)
        model, export = build_model(workdir)
        json_dir, tfr_dir = write_data(x, workdir)
        small = write_data(x[: args.n_small], workdir, "-small")
        sizes = {
            d: sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
            for d in (json_dir, tfr_dir)
        }
        cases = {
            "b": lambda: per_element_predict(model, json_dir, args.b_subset),
            "c2": lambda: raw_limit(export, x),
            "c2x": lambda: raw_limit_examples(export, tfr_dir),
            "c1": lambda: plain_loop(export, json_dir, args.n),
            "a_json": lambda: run_pipeline(json_dir, "JSON", export, workdir, args.n),
            "a_json_small": lambda: run_pipeline(small[0], "JSON", export, workdir, args.n_small),
            "a_tfr": lambda: run_pipeline(tfr_dir, "TF_RECORD", export, workdir, args.n),
            "a_tfr_small": lambda: run_pipeline(
                small[1], "TF_RECORD", export, workdir, args.n_small
            ),
        }
        for rep in range(args.repeats):
            for name, fn in cases.items():
                print(f"[{rep + 1}/{args.repeats}] {name} ...", flush=True)
                runs.setdefault(name, []).append(fn())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    rows, notes = report(args, runs, sizes, json_dir, tfr_dir)
    save("batch", rows, notes)


def _scratch() -> str | None:
    """tmpfs when there is one with room (data and outputs take about 2 GB), else $TMPDIR."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and shutil.disk_usage(shm).free > 4 * 2**30:
        return shm
    return None


def report(args, runs, sizes, json_dir, tfr_dir) -> tuple[list[Row], str]:
    def rates(name: str) -> list[float]:
        return [r["rate"] for r in runs[name]]

    def steady(fmt: str) -> list[float]:
        big, small = runs[f"a_{fmt}"], runs[f"a_{fmt}_small"]
        return [
            (args.n - args.n_small) / max(b["pipeline"] - s["pipeline"], 1e-9)
            for b, s in zip(big, small, strict=True)
        ]

    b, c1, c2 = median(rates("b")), median(rates("c1")), median(rates("c2"))
    c2x = median(rates("c2x"))
    a = {
        ("JSON", "whole command"): rates("a_json"),
        ("JSON", "steady state"): steady("json"),
        ("TFRecord", "whole command"): rates("a_tfr"),
        ("TFRecord", "steady state"): steady("tfr"),
    }
    rows = []
    for (fmt, how), values in a.items():
        if how == "whole command":
            rows.append(
                Row("batch", f"(a) {fmt}, {how} / (b) per-element predict", median(values), b,
                    "inst/s", target=100, spread=spread(values))
            )  # fmt: skip
    for (fmt, how), values in a.items():
        base, name, target = (c1, "(c1) json.loads loop", 1.0) if fmt == "JSON" else (
            c2, "(c2) signature on in-memory batches", 0.5
        )  # fmt: skip
        rows.append(
            Row("batch", f"(a) {fmt}, {how} / {name}", median(values), base, "inst/s",
                target=target, spread=spread(values))
        )  # fmt: skip

    tfr_steady = a[("TFRecord", "steady state")]
    rows.append(
        Row("batch", "(a) TFRecord, steady state / (c2x) tf.Example signature in memory "
            "(reference, no target)", median(tfr_steady), c2x, "inst/s",
            spread=spread(tfr_steady))
    )  # fmt: skip

    mib = 2**20
    startup = {
        fmt: median([r["seconds"] - args.n_small / s for r, s in zip(runs[f"a_{fmt}_small"],
                                                                   steady(fmt), strict=True)])
        for fmt in ("json", "tfr")
    }  # fmt: skip
    lines = [
        f"{args.n:,} MNIST-shaped instances (784 floats), Dense(512) -> Dense(10), batches of "
        f"{BATCH}; JSON {sizes[json_dir] / mib:.0f} MiB, TFRecord {sizes[tfr_dir] / mib:.0f} MiB "
        f"in {FILES} files each; {args.repeats} interleaved repeats, medians. Machine: "
        f"{os.cpu_count()} cores, Python {platform.python_version()}. Generated by "
        f"`python bench/bench_batch.py{' --quick' if args.quick else ''}`.",
        "",
        "| Case | Instances/s (median) | min / median / max | Seconds | Peak memory |",
        "|---|---:|---:|---:|---:|",
    ]

    def line(label: str, name: str, memory: bool = False) -> str:
        values = rates(name)
        secs = median([r["seconds"] for r in runs[name]])
        peak = f"{median([r['peak'] for r in runs[name]]) / mib:,.0f} MiB" if memory else "-"
        return f"| {label} | {median(values):,.0f} | {spread(values)} | {secs:.1f} | {peak} |"

    lines += [
        line("(a) pipeline, JSON lines, whole command", "a_json", memory=True),
        f"| (a) pipeline, JSON lines, steady state | {median(a[('JSON', 'steady state')]):,.0f}"
        f" | {spread(a[('JSON', 'steady state')])} | - | - |",
        line(f"(a) pipeline, JSON lines, {args.n_small:,} instances", "a_json_small", True),
        line("(a) pipeline, TFRecord, whole command", "a_tfr", memory=True),
        f"| (a) pipeline, TFRecord, steady state | {median(a[('TFRecord', 'steady state')]):,.0f}"
        f" | {spread(a[('TFRecord', 'steady state')])} | - | - |",
        line(f"(a) pipeline, TFRecord, {args.n_small:,} instances", "a_tfr_small", True),
        line(f"(b) per-element `model.predict` ({args.b_subset} instances)", "b"),
        line("(c1) one process, `json.loads` + numpy + signature", "c1"),
        line("(c2) signature on in-memory batches", "c2"),
        line("(c2x) tf.Example signature on in-memory serialized batches", "c2x"),
        "",
        f"Fixed start-up of the command (wall time of a run minus its records at the "
        f"steady-state rate): JSON {startup['json']:.1f} s, TFRecord {startup['tfr']:.1f} s "
        "(Python + TensorFlow + Beam imports, model check and load, pipeline construction, "
        "runner start). *Steady state* rows compare like with like: the baselines time only "
        "their loops, with TensorFlow imported and the model loaded. *Whole command* rows "
        "include the start-up; with it, even an infinitely fast pipeline would score at most "
        f"{args.n / startup['tfr'] / c2:.2f}x (c2) on {args.n:,} TFRecord instances. Peak "
        "memory is the resident memory summed over the command's process tree, sampled "
        "every 0.2 s.",
    ]
    return rows, "\n".join(lines)


if __name__ == "__main__":
    main()
