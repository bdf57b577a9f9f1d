"""Bad records fail only themselves; bad jobs fail at once with a clear message."""

from __future__ import annotations

import base64
import pickle

import numpy as np
import pytest

from batch import batches, predict
from batch.instances import RecordError
from batch.model_handler import SavedModelHandler
from jobcommon import cli, storage
from tests.batch_helpers import (
    N,
    example_bytes,
    json_line,
    local_args,
    read_rows,
    read_stats,
    save_bytes_model,
    trained_fixture,  # noqa: F401  (the session's trained model)
    write_lines,
    write_tfrecords,
)


def run(*args: str) -> int:
    return predict.main([*args, "--log-format", "text", *local_args()])


def test_mixed_json_one_row_per_record(trained, bucket):
    """About 10% bad records of every JSON kind, spread through the batches."""
    x = trained["x"]
    bad = {
        "bad_json": [b'{"id": 9001, "pixels": [0.1, ', b"not json", b"\xff\xfe{"],
        "wrong_features": [
            json_line({"id": 9101, "pixel": x[0].tolist()}),
            json_line({"id": 9102, "pixels": x[0].tolist(), "extra": 1}),
            json_line({"id": 9103}),
        ],
        "wrong_shape": [
            json_line({"id": 9201, "pixels": x[0].tolist()[:63]}),
            json_line({"id": 9202, "pixels": [x[0].tolist()]}),
            json_line({"id": 9203, "pixels": [[1, 2], [3]]}),
        ],
        "wrong_dtype": [
            json_line({"id": 9301, "pixels": ["a"] * 64}),
            json_line({"id": 9302, "pixels": {"b64": "AAAA"}}),
            json_line({"id": 9303, "pixels": [True] * 64}),
        ],
        "missing_key": [json_line({"pixels": x[0].tolist()}), json_line([1, 2])],
    }
    lines = [json_line({"id": i, "pixels": r.tolist()}) for i, r in enumerate(x)]
    bad_lines = [(kind, ln) for kind, lns in bad.items() for ln in lns]
    step = len(lines) // len(bad_lines)
    for j, (_, line) in enumerate(bad_lines):
        lines.insert(j * (step + 1) + 3, line)
    write_lines(f"{bucket}/in/mixed.jsonl", lines)

    assert run(
        "--input-paths", f"{bucket}/in/mixed.jsonl", "--data-format", "JSON",
        "--output-path", f"{bucket}/out", "--model-dir", trained["model_dir"],
        "--key-field", "id", "--batch-size", "16",
    ) == 0  # fmt: skip

    results = read_rows(f"{bucket}/out", "prediction.results")
    assert sorted(r["key"] for r in results) == list(range(N))
    for row in results:
        np.testing.assert_allclose(
            row["prediction"]["probabilities"], trained["expected"][row["key"]], atol=1e-5
        )
    errors = read_rows(f"{bucket}/out", "prediction.errors")
    assert len(errors) == len(bad_lines)
    by_kind: dict[str, list] = {}
    for row in errors:
        by_kind.setdefault(row["error"]["kind"], []).append(row)
        assert row["error"]["message"]
    assert {k: len(v) for k, v in by_kind.items()} == {k: len(v) for k, v in bad.items()}
    assert sorted(r["key"] for r in by_kind["wrong_shape"]) == [9201, 9202, 9203]
    raw = {base64.b64decode(r["raw"]["b64"]) for r in by_kind["bad_json"]}
    assert raw == set(bad["bad_json"])
    stats = read_stats(f"{bucket}/out")
    assert stats["records_read"] == N + len(bad_lines)
    assert stats["predictions"] + stats["errors"] == stats["records_read"]
    assert stats["errors_by_kind"] == {k: len(v) for k, v in bad.items()}


@pytest.fixture(scope="module")
def bytes_model(tmp_path_factory):
    """A plain TF SavedModel (not Keras) whose input is raw float32 bytes."""
    path = str(tmp_path_factory.mktemp("bytes-model"))
    return path, save_bytes_model(path)


