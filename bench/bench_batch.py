"""Batch prediction against what a user would write themselves, side by side in one run.

Model: the chapter's network, Dense(512, relu) -> Dense(10, softmax) on 784 floats, random
weights (throughput does not depend on them), exported by the trainer's exporter (a
SavedModel with ``serving_default`` and ``serving_tf_example``, plus ``model.keras``).
Data, written as JSON lines and as TFRecords of tf.Example, 4 files each:
  dense:  784 floats in [0, 1) with 3 decimals;
  sparse: MNIST-like, about 80% zeros, the rest k/255 as float32 (as ``x / 255`` gives).

Cases, each run as its own command (``python ...``), so every row has its wall time from
the interpreter's start and the peak memory of its process tree:
  (a)  ours: ``python -m batch.predict`` (Beam's local runner, default settings);
  (b)  a Beam pipeline written from Beam's RunInference docs: ReadFromText -> json.loads ->
       RunInference(KeyedModelHandler(a custom SavedModel ModelHandler, batches of 64
       through ``batch_elements_kwargs``, model loaded once by RunInference)) -> WriteToText;
  (b') the same with Beam's stock ``TFModelHandlerNumpy`` on the export's ``model.keras``;
  (c)  one process: stdlib ``json``, batches of 64, the signature, results written;
  (c') one process: ``tf.data.TFRecordDataset`` -> batches of 64 -> the tf.Example
       signature, results written;
  (c2) the raw limit: the signature on pre-batched in-memory arrays (loop timed only);
  (c2x) for reference: the tf.Example signature on pre-batched serialized records in
       memory (loop timed only).
Every case writes one results line per instance with the instance (TFRecord: its bytes as
b64) and all the model's outputs, as batch prediction does. *Whole command* = instances /
wall time. Our *steady state* = (n - n_small) / (run(n) - run(n_small)), run() being the
command's own timing of its pipeline, differencing out everything fixed; the command's
*fixed start-up* = wall(n_small) - n_small / steady. Cases run interleaved (one round of
all, then the next); each ratio uses medians of the same run. Data and outputs live on
tmpfs (``/dev/shm``) when it has room: what is measured is the software, not the disk.

Usage::

    python bench/bench_batch.py            # 50k both shapes + 500k sparse JSON
    python bench/bench_batch.py --quick    # a smoke run (2k instances, one round)
"""

from __future__ import annotations

import argparse
import contextlib
import glob
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
STARTUP_TARGET_SECONDS = 3.0
MEMORY_LIMIT_GIB = 1.5


# --- The peers, as a user would write them. Each runs in a process of its own -------------
# (``python bench/bench_batch.py --peer NAME INPUT MODEL OUTPUT``) and prints one JSON line:
# instances done and, for the in-memory limits, the seconds of the timed loop.


def peer_beam_docs(pattern: str, model_dir: str, output: str) -> dict:
    """(b) RunInference with a custom SavedModel handler, as Beam's docs show it."""
    import apache_beam as beam
    import tensorflow as tf
    from apache_beam.ml.inference.base import (
        KeyedModelHandler,
        ModelHandler,
        PredictionResult,
        RunInference,
    )

    class SavedModelHandler(ModelHandler):
        def __init__(self, path: str) -> None:
            super().__init__()
            self._path = path

        def load_model(self):
            return tf.saved_model.load(self._path)

        def batch_elements_kwargs(self):
            return {"min_batch_size": BATCH, "max_batch_size": BATCH}

        def run_inference(self, batch, model, inference_args=None):
            outputs = model.signatures["serving_default"](pixels=tf.constant(np.stack(batch)))
            outputs = {name: value.numpy() for name, value in outputs.items()}
            return [
                PredictionResult(x, {name: value[i] for name, value in outputs.items()})
                for i, x in enumerate(batch)
            ]

    def parse(line: str):
        return line, np.asarray(json.loads(line)["pixels"], dtype=np.float32)

    def to_json(keyed) -> str:
        line, result = keyed
        prediction = {name: value.tolist() for name, value in result.inference.items()}
        return f'{{"instance": {line}, "prediction": {json.dumps(prediction)}}}'

    with beam.Pipeline() as p:
        _ = (
            p
            | beam.io.ReadFromText(pattern)
            | beam.Map(parse)
            | RunInference(KeyedModelHandler(SavedModelHandler(model_dir)))
            | beam.Map(to_json)
            | beam.io.WriteToText(os.path.join(output, "prediction.results"))
        )
    return {"n": _count_lines(os.path.join(output, "prediction.results*"))}


