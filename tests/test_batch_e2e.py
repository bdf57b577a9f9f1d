"""End to end: a really trained Keras 3 model, exported by the trainer, scored by the batch
job on Beam's local runner with inputs and outputs in the GCS emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from batch import predict
from jobcommon import storage
from tests.batch_helpers import (
    N,
    example_bytes,
    json_line,
    local_args,
    read_rows,
    read_stats,
    repo_root,
    trained_fixture,  # noqa: F401  (the session's trained model)
    write_lines,
    write_tfrecords,
)


def check_predictions(rows: list[dict], trained: dict, key_of) -> None:
    """Every input gets exactly one result equal to the in-memory model's output."""
    assert len(rows) == N
    seen = set()
    for row in rows:
        i = key_of(row)
        seen.add(i)
        probs = np.asarray(row["prediction"]["probabilities"], dtype=np.float32)
        np.testing.assert_allclose(probs, trained["expected"][i], rtol=1e-4, atol=1e-5)
        assert row["prediction"]["class_id"] == int(np.argmax(trained["expected"][i]))
    assert seen == set(range(N))


def _index_by_pixels(trained):
    lookup = {tuple(np.round(r, 5)): i for i, r in enumerate(trained["x"])}
    return lambda row: lookup[tuple(np.round(np.asarray(row["instance"]["pixels"]), 5))]