def test_bytes_inputs_and_a_record_the_model_rejects(bytes_model, trained, tmp_path):
    """{"b64"} inputs; bad base64 fails alone, and a record that passes the checks but
    makes the model fail is isolated from the good records batched with it."""
    path, weights = bytes_model
    x = trained["x"][:40]
    lines, want_bad = [], {}
    for i, row in enumerate(x):
        lines.append(json_line({"image_bytes": {"b64": base64.b64encode(row.tobytes()).decode()}}))
        if i % 8 == 2:
            lines.append(json_line({"image_bytes": {"b64": "%%%not base64%%%"}}))
            want_bad[len(lines) - 1] = "bad_b64"
        if i % 8 == 5:  # 3 floats, not 64: valid bytes, but the model cannot reshape them
            short = base64.b64encode(row[:3].tobytes()).decode()
            lines.append(json_line({"image_bytes": {"b64": short}}))
            want_bad[len(lines) - 1] = "inference_failed"
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(ln + b"\n" for ln in lines))
    out = tmp_path / "out"
    assert run(
        "--input-paths", str(src), "--data-format", "JSON", "--output-path", str(out),
        "--model-dir", path, "--batch-size", "8",
    ) == 0  # fmt: skip
    results = read_rows(str(out), "prediction.results")
    assert len(results) == len(x)
    expected = {r.tobytes(): r @ weights for r in x}
    for row in results:
        raw = base64.b64decode(row["instance"]["image_bytes"]["b64"])
        np.testing.assert_allclose(row["prediction"], expected[raw], rtol=1e-5, atol=1e-5)
    errors = read_rows(str(out), "prediction.errors")
    kinds = sorted(e["error"]["kind"] for e in errors)
    assert kinds == sorted(want_bad.values())
    failed = [e for e in errors if e["error"]["kind"] == "inference_failed"]
    assert all("model failed" in e["error"]["message"] for e in failed)


def test_mixed_tfrecords_with_corrupt_records(trained, bucket):
    """Checksum errors, a truncated tail, non-Example bytes and wrong features: each of
    them one error row, and every intact record still predicted."""
    from batch.tfrecords import frame

    x = trained["x"]
    good = [example_bytes(r, key=i) for i, r in enumerate(x)]
    # File a: good records with 4 corrupted in place (data checksum no longer matches).
    a_records = good[:100]
    blob = bytearray(b"".join(frame(r) for r in a_records))
    offsets, pos = [], 0
    for r in a_records:
        offsets.append(pos)
        pos += len(frame(r))
    corrupted = [10, 35, 60, 85]
    for i in corrupted:
        blob[offsets[i] + 12 + 20] ^= 0xFF  # a byte inside the record's data
    storage.write_bytes(f"{bucket}/in/a.tfrecord", bytes(blob))
    # File b: good records, non-Example bytes, an Example without the model's feature,
    # an Example with the wrong length (only the model notices), then a cut-off record.
    b_records = good[100:] + [
        b"\x08\x96\x01 definitely not a proto",
        example_bytes(x[0], key=9001, name="other"),
        example_bytes(x[0][:10], key=9002),
    ]
    write_tfrecords(f"{bucket}/in/b.tfrecord", b_records)
    storage.write_bytes(
        f"{bucket}/in/b.tfrecord",
        storage.read_bytes(f"{bucket}/in/b.tfrecord") + frame(good[0])[:-7],
    )
    assert run(
        "--input-paths", f"{bucket}/in/*.tfrecord", "--data-format", "TF_RECORD",
        "--output-path", f"{bucket}/out", "--model-dir", trained["model_dir"],
        "--batch-size", "16",
    ) == 0  # fmt: skip
    results = read_rows(f"{bucket}/out", "prediction.results")
    assert len(results) == N - len(corrupted)
    errors = read_rows(f"{bucket}/out", "prediction.errors")
    kinds = sorted(e["error"]["kind"] for e in errors)
    assert kinds == sorted(
        ["corrupt_record"] * 5 + ["bad_example", "wrong_features", "inference_failed"]
    )
    stats = read_stats(f"{bucket}/out")
    assert stats["records_read"] == N + 4
    assert stats["predictions"] + stats["errors"] == stats["records_read"]
    truncated = [e for e in errors if "ends inside a record" in e["error"]["message"]]
    assert len(truncated) == 1 and "b.tfrecord" in truncated[0]["error"]["message"]
    # Records the model's batch failed on are named by the careful check, and their rows
    # carry the record itself as the instance.
    by_kind = {e["error"]["kind"]: e for e in errors}
    assert base64.b64decode(by_kind["bad_example"]["instance"]["b64"]) == b_records[-3]
    assert base64.b64decode(by_kind["wrong_features"]["instance"]["b64"]) == b_records[-2]
    assert "pixels" in by_kind["wrong_features"]["error"]["message"]
    assert base64.b64decode(by_kind["inference_failed"]["instance"]["b64"]) == b_records[-1]