def peer_beam_stock(pattern: str, model_dir: str, output: str) -> dict:
    """(b') Beam's own TensorFlow handler on the export's ``model.keras``."""
    import apache_beam as beam
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
    from apache_beam.ml.inference.tensorflow_inference import ModelType, TFModelHandlerNumpy

    handler = TFModelHandlerNumpy(
        os.path.join(model_dir, "model.keras"),
        model_type=ModelType.SAVED_MODEL,
        min_batch_size=BATCH,
        max_batch_size=BATCH,
    )

    def parse(line: str):
        return line, np.asarray(json.loads(line)["pixels"], dtype=np.float32)

    def to_json(keyed) -> str:
        line, result = keyed
        return f'{{"instance": {line}, "prediction": {json.dumps(result.inference.tolist())}}}'

    with beam.Pipeline() as p:
        _ = (
            p
            | beam.io.ReadFromText(pattern)
            | beam.Map(parse)
            | RunInference(KeyedModelHandler(handler))
            | beam.Map(to_json)
            | beam.io.WriteToText(os.path.join(output, "prediction.results"))
        )
    return {"n": _count_lines(os.path.join(output, "prediction.results*"))}


def peer_json_loop(pattern: str, model_dir: str, output: str) -> dict:
    """(c) one process: stdlib json, batches of 64, the signature, results written."""
    import tensorflow as tf

    predict = tf.saved_model.load(model_dir).signatures["serving_default"]
    done = 0
    os.makedirs(output)
    with open(os.path.join(output, "prediction.results"), "w") as out:

        def flush(lines: list[str], rows: list[list[float]]) -> None:
            outputs = predict(pixels=tf.constant(np.asarray(rows, dtype=np.float32)))
            outputs = {name: value.numpy().tolist() for name, value in outputs.items()}
            for i, line in enumerate(lines):
                prediction = json.dumps({name: value[i] for name, value in outputs.items()})
                out.write(f'{{"instance": {line}, "prediction": {prediction}}}\n')

        lines, rows = [], []
        for path in sorted(glob.glob(pattern)):
            with open(path) as f:
                for line in f:
                    line = line.rstrip("\n")
                    lines.append(line)
                    rows.append(json.loads(line)["pixels"])
                    if len(rows) == BATCH:
                        flush(lines, rows)
                        done += len(rows)
                        lines, rows = [], []
        if rows:
            flush(lines, rows)
            done += len(rows)
    return {"n": done}


def peer_tfdata_loop(pattern: str, model_dir: str, output: str) -> dict:
    """(c') one process: tf.data TFRecords, batches of 64, the tf.Example signature."""
    import base64

    import tensorflow as tf

    predict = tf.saved_model.load(model_dir).signatures["serving_tf_example"]
    files = sorted(glob.glob(pattern))
    dataset = (
        tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE)
        .batch(BATCH)
        .prefetch(tf.data.AUTOTUNE)
    )
    done = 0
    os.makedirs(output)
    with open(os.path.join(output, "prediction.results"), "w") as out:
        for records in dataset:
            outputs = {
                name: value.numpy().tolist() for name, value in predict(examples=records).items()
            }
            for i, record in enumerate(records.numpy()):
                prediction = json.dumps({name: value[i] for name, value in outputs.items()})
                b64 = base64.b64encode(record).decode()
                out.write(f'{{"instance": {{"b64": "{b64}"}}, "prediction": {prediction}}}\n')
            done += len(outputs["class_id"])
    return {"n": done}


