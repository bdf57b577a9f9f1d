"""Every record accounted for: each line or record read is a prediction or an error row, with
the cause named; huge records are bounded; a killed run, rerun, leaves one set of outputs."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from batch import predict
from batch.tfrecords import frame
from jobcommon import storage
from tests.batch_helpers import (
    WINE_COLUMNS,
    N,
    example_bytes,
    json_line,
    local_args,
    read_rows,
    read_stats,
    repo_root,
    save_bytes_model,
    save_columns_model,
    save_failing_model,
    trained_fixture,  # noqa: F401  (the session's trained model)
    write_lines,
)


def run(*args: str) -> int:
    return predict.main([*args, "--log-format", "text", *local_args()])


@pytest.fixture(scope="module")
def failing_model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("failing-model"))
    save_failing_model(path)
    return path


def test_inference_failures_keep_their_root_cause(failing_model, tmp_path):
    lines = [json_line({"x": float(v), "i": v % 4}) for v in range(30)]
    lines.insert(5, json_line({"x": -1.0, "i": 1}))  # the assertion fails
    lines.insert(17, json_line({"x": 2.0, "i": 7}))  # the lookup is out of range
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(ln + b"\n" for ln in lines))
    out = tmp_path / "out"
    assert run(
        "--input-paths", str(src), "--data-format", "jsonl", "--output-path", str(out),
        "--model-dir", failing_model, "--batch-size", "8",
    ) == 0  # fmt: skip
    results = read_rows(str(out), "prediction.results")
    assert sorted(r["instance"]["x"] for r in results) == [float(v) for v in range(30)]
    for row in results:
        want = row["instance"]["x"] + [10.0, 20.0, 30.0, 40.0][row["instance"]["i"]]
        assert row["prediction"] == pytest.approx(want)
    errors = {e["instance"]["x"]: e["error"] for e in read_rows(str(out), "prediction.errors")}
    assert set(errors) == {-1.0, 2.0}
    assert all(e["kind"] == "inference_failed" for e in errors.values())
    assert "x must be non-negative" in errors[-1.0]["message"]
    assert "indices[0] = 7 is not in [0, 4)" in errors[2.0]["message"]
    assert "Graph execution error" not in json.dumps(errors)
    assert read_stats(str(out)) == {
        "records_read": 32, "predictions": 30, "errors": 2,
        "errors_by_kind": {"inference_failed": 2},
    }  # fmt: skip


def test_records_that_are_not_tf_examples_are_bad_example_without_a_schema(tmp_path):
    """A tf.Example signature with no schema file beside it: a record that is not a
    tf.Example is named as such, not an inference failure."""
    import tensorflow as tf

    model = tmp_path / "model"
    weights = save_columns_model(str(model))
    values = np.random.default_rng(2).normal(size=(20, 3)).astype("float32")

    def example(v):
        feature = {
            c: tf.train.Feature(float_list=tf.train.FloatList(value=[float(x)]))
            for c, x in zip(WINE_COLUMNS, v, strict=True)
        }
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    records = [example(v) for v in values]
    records[4] = b"\x08\x96\x01 definitely not a proto"
    records[13] = b"\xff\xff\xff\xff"
    (tmp_path / "in.tfrecord").write_bytes(b"".join(frame(r) for r in records))
    out = tmp_path / "out"
    assert run(
        "--input-paths", str(tmp_path / "in.tfrecord"), "--data-format", "tf-record",
        "--output-path", str(out), "--model-dir", str(model), "--batch-size", "8",
    ) == 0  # fmt: skip
    results = read_rows(str(out), "prediction.results")
    good = {r: values[i] @ weights for i, r in enumerate(records) if i not in (4, 13)}
    assert len(results) == 18
    for row in results:
        want = good[base64.b64decode(row["instance"]["b64"])]
        assert row["prediction"] == pytest.approx(float(want), rel=1e-5)
    errors = read_rows(str(out), "prediction.errors")
    assert sorted(base64.b64decode(e["instance"]["b64"]) for e in errors) == sorted(
        [records[4], records[13]]
    )
    assert read_stats(str(out))["errors_by_kind"] == {"bad_example": 2}


def test_after_a_damaged_length_the_intact_records_are_scored(trained, bucket):
    records = [example_bytes(r, key=i) for i, r in enumerate(trained["x"])]
    frames = [frame(r) for r in records]
    blob = bytearray(b"".join(frames))
    at = sum(map(len, frames[:50]))
    blob[at + 3] ^= 0x40  # record 50's length header no longer matches its checksum
    storage.write_bytes(f"{bucket}/in/a.tfrecord", bytes(blob))
    assert run(
        "--input-paths", f"{bucket}/in/a.tfrecord", "--data-format", "TF_RECORD",
        "--output-path", f"{bucket}/out", "--model-dir", trained["model_dir"],
        "--key-field", "id", "--batch-size", "16",
    ) == 0  # fmt: skip
    keys = sorted(r["key"] for r in read_rows(f"{bucket}/out", "prediction.results"))
    assert keys == [i for i in range(N) if i != 50]
    (error,) = read_rows(f"{bucket}/out", "prediction.errors")
    assert error["error"]["kind"] == "corrupt_record"
    assert f"bytes {at}-{at + len(frames[50])}" in error["error"]["message"]
    assert read_stats(f"{bucket}/out") == {
        "records_read": N, "predictions": N - 1, "errors": 1,
        "errors_by_kind": {"corrupt_record": 1},
    }  # fmt: skip


def test_blank_lines_are_error_rows_so_every_line_is_counted(trained, tmp_path):
    lines = [json_line(r.tolist()) for r in trained["x"][:10]]
    text = b"\n".join(lines[:3]) + b"\n\n  \n" + b"\n".join(lines[3:]) + b"\n\r\n"
    (tmp_path / "in.jsonl").write_bytes(text)
    out = tmp_path / "out"
    assert run(
        "--input-paths", str(tmp_path / "in.jsonl"), "--data-format", "JSON",
        "--output-path", str(out), "--model-dir", trained["model_dir"],
    ) == 0  # fmt: skip
    assert text.count(b"\n") == 13  # 13 lines: 10 instances, 3 blank
    assert read_stats(str(out)) == {
        "records_read": 13, "predictions": 10, "errors": 3, "errors_by_kind": {"blank_line": 3}
    }  # fmt: skip


def test_records_over_the_limit_are_error_rows_with_a_bounded_prefix(trained, bucket):
    x = trained["x"]
    lines = [json_line({"id": i, "pixels": r.tolist()}) for i, r in enumerate(x[:20])]
    huge = json_line({"id": 999, "pixels": [0.5] * 200_000})  # about 1 MB
    lines.insert(7, huge)
    write_lines(f"{bucket}/in/a.jsonl", lines)
    big_record = example_bytes(np.zeros(150_000, np.float32), key=998)
    write_tfrecords_plain = [example_bytes(r, key=i) for i, r in enumerate(x[:5])]
    storage.write_bytes(
        f"{bucket}/in/b.tfrecord",
        b"".join(
            frame(r) for r in [*write_tfrecords_plain[:2], big_record, *write_tfrecords_plain[2:]]
        ),
    )
    limit = str(100_000)
    assert run(
        "--input-paths", f"{bucket}/in/a.jsonl", "--data-format", "JSON",
        "--output-path", f"{bucket}/out-json", "--model-dir", trained["model_dir"],
        "--key-field", "id", "--max-instance-bytes", limit,
    ) == 0  # fmt: skip
    assert run(
        "--input-paths", f"{bucket}/in/b.tfrecord", "--data-format", "TF_RECORD",
        "--output-path", f"{bucket}/out-tfr", "--model-dir", trained["model_dir"],
        "--key-field", "id", "--max-instance-bytes", limit,
    ) == 0  # fmt: skip
    for out, size, good in (
        (f"{bucket}/out-json", len(huge), 20),
        (f"{bucket}/out-tfr", len(big_record), 5),
    ):
        (error,) = read_rows(out, "prediction.errors")
        assert error["error"]["kind"] == "too_large"
        assert str(size) in error["error"]["message"] and limit in error["error"]["message"]
        assert len(base64.b64decode(error["raw"]["b64"])) == 8192  # a prefix, not the record
        assert len(json.dumps(error)) < 12_000
        stats = read_stats(out)
        assert stats == {
            "records_read": good + 1, "predictions": good, "errors": 1,
            "errors_by_kind": {"too_large": 1},
        }  # fmt: skip
    (error,) = read_rows(f"{bucket}/out-json", "prediction.errors")
    assert base64.b64decode(error["raw"]["b64"]) == huge[:8192]


def test_an_error_row_of_a_huge_instance_echoes_only_a_prefix(trained, tmp_path):
    """A 1 MB instance under the limit that fails its check: the row carries its first
    bytes and says how long it was."""
    huge = json_line({"pixels": [0.25] * 200_000})
    (tmp_path / "in.jsonl").write_bytes(huge + b"\n" + json_line(trained["x"][0].tolist()) + b"\n")
    out = tmp_path / "out"
    assert run(
        "--input-paths", str(tmp_path / "in.jsonl"), "--data-format", "JSON",
        "--output-path", str(out), "--model-dir", trained["model_dir"],
    ) == 0  # fmt: skip
    (error,) = read_rows(str(out), "prediction.errors")
    assert error["error"]["kind"] == "wrong_shape"
    assert f"a record of {len(huge)} bytes" in error["error"]["message"]
    assert base64.b64decode(error["raw"]["b64"]) == huge[:8192]


def test_a_huge_instance_the_model_fails_on_is_echoed_as_a_prefix(tmp_path):
    model = str(tmp_path / "model")
    save_bytes_model(model)
    payload = np.arange(250_003, dtype=np.float32).tobytes()  # not a multiple of 64 floats
    line = json_line({"image_bytes": {"b64": base64.b64encode(payload).decode()}})
    (tmp_path / "in.jsonl").write_bytes(line + b"\n")
    out = tmp_path / "out"
    assert run(
        "--input-paths", str(tmp_path / "in.jsonl"), "--data-format", "JSON",
        "--output-path", str(out), "--model-dir", model,
    ) == 0  # fmt: skip
    (error,) = read_rows(str(out), "prediction.errors")
    assert error["error"]["kind"] == "inference_failed"
    assert f"a record of {len(line)} bytes" in error["error"]["message"]
    assert base64.b64decode(error["raw"]["b64"]) == line[:8192]
    assert os.path.getsize(out / "prediction.errors-00000-of-00001") < 12_000


def test_long_integers_are_echoed_exactly(trained, bucket):
    big = 2**53 + 1
    huge = 123456789012345678901234567890
    pixels = trained["x"][0].tolist()
    lines = [
        json_line({"id": big, "pixels": pixels}),
        f'{{"id": {huge}, "pixels": {json.dumps(pixels)}}}',
        f'{{"id": {huge + 1}, "pixels": [1]}}',
    ]
    write_lines(f"{bucket}/in/a.jsonl", lines)
    assert run(
        "--input-paths", f"{bucket}/in/a.jsonl", "--data-format", "JSON",
        "--output-path", f"{bucket}/out", "--model-dir", trained["model_dir"], "--key-field", "id",
    ) == 0  # fmt: skip
    results = read_rows(f"{bucket}/out", "prediction.results")  # orjson: exact to 64 bits
    assert sorted(r["key"] for r in results if r["key"] == big) == [big]
    texts = storage.read_text(storage.glob(f"{bucket}/out/prediction.results-*")[0])
    assert f'"key":{huge}' in texts and f'"key":{big}' in texts
    errors = storage.read_text(storage.glob(f"{bucket}/out/prediction.errors-*")[0])
    assert f'"key":{huge + 1}' in errors


def _predict_cmd(trained, src: str, out: str) -> list[str]:
    return [
        sys.executable, "-m", "batch.predict", "--input-paths", src, "--data-format", "JSON",
        "--output-path", out, "--model-dir", trained["model_dir"], "--key-field", "id",
        "--batch-size", "8", *local_args(),
    ]  # fmt: skip


def test_a_killed_run_rerun_to_the_same_output_leaves_one_complete_set(
    trained, bucket, gcs_env, monkeypatch
):
    """SIGKILL while the job writes its outputs, then the same command again."""
    n = 4000
    lines = [json_line({"id": i, "pixels": trained["x"][i % N].tolist()}) for i in range(n)]
    lines[123] = b"not json"
    write_lines(f"{bucket}/in/a.jsonl", lines)
    out = f"{bucket}/out"
    env = gcs_env | {"PYTHONPATH": repo_root()}
    cmd = _predict_cmd(trained, f"{bucket}/in/a.jsonl", out)
    proc = subprocess.Popen(cmd, env=env, cwd=repo_root(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 240
    try:
        # Kill as soon as outputs are being written: a part in a temporary directory, or a
        # first shard under its final name.
        while not storage.glob(f"{out}/.tmp-*/*") and not storage.glob(f"{out}/prediction.*"):
            assert proc.poll() is None, "the job ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert storage.exists(f"{out}/.batch-predict-running")  # the run was interrupted

    rerun = subprocess.run(cmd, env=env, cwd=repo_root(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    names = sorted(p.rsplit("/", 1)[1] for p in storage.list_files(out))
    results = [n for n in names if n.startswith("prediction.results-")]
    assert results and all(r.endswith(f"-of-{len(results):05d}") for r in results)
    assert sorted(results) == [
        f"prediction.results-{i:05d}-of-{len(results):05d}" for i in range(len(results))
    ]
    assert not [n for n in names if n.startswith(".tmp-") or n == ".batch-predict-running"], names
    keys = sorted(r["key"] for r in read_rows(out, "prediction.results"))
    assert keys == [i for i in range(n) if i != 123]  # each exactly once
    assert len(read_rows(out, "prediction.errors")) == 1
    assert read_stats(out)["records_read"] == n


def test_worker_processes_start_without_waiting_for_credentials(trained, bucket, gcs_env):
    """With multi_processing workers on the emulator, no worker looks for Google
    credentials (Beam logs that it falls back to anonymous access when one does)."""
    write_lines(f"{bucket}/in/a.jsonl", [json_line(r.tolist()) for r in trained["x"][:40]])
    env = gcs_env | {"PYTHONPATH": repo_root()}
    cmd = [
        sys.executable, "-m", "batch.predict", "--input-paths", f"{bucket}/in/a.jsonl",
        "--data-format", "JSON", "--output-path", f"{bucket}/out",
        "--model-dir", trained["model_dir"], "--log-level", "DEBUG", "--log-format", "text",
        "--direct_num_workers=2", "--direct_running_mode=multi_processing",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=repo_root(), capture_output=True, text=True)
    logged = proc.stdout + proc.stderr
    assert proc.returncode == 0, logged[-3000:]
    assert read_stats(f"{bucket}/out")["predictions"] == 40
    assert "Unable to find default credentials" not in logged
    assert "Connecting anonymously" not in logged
