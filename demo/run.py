"""The chapter's story end to end: data -> trainer -> batch prediction -> notebook report.

Runs each job the way its image runs it (``python -m ...`` in a child process) against an
embedded GCS (fake-gcs-server, kept in ``.demo/gcs`` so a second run reuses what exists), or
against a real bucket with ``--bucket gs://my-bucket`` and Google credentials.

    python demo/run.py                      # what `make demo` runs
    python demo/run.py --bucket gs://my-bucket
    python demo/run.py --fresh              # start over

Steps: scikit-learn's digits (8x8 images) become sharded TFRecords + schema in
``<bucket>/data/``; ``trainer.task`` trains the chapter's MLP into ``<bucket>/jobs/digits-mlp/``;
``batch.predict`` scores the held-out test split as JSON lines and as TFRecords, each with a few
bad records planted on purpose, into ``<bucket>/predictions/``; ``executor run`` executes
``demo/report.ipynb`` into ``<bucket>/reports/``; the headline numbers are printed and the
report's HTML and plots copied to ``demo-output/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from jobcommon import exports, storage  # noqa: E402
from jobcommon.localgcs import LocalGCS  # noqa: E402

JOB_ID = "digits-mlp"
# Bad test records planted on purpose; the errors report must count exactly these.
BAD_JSON_LINES = [
    b'{"key": 900001, "pixels": [0.0, 0.1',  # truncated JSON
    b'{"key": 900002, "pixel": [0.5]}',  # wrong feature name
    b'{"key": 900003, "pixels": [0.5, 0.5, 0.5]}',  # wrong shape
    b'{"key": 900004, "pixels": {"b64": "@@not-base64@@"}}',  # bad b64
    b'{"key": 900005, "pixels": "sixty-four numbers"}',  # wrong type
]


@dataclass
class Step:
    name: str
    seconds: float = 0.0
    reused: bool = False
    notes: list[str] = field(default_factory=list)


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def run(cmd: list[str], env: dict[str, str], step: Step) -> None:
    say("$ " + " ".join(cmd))
    result = subprocess.run(cmd, env=env, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"[demo] step '{step.name}' failed with exit code {result.returncode}")


def make_data(base: str, workdir: str, env: dict[str, str], test_fraction: float) -> dict:
    """Split digits into train+eval (converted by trainer.convert) and a held-out test set."""
    import numpy as np
    from sklearn.datasets import load_digits

    from jobcommon.schema import Schema
    from trainer.data import serialize_example

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(42).permutation(len(x))
    n_test = int(len(x) * test_fraction)
    test, rest = order[:n_test], order[n_test:]
    npz = os.path.join(workdir, "digits-train.npz")
    np.savez(npz, x=x[rest], y=y[rest])
    run(
        [sys.executable, "-m", "trainer.convert", "--input", npz, "--output-dir",
         f"{base}/data", "--feature-name", "pixels", "--num-shards", "4", "--seed", "0"],
        env,
        Step("data"),
    )  # fmt: skip
    schema = Schema.load(f"{base}/data/schema.json")

    lines = [json.dumps({"key": int(i), "pixels": x[i].tolist()}).encode() for i in test]
    # Spread the bad records through the batches instead of bunching them at one end.
    for n, bad in enumerate(BAD_JSON_LINES):
        lines.insert((n + 1) * len(lines) // (len(BAD_JSON_LINES) + 1), bad)
    storage.write_bytes(f"{base}/instances/test.jsonl", b"\n".join(lines) + b"\n")

    import tensorflow as tf

    records = []
    for i in test:
        example = tf.train.Example.FromString(
            serialize_example({"pixels": x[i]}, schema, with_label=False)
        )
        example.features.feature["key"].int64_list.value.append(int(i))
        records.append(example.SerializeToString())
    records.insert(len(records) // 2, b"\x08\x96\x01 this is not a tf.Example")
    local = os.path.join(workdir, "test.tfrecord")
    with tf.io.TFRecordWriter(local) as writer:
        for record in records:
            writer.write(record)
    storage.upload_file(local, f"{base}/instances/test.tfrecord")
    labels = {str(int(i)): int(y[i]) for i in test}
    storage.write_text(f"{base}/data/test_labels.json", json.dumps(labels))
    return {"test": len(test), "bad_json": len(BAD_JSON_LINES), "bad_tfrecord": 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bucket", help="a real gs:// bucket (default: the embedded GCS)")
    parser.add_argument("--workdir", default=os.path.join(ROOT, ".demo"))
    parser.add_argument("--output", default=os.path.join(ROOT, "demo-output"))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--fresh", action="store_true", help="delete earlier results first")
    args = parser.parse_args(argv)

    if args.fresh:
        shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir, exist_ok=True)
    gcs = None
    if args.bucket:
        base = args.bucket.rstrip("/")
        env = dict(os.environ)
    else:
        gcs = LocalGCS(os.path.join(args.workdir, "gcs"), ["demo"], set_env=True).start()
        base = "gs://demo"
        env = gcs.env()
        say(f"embedded GCS at {gcs.endpoint} (data in {gcs.data_dir})")
    env |= {"PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2", "LOG_FORMAT": "text"}
    steps: list[Step] = []
    try:
        headline = _flow(args, base, env, steps)
    finally:
        if gcs:
            gcs.stop()
    print()
    say("steps:")
    for s in steps:
        say(f"  {s.name:<10} {s.seconds:7.1f} s{'  (reused)' if s.reused else ''}")
    say("headline: " + json.dumps(headline))
    say(f"report and plots: {args.output}/")
    return 0


def _timed(steps: list[Step], name: str) -> Step:
    step = Step(name)
    steps.append(step)
    step.seconds = -time.monotonic()
    say(f"== {name}")
    return step


def _flow(args, base: str, env: dict[str, str], steps: list[Step]) -> dict:
    py = sys.executable
    job_dir = f"{base}/jobs/{JOB_ID}"

    step = _timed(steps, "data")
    if storage.exists(f"{base}/data/test_labels.json"):
        step.reused = True
        planted = json.loads(storage.read_text(f"{base}/data/planted.json"))
    else:
        planted = make_data(base, args.workdir, env, args.test_fraction)
        storage.write_text(f"{base}/data/planted.json", json.dumps(planted))
    step.seconds += time.monotonic()

    step = _timed(steps, "train")
    before = _latest_or_none(f"{job_dir}/keras_export")
    run(
        [py, "-m", "trainer.task", "--job-dir", job_dir,
         "--train-files", f"{base}/data/train-*", "--eval-files", f"{base}/data/eval-*",
         "--epochs", str(args.epochs), "--batch-size", "32", "--seed", "7"],
        env,
        step,
    )  # fmt: skip
    export = exports.latest_export(f"{job_dir}/keras_export")
    # The trainer itself skips a job that already finished; say so in the summary.
    step.reused = export == before
    step.seconds += time.monotonic()

    counts = {}
    for fmt, src in (("JSON", "test.jsonl"), ("TF_RECORD", "test.tfrecord")):
        out = f"{base}/predictions/{fmt.lower()}"
        step = _timed(steps, f"batch {fmt}")
        stats_uri = f"{out}/prediction.errors_stats-00000-of-00001"
        if storage.exists(stats_uri) and not _newer(export, out):
            step.reused = True
        else:
            storage.delete(out, recursive=True)
            run(
                [py, "-m", "batch.predict", "--input-paths", f"{base}/instances/{src}",
                 "--data-format", fmt, "--output-path", out, "--model-dir",
                 f"{job_dir}/keras_export", "--key-field", "key", "--batch-size", "64"],
                env,
                step,
            )  # fmt: skip
            storage.write_text(f"{out}/_model", export)
        counts[fmt] = json.loads(storage.read_text(stats_uri))
        step.seconds += time.monotonic()

    step = _timed(steps, "report")
    report = f"{base}/reports/report.ipynb"
    if all(s.reused for s in steps[:-1]) and _succeeded(report):
        step.reused = True
    else:
        _run_report(py, base, job_dir, report, env, step)
    step.seconds += time.monotonic()
    return _collect(args, base, report, export, planted, counts)


def _run_report(py: str, base: str, job_dir: str, report: str, env: dict, step: Step) -> None:
    run(
        [py, "-m", "executor", "run", os.path.join(HERE, "report.ipynb"), report,
         "-p", "export_dir", f"{job_dir}/keras_export",
         "-p", "predictions_dir", f"{base}/predictions/json",
         "-p", "labels_uri", f"{base}/data/test_labels.json",
         "-p", "plots_dir", f"{base}/reports/plots"],
        env,
        step,
    )  # fmt: skip


def _collect(args, base: str, report: str, export: str, planted: dict, counts: dict) -> dict:
    os.makedirs(args.output, exist_ok=True)
    status = json.loads(storage.read_text(report + ".status.json"))
    for uri in storage.glob(f"{base}/reports/plots/*.png") + [
        f"{base}/reports/report.html",
        report + ".status.json",
        f"{export}/training.png",
        f"{export}/metrics.json",
    ]:
        if storage.exists(uri):
            storage.download_file(uri, os.path.join(args.output, uri.rsplit("/", 1)[1]))
    glued = status["glued"]
    return {
        "export": export,
        "accuracy": glued.get("accuracy"),
        "records_scored": glued.get("records_scored"),
        "records_failed_json": counts["JSON"]["errors"],
        "records_failed_tfrecord": counts["TF_RECORD"]["errors"],
        "planted_bad_json": planted["bad_json"],
        "planted_bad_tfrecord": planted["bad_tfrecord"],
        "report_state": status.get("state"),
    }


def _latest_or_none(model_dir: str) -> str | None:
    try:
        return exports.latest_export(model_dir)
    except storage.NotFoundError:
        return None


def _succeeded(report: str) -> bool:
    status = report + ".status.json"
    return storage.exists(status) and json.loads(storage.read_text(status))["state"] == "SUCCEEDED"


def _newer(export: str, out: str) -> bool:
    """True when the predictions were made by another export than the current one."""
    marker = f"{out}/_model"
    return not storage.exists(marker) or storage.read_text(marker) != export


if __name__ == "__main__":
    raise SystemExit(main())