def peer_in_memory(pattern: str, model_dir: str, output: str) -> dict:
    """(c2) the signature on pre-batched arrays in memory (``pattern``: a .npy file)."""
    import tensorflow as tf

    predict = tf.saved_model.load(model_dir).signatures["serving_default"]
    x = np.load(pattern)
    batches = [tf.constant(x[i : i + BATCH]) for i in range(0, len(x), BATCH)]
    predict(pixels=batches[0])
    start = time.perf_counter()
    for b in batches:
        predict(pixels=b)
    return {"n": len(x), "loop_seconds": time.perf_counter() - start}


def peer_examples_in_memory(pattern: str, model_dir: str, output: str) -> dict:
    """(c2x) the tf.Example signature on pre-batched serialized records in memory."""
    import tensorflow as tf

    predict = tf.saved_model.load(model_dir).signatures["serving_tf_example"]
    records = [r.numpy() for r in tf.data.TFRecordDataset(sorted(glob.glob(pattern)))]
    batches = [tf.constant(records[i : i + BATCH]) for i in range(0, len(records), BATCH)]
    predict(examples=batches[0])
    start = time.perf_counter()
    for b in batches:
        predict(examples=b)
    return {"n": len(records), "loop_seconds": time.perf_counter() - start}


PEERS = {
    "beam_docs": peer_beam_docs,
    "beam_stock": peer_beam_stock,
    "json_loop": peer_json_loop,
    "tfdata_loop": peer_tfdata_loop,
    "in_memory": peer_in_memory,
    "examples_in_memory": peer_examples_in_memory,
}


def _count_lines(pattern: str) -> int:
    total = 0
    for path in glob.glob(pattern):
        with open(path, "rb") as f:
            total += sum(chunk.count(b"\n") for chunk in iter(lambda f=f: f.read(2**24), b""))
    return total


# --- Measuring ------------------------------------------------------------------------------


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


def run_command(cmd: list[str]) -> dict:
    """Run ``cmd`` from the repository root: wall seconds, peak memory, exit, output."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    mem = PeakMemory(proc.pid)
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "peak": mem.stop(),
        "rc": proc.returncode,
        "stdout": stdout.decode(errors="replace"),
        "stderr": stderr.decode(errors="replace"),
    }


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def run_ours(data_dir: str, fmt: str, export: str, workdir: str, n: int) -> dict:
    out = _new_output(workdir, f"ours-{fmt.lower()}")
    cmd = [
        sys.executable, "-m", "batch.predict", "--input-paths", os.path.join(data_dir, "*"),
        "--data-format", fmt, "--output-path", out, "--model-dir", export,
        "--batch-size", str(BATCH), "--log-format", "json",
    ]  # fmt: skip
    got = run_command(cmd)
    if got["rc"] != 0:
        raise SystemExit(f"pipeline failed:\n{got['stderr'][-3000:]}")
    with open(os.path.join(out, "prediction.errors_stats-00000-of-00001")) as f:
        stats = json.loads(f.read())
    assert stats["predictions"] == n, stats
    shutil.rmtree(out, ignore_errors=True)
    return {**_public(got), "rate": n / got["seconds"], "pipeline": _pipeline_seconds(got)}


def run_peer(peer: str, data: str, export: str, workdir: str, n: int) -> dict:
    out = _new_output(workdir, peer)
    got = run_command(
        [sys.executable, os.path.abspath(__file__), "--peer", peer, data, export, out]
    )
    shutil.rmtree(out, ignore_errors=True)
    if got["rc"] != 0:
        return {**_public(got), "failed": _last_line(got["stderr"]) or f"exit {got['rc']}"}
    result = json.loads(_last_line(got["stdout"]))
    assert result["n"] == n, (peer, result, n)
    rate = n / got["seconds"]
    if "loop_seconds" in result:
        rate = n / result["loop_seconds"]
    return {**_public(got), "rate": rate}


def _public(got: dict) -> dict:
    return {"seconds": got["seconds"], "peak": got["peak"]}


def _new_output(workdir: str, tag: str) -> str:
    out = tempfile.mkdtemp(prefix=f"out-{tag}-", dir=workdir)
    os.rmdir(out)
    return out


def _pipeline_seconds(got: dict) -> float:
    """The command's own timing of the pipeline run (from its summary log line)."""
    for line in got["stdout"].splitlines()[::-1]:
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if "seconds" in record:
                return float(record["seconds"])
    return float("nan")