def test_json_through_the_cli_on_two_worker_processes(trained, bucket, gcs_env):
    """The real command on two SDK worker processes (a model each), gs:// everywhere."""
    lines = [json_line({"pixels": r.tolist()}) for r in trained["x"]]
    write_lines(f"{bucket}/in/part-0.jsonl", lines[: N // 2])
    write_lines(f"{bucket}/in/part-1.jsonl", lines[N // 2 :])
    env = gcs_env | {"PYTHONPATH": repo_root()}
    cmd = [
        sys.executable, "-m", "batch.predict",
        "--input-paths", f"{bucket}/in/*.jsonl",
        "--data-format", "JSON",
        "--output-path", f"{bucket}/out",
        "--model-dir", trained["model_dir"],
        "--batch-size", "32",
        "--direct_num_workers=2", "--direct_running_mode=multi_processing",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=repo_root(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    summary = [r for r in records if "records read" in r.get("message", "")]
    assert summary and f"{N} records read, {N} predictions, 0 errors" in summary[-1]["message"]
    assert trained["export"] in " ".join(r["message"] for r in records)
    rows = read_rows(f"{bucket}/out", "prediction.results")
    check_predictions(rows, trained, _index_by_pixels(trained))
    assert read_rows(f"{bucket}/out", "prediction.errors") == []
    assert read_stats(f"{bucket}/out") == {
        "records_read": N, "predictions": N, "errors": 0, "errors_by_kind": {}
    }  # fmt: skip


@pytest.mark.parametrize("data_format", ["TF_RECORD", "TF_RECORD_GZIP"])
def test_tfrecords_with_key_field(trained, bucket, data_format):
    """tf.Example records through the tf.Example signature; keys pass through."""
    records = [example_bytes(r, key=i) for i, r in enumerate(trained["x"])]
    gz = data_format == "TF_RECORD_GZIP"
    write_tfrecords(f"{bucket}/in/a.tfrecord", records[:150], compress=gz)
    write_tfrecords(f"{bucket}/in/b.tfrecord", records[150:], compress=gz)
    code = predict.main([
        "--input-paths", f"{bucket}/in/a.tfrecord,{bucket}/in/b.tfrecord",
        "--data-format", data_format,
        "--output-path", f"{bucket}/out",
        "--model-dir", trained["export"],
        "--key-field", "id",
        "--log-format", "text",
        *local_args(),
    ])  # fmt: skip
    assert code == 0
    rows = read_rows(f"{bucket}/out", "prediction.results")
    assert all("instance" not in r for r in rows)
    check_predictions(rows, trained, lambda row: row["key"])
    assert read_stats(f"{bucket}/out")["records_read"] == N


def test_job_spec_gives_the_same_results_as_flags(trained, bucket, capfd):
    """An AI Platform job body runs unchanged; managed-only fields are reported."""
    lines = [json_line({"pixels": r.tolist()}) for r in trained["x"]]
    write_lines(f"{bucket}/in/data.json", lines)
    body = {
        "jobId": "digits_batch_predict_20260101_120000",
        "predictionInput": {
            "dataFormat": "JSON",
            "outputDataFormat": "JSON",
            "inputPaths": [f"{bucket}/in/*.json"],
            "outputPath": f"{bucket}/spec-out",
            "uri": trained["model_dir"],
            "maxWorkerCount": "3",
            "batchSize": "50",
            "signatureName": "serving_default",
            "region": "us-central1",
            "runtimeVersion": "1.13",
        },
    }
    storage.write_text(f"{bucket}/job.json", json.dumps(body))
    args = ["--job-spec", f"{bucket}/job.json", "--log-format", "text", *local_args()]
    assert predict.main(args) == 0
    logged = capfd.readouterr().err
    assert "job spec field runtimeVersion ignored" in logged
    assert "region us-central1 ignored" in logged  # local runner: no region to use
    assert predict.main([
        "--input-paths", f"{bucket}/in/*.json", "--data-format", "JSON",
        "--output-path", f"{bucket}/flag-out", "--model-dir", trained["model_dir"],
        "--batch-size", "50", "--log-format", "text", *local_args(),
    ]) == 0  # fmt: skip

    def by_instance(rows):
        return sorted((json.dumps(r["instance"]), r["prediction"]["class_id"]) for r in rows)

    spec_rows = read_rows(f"{bucket}/spec-out", "prediction.results")
    flag_rows = read_rows(f"{bucket}/flag-out", "prediction.results")
    check_predictions(spec_rows, trained, _index_by_pixels(trained))
    assert by_instance(spec_rows) == by_instance(flag_rows)

    def ordered(rows):
        return sorted(rows, key=lambda r: json.dumps(r["instance"]))

    for a, b in zip(ordered(spec_rows), ordered(flag_rows), strict=True):
        np.testing.assert_allclose(
            a["prediction"]["probabilities"], b["prediction"]["probabilities"], atol=1e-6
        )


def test_local_paths_work_too(trained, tmp_path):
    """A small local file, a local output directory: no Cloud Storage at all."""
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(json_line(r.tolist()) + b"\n" for r in trained["x"][:20]))
    local_model = tmp_path / "model"
    storage.copy_tree(trained["export"], str(local_model))
    out = tmp_path / "out"
    assert predict.main([
        "--input-paths", str(src), "--data-format", "json", "--output-path", str(out),
        "--model-dir", str(local_model), "--log-format", "text", *local_args(),
    ]) == 0  # fmt: skip
    rows = read_rows(str(out), "prediction.results")
    assert len(rows) == 20 and all(isinstance(r["instance"], list) for r in rows)
    assert os.path.exists(out / "prediction.errors_stats-00000-of-00001")


def test_each_signature_call_runs_on_one_thread_unless_told(trained, gcs_env):
    """Batch prediction runs one call per model thread, each on TF's intra-op pool of one;
    a TF_NUM_INTRAOP_THREADS the user set is left alone."""
    code = (
        "import sys, tensorflow as tf\n"
        "from batch.model import load_model\n"
        "load_model(sys.argv[1], 'serving_default')\n"
        "print(tf.config.threading.get_intra_op_parallelism_threads())\n"
    )
    env = gcs_env | {"PYTHONPATH": repo_root(), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_NUM_INTRAOP_THREADS", None)  # the test session sets one for itself
    for extra, want in (({}, "1"), ({"TF_NUM_INTRAOP_THREADS": "2"}, "0")):
        proc = subprocess.run(
            [sys.executable, "-c", code, trained["export"]],
            env=env | extra, capture_output=True, text=True, cwd=repo_root(),
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.split()[-1] == want, (extra, proc.stdout)
