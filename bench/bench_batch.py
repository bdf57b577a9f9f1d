"""Throughput of batch prediction on MNIST-shaped instances, against simpler baselines.

Model: the chapter's network, Dense(512, relu) -> Dense(10, softmax) on 784 floats, with
random weights (throughput does not depend on them), exported by the trainer's exporter.
Data: ``--n`` instances (default 100,000) of 784 floats in [0, 1) with 3 decimals, written
as JSON lines and as TFRecords of tf.Example, 4 files each, on local disk.

Measured, in instances per second:
  (a)  our pipeline (``python -m batch.predict``, Beam's local runner, default settings),
       wall time of the whole command including start-up and writing every output;
  (b)  the per-element ``model.predict`` pattern of public samples (one JSON line parsed,
       one ``model.predict`` call per instance), on ``--b-subset`` instances;
  (c1) one process: stdlib ``json.loads`` + numpy + the SavedModel signature, batches of 64;
  (c2) the raw limit: the signature on pre-batched in-memory arrays, batches of 64.
Targets: (a) >= 100x (b); (a, JSON) >= 1.0x (c1); (a, TFRecord) >= 0.5x (c2).

Usage::

    python bench/bench_batch.py            # 100k instances, writes bench/results/batch.md
    python bench/bench_batch.py --n 5000   # a quick run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import orjson  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

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


def write_data(x: np.ndarray, workdir: str) -> tuple[str, str]:
    import tensorflow as tf

    from batch.tfrecords import frame

    json_dir, tfr_dir = os.path.join(workdir, "json"), os.path.join(workdir, "tfrecord")
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
    out = os.path.join(workdir, f"out-{fmt.lower()}")
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
    return {"rate": n / seconds, "seconds": seconds, "peak": peak}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="instances (default %(default)s)")
    parser.add_argument("--b-subset", type=int, default=300, help="instances for (b)")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "batch.md"))
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="bench-batch-")
    try:
        rng = np.random.default_rng(0)
        x = np.round(rng.random((args.n, 784), dtype=np.float32), 3)
        print(f"writing {args.n} instances ...", flush=True)
        model, export = build_model(workdir)
        json_dir, tfr_dir = write_data(x, workdir)
        sizes = {
            d: sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
            for d in (json_dir, tfr_dir)
        }
        results = {}
        print("(b) per-element model.predict ...", flush=True)
        results["b"] = per_element_predict(model, json_dir, args.b_subset)
        print("(c2) raw limit ...", flush=True)
        results["c2"] = raw_limit(export, x)
        print("(c1) plain loop ...", flush=True)
        results["c1"] = plain_loop(export, json_dir, args.n)
        print("(a) pipeline, JSON ...", flush=True)
        results["a_json"] = run_pipeline(json_dir, "JSON", export, workdir, args.n)
        print("(a) pipeline, TF_RECORD ...", flush=True)
        results["a_tfr"] = run_pipeline(tfr_dir, "TF_RECORD", export, workdir, args.n)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    write_report(args, results, sizes, json_dir, tfr_dir)


def write_report(args, r, sizes, json_dir, tfr_dir) -> None:
    b, c1, c2 = r["b"]["rate"], r["c1"]["rate"], r["c2"]["rate"]
    aj, at = r["a_json"]["rate"], r["a_tfr"]["rate"]

    def ok(value: float, target: float) -> str:
        return f"{value:.2f}x (target >= {target:g}x: {'met' if value >= target else 'MISSED'})"

    mib = 2**20
    lines = [
        "# Batch prediction throughput",
        "",
        f"{args.n:,} MNIST-shaped instances (784 floats), Dense(512) -> Dense(10), batches of "
        f"{BATCH}; JSON {sizes[json_dir] / mib:.0f} MiB, TFRecord {sizes[tfr_dir] / mib:.0f} MiB "
        f"in {FILES} files each. Machine: {os.cpu_count()} cores, Python "
        f"{platform.python_version()}. Generated by `python bench/bench_batch.py --n {args.n}`.",
        "",
        "| Case | Instances/s | Seconds | Peak memory |",
        "|---|---:|---:|---:|",
        f"| (a) pipeline, JSON lines (local runner) | {aj:,.0f} | "
        f"{r['a_json']['seconds']:.1f} | {r['a_json']['peak'] / mib:,.0f} MiB |",
        f"| (a) pipeline, TFRecord | {at:,.0f} | {r['a_tfr']['seconds']:.1f} | "
        f"{r['a_tfr']['peak'] / mib:,.0f} MiB |",
        f"| (b) per-element `model.predict` ({args.b_subset} instances) | {b:,.1f} | "
        f"{r['b']['seconds']:.1f} | - |",
        f"| (c1) one process, `json.loads` + numpy + signature | {c1:,.0f} | "
        f"{r['c1']['seconds']:.1f} | - |",
        f"| (c2) signature on in-memory batches | {c2:,.0f} | {r['c2']['seconds']:.1f} | - |",
        "",
        "| Target | Measured |",
        "|---|---|",
        f"| (a, JSON) / (b) | {ok(aj / b, 100)} |",
        f"| (a, TFRecord) / (b) | {ok(at / b, 100)} |",
        f"| (a, JSON) / (c1) | {ok(aj / c1, 1.0)} |",
        f"| (a, TFRecord) / (c2) | {ok(at / c2, 0.5)} |",
        "",
        "(a) is the wall time of the whole command: start-up, model check, reading, every "
        "output row written (results echo each instance), and the error statistics. Peak "
        "memory is the sum over the command's process tree.",
        "",
    ]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