# --- Data -----------------------------------------------------------------------------------


def build_model(workdir: str) -> str:
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
    return export_model(model, schema, os.path.join(workdir, "job"))


def make_rows(shape: str, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if shape == "dense":
        return np.round(rng.random((n, 784), dtype=np.float32), 3)
    pixels = rng.integers(1, 256, size=(n, 784)).astype(np.float32) / 255
    pixels[rng.random((n, 784)) < 0.8] = 0.0
    return pixels


def write_data(x: np.ndarray, directory: str, tfrecords: bool = True) -> dict[str, str]:
    """JSON lines and TFRecords (4 files each) and a .npy of ``x`` below ``directory``."""
    import tensorflow as tf

    from batch.tfrecords import frame

    paths = {"json": os.path.join(directory, "json"), "npy": os.path.join(directory, "x.npy")}
    os.makedirs(paths["json"])
    np.save(paths["npy"], x)
    if tfrecords:
        paths["tfrecord"] = os.path.join(directory, "tfrecord")
        os.makedirs(paths["tfrecord"])
    for i, part in enumerate(np.array_split(x, FILES)):
        with open(os.path.join(paths["json"], f"part-{i}.jsonl"), "wb") as f:
            for row in part:
                f.write(orjson.dumps({"pixels": row}, option=orjson.OPT_SERIALIZE_NUMPY))
                f.write(b"\n")
        if not tfrecords:
            continue
        with open(os.path.join(paths["tfrecord"], f"part-{i}.tfrecord"), "wb") as f:
            for row in part:
                feature = tf.train.Feature(float_list=tf.train.FloatList(value=row))
                ex = tf.train.Example(features=tf.train.Features(feature={"pixels": feature}))
                f.write(frame(ex.SerializeToString()))
    return paths


def write_json_chunked(shape: str, n: int, directory: str, chunk: int = 25_000) -> dict:
    """JSON lines only, generated and written a chunk at a time (500k rows of 784 floats
    would take GBs in memory at once)."""
    paths = {"json": os.path.join(directory, "json")}
    os.makedirs(paths["json"])
    with contextlib.ExitStack() as stack:
        files = [
            stack.enter_context(open(os.path.join(paths["json"], f"part-{i}.jsonl"), "wb"))
            for i in range(FILES)
        ]
        for index, start in enumerate(range(0, n, chunk)):
            x = make_rows(shape, min(chunk, n - start), seed=1 + index)
            out = files[index * FILES * chunk // n % FILES]
            for row in x:
                out.write(orjson.dumps({"pixels": row}, option=orjson.OPT_SERIALIZE_NUMPY))
                out.write(b"\n")
    return paths


def _size_mib(path: str) -> float:
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(path, "*"))) / 2**20