def test_empty_input_glob_names_the_pattern(trained, bucket, capfd):
    code = cli.run(predict.main, [
        "--input-paths", f"{bucket}/nothing/*.json", "--data-format", "JSON",
        "--output-path", f"{bucket}/out", "--model-dir", trained["model_dir"],
    ])  # fmt: skip
    assert code == 3
    captured = capfd.readouterr()
    assert f"not found: {bucket}/nothing/*.json" in captured.out + captured.err


def test_unloadable_model_fails_before_the_pipeline(bucket, tmp_path, capfd):
    write_lines(f"{bucket}/in/a.json", [b"[1]"])
    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    code = cli.run(predict.main, [
        "--input-paths", f"{bucket}/in/a.json", "--data-format", "JSON",
        "--output-path", f"{bucket}/out", "--model-dir", str(broken), "--log-format", "text",
    ])  # fmt: skip
    assert code == 7
    err = capfd.readouterr().err
    assert "cannot load the SavedModel" in err and str(broken) in err
    assert not storage.glob(f"{bucket}/out/*")


def test_missing_signature_lists_the_ones_there(trained, bucket, capfd):
    write_lines(f"{bucket}/in/a.json", [b"[1]"])
    code = cli.run(predict.main, [
        "--input-paths", f"{bucket}/in/a.json", "--data-format", "JSON",
        "--output-path", f"{bucket}/out", "--model-dir", trained["model_dir"],
        "--signature-name", "predict", "--log-format", "text",
    ])  # fmt: skip
    assert code == 7
    err = capfd.readouterr().err
    assert "no signature 'predict'" in err and "serving_tf_example" in err


def test_refuses_to_mix_with_earlier_results(trained, bucket, capfd):
    write_lines(f"{bucket}/in/a.json", [b"[1]"])
    storage.write_text(f"{bucket}/out/prediction.results-00000-of-00001", "{}\n")
    code = cli.run(predict.main, [
        "--input-paths", f"{bucket}/in/a.json", "--data-format", "JSON",
        "--output-path", f"{bucket}/out", "--model-dir", trained["model_dir"],
        "--log-format", "text",
    ])  # fmt: skip
    assert code == 2
    assert "already holds prediction results" in capfd.readouterr().err


def test_missing_flags_are_named(capfd):
    code = cli.run(predict.main, ["--data-format", "JSON", "--log-format", "text"])
    assert code == 2
    err = capfd.readouterr().err
    assert "--input-paths" in err and "--output-path" in err and "--model-dir" in err


def _rows(inference) -> list:
    if isinstance(inference, bytes):
        return inference.split(b"\n")
    return [o.kind if isinstance(o, RecordError) else sorted(o) for o in inference]


def test_started_batches_give_the_rows_of_batches_run_on_call(trained):
    """Batches started early on the model threads (RunInference's preprocess step) give
    exactly the rows of Batches run when RunInference calls, a failed one included."""
    handler = SavedModelHandler(trained["export"], "serving_tf_example", threads=2)
    model = handler.load_model()
    name = next(iter(model.info.input_specs))
    records = [example_bytes(row) for row in trained["x"][:40]]
    records[13] = b"\x08\x96\x01 not a tf.Example"  # its batch fails and is narrowed down

    def batches_of_8() -> list[batches.Batch]:
        return [
            batches.decode_example_batch(records[i : i + 8], name, None)[0]
            for i in range(0, len(records), 8)
        ]

    start = handler.get_preprocess_fns()[-1]
    started = [start(batch) for batch in batches_of_8()]
    assert all(batch.pending is not None for batch in started)
    # The started work stays in this process: a pickled Batch (shuffled, sent to another
    # worker) goes without it and is simply run when RunInference calls.
    assert pickle.loads(pickle.dumps(started[0])).pending is None

    early = [_rows(r.inference) for r in handler.run_inference(started, model)]
    on_call = [_rows(r.inference) for r in handler.run_inference(batches_of_8(), model)]
    assert early == on_call
    assert early[1][5] == "bad_example" and len(early[1]) == 8
    assert [len(rows) for rows in early] == [8] * 5
    assert all(batch.pending is None for batch in started)