def _scratch(need_gib: float) -> str | None:
    """tmpfs when there is one with room, else $TMPDIR."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and shutil.disk_usage(shm).free > need_gib * 2**30:
        return shm
    return None


# --- The run --------------------------------------------------------------------------------

SHAPES = ("dense", "sparse")


def plan(args, export: str, data: dict, workdir: str) -> dict[str, object]:
    """Case name -> a function running it once; names are ``<shape>/<size>/<case>``."""
    cases: dict[str, object] = {}
    n, small = args.n, args.n_small
    for shape in SHAPES:
        d, s = data[(shape, n)], data[(shape, small)]
        key = f"{shape}/{n}"
        cases.update({
            f"{key}/a_json": lambda d=d: run_ours(d["json"], "JSON", export, workdir, n),
            f"{key}/a_json_small": lambda s=s: run_ours(s["json"], "JSON", export, workdir, small),
            f"{key}/a_tfr": lambda d=d: run_ours(d["tfrecord"], "TF_RECORD", export, workdir, n),
            f"{key}/a_tfr_small": lambda s=s: run_ours(
                s["tfrecord"], "TF_RECORD", export, workdir, small
            ),
            f"{key}/b": lambda d=d: run_peer("beam_docs", _glob(d["json"]), export, workdir, n),
            f"{key}/b_stock": lambda d=d: run_peer(
                "beam_stock", _glob(d["json"]), export, workdir, n
            ),
            f"{key}/c": lambda d=d: run_peer("json_loop", _glob(d["json"]), export, workdir, n),
            f"{key}/c_tfdata": lambda d=d: run_peer(
                "tfdata_loop", _glob(d["tfrecord"]), export, workdir, n
            ),
            f"{key}/c2": lambda d=d: run_peer("in_memory", d["npy"], export, workdir, n),
            f"{key}/c2x": lambda d=d: run_peer(
                "examples_in_memory", _glob(d["tfrecord"]), export, workdir, n
            ),
        })  # fmt: skip
    return cases


def plan_big(args, export: str, data: dict, workdir: str) -> dict[str, object]:
    n = args.n_big
    d = data[("sparse", n)]
    key = f"sparse/{n}"
    return {
        f"{key}/a_json": lambda: run_ours(d["json"], "JSON", export, workdir, n),
        f"{key}/b": lambda: run_peer("beam_docs", _glob(d["json"]), export, workdir, n),
    }


def _glob(directory: str) -> str:
    return os.path.join(directory, "*")


# Cases run in the first round only: (b') fails the same way every time it is tried.
FIRST_ROUND_ONLY = ("/b_stock",)


def run_rounds(cases: dict, repeats: int, runs: dict) -> None:
    for rep in range(repeats):
        for name, fn in cases.items():
            if rep and name.endswith(FIRST_ROUND_ONLY) and any("failed" in r for r in runs[name]):
                continue
            t0 = time.perf_counter()
            runs.setdefault(name, []).append(fn())
            print(f"[{rep + 1}/{repeats}] {name}: {time.perf_counter() - t0:.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="instances (default %(default)s)")
    parser.add_argument(
        "--n-small", type=int, default=2_000, help="instances of the short run that gives the "
        "steady-state rate and the fixed start-up (default %(default)s)"
    )  # fmt: skip
    parser.add_argument(
        "--n-big", type=int, default=500_000, help="instances of the large JSON run (sparse "
        "rows, ours vs (b)); 0 to skip (default %(default)s)"
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--repeats-big", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2k instances, one round")
    parser.add_argument("--peer", nargs=4, metavar=("NAME", "INPUT", "MODEL", "OUTPUT"))
    args = parser.parse_args()
    if args.peer:
        name, pattern, model, output = args.peer
        print(json.dumps(PEERS[name](pattern, model, output)), flush=True)
        return
    if args.quick:
        args.n, args.n_small, args.n_big, args.repeats, args.repeats_big = 2_000, 500, 0, 1, 1

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    need = 2 + 12 * args.n_big / 1e6  # GiB: data and outputs of every case, with room
    workdir = tempfile.mkdtemp(prefix="bench-batch-", dir=_scratch(need))
    runs: dict[str, list[dict]] = {}
    data: dict[tuple[str, int], dict[str, str]] = {}
    try:
        print(f"model and data ({args.n:,} and {args.n_small:,} per shape) ...", flush=True)
        export = build_model(workdir)
        for shape in SHAPES:
            x = make_rows(shape, args.n)
            for n in (args.n, args.n_small):
                data[(shape, n)] = write_data(x[:n], os.path.join(workdir, f"{shape}-{n}"))
        sizes = {key: _size_mib(paths["json"]) for key, paths in data.items()}
        sizes |= {(*key, "tfr"): _size_mib(p["tfrecord"]) for key, p in data.items()}
        run_rounds(plan(args, export, data, workdir), args.repeats, runs)
        for key in list(data):  # room for the large run
            shutil.rmtree(os.path.dirname(data[key]["json"]), ignore_errors=True)
        if args.n_big:
            print(f"data ({args.n_big:,} sparse rows, JSON) ...", flush=True)
            data[("sparse", args.n_big)] = write_json_chunked(
                "sparse", args.n_big, os.path.join(workdir, f"sparse-{args.n_big}")
            )
            sizes[("sparse", args.n_big)] = _size_mib(data[("sparse", args.n_big)]["json"])
            run_rounds(plan_big(args, export, data, workdir), args.repeats_big, runs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    with open(os.path.join(HERE, "results", "batch-runs.json"), "w") as f:
        json.dump({"started": started, "args": vars(args), "runs": runs}, f, indent=1)
    rows, notes = report(args, runs, sizes, started)
    save("batch", rows, notes)


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    return f"{min(values):.4g} / {median(values):.4g} / {max(values):.4g}"


def report(args, runs: dict, sizes: dict, started: str) -> tuple[list[Row], str]:
    def ok(name: str) -> bool:
        return name in runs and not any("failed" in r for r in runs[name])

    def rates(name: str) -> list[float]:
        return [r["rate"] for r in runs[name]]

    def steady(key: str, fmt: str) -> list[float]:
        big, small = runs[f"{key}/a_{fmt}"], runs[f"{key}/a_{fmt}_small"]
        return [
            (args.n - args.n_small) / max(b["pipeline"] - s["pipeline"], 1e-9)
            for b, s in zip(big, small, strict=True)
        ]

    def fixed(key: str, fmt: str) -> list[float]:
        small = runs[f"{key}/a_{fmt}_small"]
        return [
            r["seconds"] - args.n_small / s for r, s in zip(small, steady(key, fmt), strict=True)
        ]

    rows: list[Row] = []

    def ratio_row(measure: str, ours: list[float], base: str, target: float | None) -> None:
        if not ok(base):
            return
        rows.append(Row("batch", measure, median(ours), median(rates(base)), "inst/s",
                        target=target, spread=spread(ours)))  # fmt: skip

    fixed_all: dict[str, list[float]] = {}
    for shape in SHAPES:
        key = f"{shape}/{args.n}"
        n = f"{args.n // 1000}k {shape}"
        ratio_row(f"{n}: (a) JSON whole command / (b) Beam-docs RunInference pipeline",
                  rates(f"{key}/a_json"), f"{key}/b", 2.0)  # fmt: skip
        ratio_row(f"{n}: (a) JSON whole command / (c) one-process json loop",
                  rates(f"{key}/a_json"), f"{key}/c", 1.5)  # fmt: skip
        ratio_row(f"{n}: (a) TFRecord whole command / (c') tf.data loop",
                  rates(f"{key}/a_tfr"), f"{key}/c_tfdata", 1.5)  # fmt: skip
        ratio_row(f"{n}: (a) TFRecord steady state / (c2) signature on in-memory batches",
                  steady(key, "tfr"), f"{key}/c2", 0.8)  # fmt: skip
        ratio_row(f"{n}: (a) TFRecord steady state / (c2x) tf.Example signature in memory "
                  "(reference)", steady(key, "tfr"), f"{key}/c2x", None)  # fmt: skip
        for fmt, label in (("json", "JSON"), ("tfr", "TFRecord")):
            fixed_all[f"{shape} {label}"] = fixed(key, fmt)
    if args.n_big:
        key = f"sparse/{args.n_big}"
        ratio_row(f"{args.n_big // 1000}k sparse: (a) JSON whole command / (b) Beam-docs "
                  "RunInference pipeline", rates(f"{key}/a_json"), f"{key}/b", 2.5)  # fmt: skip
    for label, values in fixed_all.items():
        rows.append(Row("batch", f"fixed start-up of the command, {label} (s)", median(values),
                        0, "s", target=STARTUP_TARGET_SECONDS, lower_is_better=True,
                        target_on="value", spread=spread(values)))  # fmt: skip
    peaks = {name: max(r["peak"] for r in results) for name, results in runs.items()}
    worst = max(peaks, key=peaks.get)
    rows.append(Row("batch", f"peak memory, largest of all rows ({worst})", peaks[worst] / 2**30,
                    0, "GiB", target=MEMORY_LIMIT_GIB, lower_is_better=True,
                    target_on="value"))  # fmt: skip

    return rows, notes_text(args, runs, sizes, started, steady, fixed_all, ok)


LABELS = {
    "a_json": "(a) ours, JSON lines, whole command",
    "a_json_small": "(a) ours, JSON lines, {small} instances",
    "a_tfr": "(a) ours, TFRecord, whole command",
    "a_tfr_small": "(a) ours, TFRecord, {small} instances",
    "b": "(b) Beam-docs pipeline: RunInference, custom SavedModel handler",
    "b_stock": "(b') Beam's stock TFModelHandlerNumpy on model.keras",
    "c": "(c) one process: stdlib json, batches of 64, signature",
    "c_tfdata": "(c') one process: tf.data TFRecords, batches of 64, signature",
    "c2": "(c2) signature on in-memory batches (loop only)",
    "c2x": "(c2x) tf.Example signature on in-memory serialized batches (loop only)",
}


def notes_text(args, runs, sizes, started, steady, fixed_all, ok) -> str:
    mib, gib = 2**20, 2**30
    lines = [
        f"Run started {started}, {args.repeats} interleaved rounds at {args.n:,} instances"
        + (f", then {args.repeats_big} at {args.n_big:,}" if args.n_big else "")
        + f"; Dense(512) -> Dense(10) on 784 floats, batches of {BATCH}, {FILES} files per "
        f"input. Machine: {os.cpu_count()} cores shared with other work (load average at the "
        f"end {os.getloadavg()[0]:.1f}), Python {platform.python_version()}. Generated by "
        f"`python bench/bench_batch.py{' --quick' if args.quick else ''}`.",
        "",
        "Input sizes: "
        + ", ".join(
            f"{k[0]} {k[1]:,} {'TFRecord' if len(k) > 2 else 'JSON'} {v:,.0f} MiB"
            for k, v in sorted(sizes.items(), key=str)
        )
        + ".",
        "",
        "| Shape / instances | Case | Instances/s (median) | min / median / max | Seconds "
        "(median) | Peak memory (max) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, results in runs.items():
        shape, size, case = name.split("/")
        label = LABELS[case].format(small=f"{args.n_small:,}")
        secs = median([r["seconds"] for r in results])
        peak = max(r["peak"] for r in results) / mib
        if any("failed" in r for r in results):
            reason = next(r["failed"] for r in results if "failed" in r)
            lines.append(f"| {shape} {int(size):,} | {label} | not runnable: `{reason}` | - "
                         f"| {secs:.1f} (to the failure) | {peak:,.0f} MiB |")  # fmt: skip
            continue
        values = [r["rate"] for r in results]
        lines.append(f"| {shape} {int(size):,} | {label} | {median(values):,.0f} | "
                     f"{spread(values)} | {secs:.1f} | {peak:,.0f} MiB |")  # fmt: skip
        if case in ("a_json", "a_tfr") and int(size) == args.n:
            fmt = case[2:]
            values = steady(f"{shape}/{size}", fmt)
            lines.append(f"| {shape} {int(size):,} | (a) ours, "
                         f"{'JSON lines' if fmt == 'json' else 'TFRecord'}, steady state | "
                         f"{median(values):,.0f} | {spread(values)} | - | - |")  # fmt: skip
    lines += [
        "",
        "Fixed start-up of our command (wall time of the short run minus its instances at the "
        "steady rate), median: "
        + ", ".join(f"{k} {median(v):.1f} s" for k, v in fixed_all.items())
        + f" (target <= {STARTUP_TARGET_SECONDS:g} s). Peak memory is the resident memory "
        "summed over each command's process tree, sampled every 0.2 s; the largest was "
        f"{max(max(r['peak'] for r in rs) for rs in runs.values()) / gib:.2f} GiB "
        f"(limit {MEMORY_LIMIT_GIB} GiB).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
