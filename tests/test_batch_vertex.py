"""Vertex AI BatchPredictionJob bodies (projects.locations.batchPredictionJobs.create) run on
Beam's local runner against the GCS emulator, one per input format and instanceConfig
option; every row is compared with the model called directly."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest

from batch import predict
from jobcommon import cli, storage
from tests.batch_helpers import (
    WINE_COLUMNS,
    N,
    example_bytes,
    local_args,
    save_bytes_model,
    save_columns_model,
    trained_fixture,  # noqa: F401  (the session's trained model)
    vertex_outputs,
    write_lines,
    write_tfrecords,
)

STAMP = re.compile(r"prediction-[a-z0-9-]+-\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def vertex_body(name, instances_format, uris, prefix, model_uri, **extra) -> dict:
    """A body as the REST reference shapes it (an unmanaged container model)."""
    body = {
        "displayName": name,
        "unmanagedContainerModel": {
            "artifactUri": model_uri,
            "containerSpec": {
                "imageUri": "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"
            },
        },
        "inputConfig": {"instancesFormat": instances_format, "gcsSource": {"uris": uris}},
        "outputConfig": {
            "predictionsFormat": "jsonl",
            "gcsDestination": {"outputUriPrefix": prefix},
        },
        "dedicatedResources": {
            "machineSpec": {"machineType": "n1-standard-4"},
            "startingReplicaCount": 1,
            "maxReplicaCount": 2,
        },
    }
    body.update(extra)
    return body


def run_body(bucket: str, body: dict, *flags: str) -> int:
    storage.write_text(f"{bucket}/job.json", json.dumps(body))
    return predict.main(
        ["--job-spec", f"{bucket}/job.json", "--log-format", "text", *local_args(), *flags]
    )


def check_digits(rows: list[dict], trained: dict, index_of) -> None:
    assert len(rows) == N
    seen = set()
    for row in rows:
        i = index_of(row)
        seen.add(i)
        np.testing.assert_allclose(
            row["prediction"]["probabilities"], trained["expected"][i], rtol=1e-4, atol=1e-5
        )
    assert seen == set(range(N))


@pytest.fixture(scope="module")
def bytes_model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("bytes-model"))
    return path, save_bytes_model(path)


@pytest.fixture(scope="module")
def columns_model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("columns-model"))
    return path, save_columns_model(path)


def test_jsonl_with_key_field_and_excluded_fields(trained, bucket, capfd):
    lines = [
        json.dumps({"id": i, "pixels": r.tolist(), "source": "scan"})
        for i, r in enumerate(trained["x"])
    ]
    write_lines(f"{bucket}/in/a.jsonl", lines[:120])
    write_lines(f"{bucket}/in/b.jsonl", lines[120:])
    body = vertex_body(
        "digits-jsonl", "jsonl", [f"{bucket}/in/*.jsonl"], f"{bucket}/out", trained["model_dir"],
        instanceConfig={"keyField": "id", "excludedFields": ["source"]},
        manualBatchTuningParameters={"batchSize": 16},
    )  # fmt: skip
    assert run_body(bucket, body) == 0
    out = vertex_outputs(f"{bucket}/out", "digits-jsonl")
    assert STAMP.search(out["dir"]), out["dir"]
    # No record failed: Vertex AI writes no errors file then.
    assert out["files"] == ["completion_stats.json", "predictions_0001.jsonl"]
    assert all(
        set(r) == {"key", "prediction"} and isinstance(r["key"], str) for r in out["predictions"]
    )
    check_digits(out["predictions"], trained, lambda r: int(r["key"]))
    assert out["stats"]["records_read"] == N and out["stats"]["predictions"] == N
    logged = capfd.readouterr().err
    for field in ("unmanagedContainerModel.containerSpec", "dedicatedResources.machineSpec"):
        assert f"job spec field {field} ignored" in logged


def test_jsonl_objects_to_an_array_in_included_fields_order(columns_model, bucket):
    path, weights = columns_model
    rng = np.random.default_rng(1)
    values = rng.normal(size=(40, 3)).astype("float32")
    order = ["ash", "alcohol", "malic_acid"]
    # One model input per column: instanceType object, and includedFields leaves the
    # note out (the model would reject it as an unexpected input).
    lines = [
        json.dumps({"id": i, **dict(zip(WINE_COLUMNS, map(float, v), strict=True)), "note": "x"})
        for i, v in enumerate(values)
    ]
    write_lines(f"{bucket}/in/wine.jsonl", lines)
    body = vertex_body(
        "wine-object", "jsonl", [f"{bucket}/in/wine.jsonl"], f"{bucket}/out", path,
        instanceConfig={"instanceType": "object", "keyField": "id", "includedFields": order},
    )  # fmt: skip
    assert run_body(bucket, body) == 0
    rows = vertex_outputs(f"{bucket}/out", "wine-object")["predictions"]
    assert sorted(int(r["key"]) for r in rows) == list(range(40))
    for row in rows:
        np.testing.assert_allclose(row["prediction"], values[int(row["key"])] @ weights, rtol=1e-5)


def test_jsonl_instance_type_array(trained, bucket):
    """Objects of 64 named pixels, sent as the model's one vector input in the order of
    includedFields; the row echoes the instance as read."""
    names = [f"p{j}" for j in range(64)]
    shuffled = names[::-1]
    lines = []
    for r in trained["x"]:
        obj = dict(zip(names, map(float, r), strict=True))
        lines.append(json.dumps({k: obj[k] for k in shuffled}))  # fields in another order
    write_lines(f"{bucket}/in/named.jsonl", lines)
    body = vertex_body(
        "digits-array", "jsonl", [f"{bucket}/in/named.jsonl"], f"{bucket}/out",
        trained["model_dir"], instanceConfig={"instanceType": "array", "includedFields": names},
    )  # fmt: skip
    assert run_body(bucket, body) == 0
    rows = vertex_outputs(f"{bucket}/out", "digits-array")["predictions"]
    lookup = {tuple(np.round(r, 5)): i for i, r in enumerate(trained["x"])}
    check_digits(
        rows, trained, lambda row: lookup[tuple(np.round([row["instance"][n] for n in names], 5))]
    )


def test_csv_written_by_pandas_with_columns_by_name(columns_model, bucket):
    from sklearn.datasets import load_wine

    path, weights = columns_model
    frame = load_wine(as_frame=True).frame[[*WINE_COLUMNS, "target"]].head(60)
    frame.insert(0, "row_id", range(len(frame)))
    storage.write_text(f"{bucket}/in/wine.csv", frame.to_csv(index=False))
    body = vertex_body(
        "wine-csv", "csv", [f"{bucket}/in/wine.csv"], f"{bucket}/out", path,
        instanceConfig={"keyField": "row_id", "excludedFields": ["target"]},
    )  # fmt: skip
    assert run_body(bucket, body) == 0
    rows = vertex_outputs(f"{bucket}/out", "wine-csv")["predictions"]
    want = frame[list(WINE_COLUMNS)].to_numpy(dtype="float32") @ weights
    assert sorted(r["key"] for r in rows) == sorted(str(i) for i in range(60))
    for row in rows:
        np.testing.assert_allclose(row["prediction"], want[int(row["key"])], rtol=1e-5)


def test_csv_rows_as_the_one_vector_input(trained, bucket):
    """sklearn's digits frame, written by pandas: 64 pixel columns become the model's one
    vector input (in column order), the target column is excluded."""
    frame = pd.DataFrame(trained["x"], columns=[f"pixel_{i // 8}_{i % 8}" for i in range(64)])
    frame["target"] = 0
    storage.write_text(f"{bucket}/in/digits.csv", frame.to_csv(index=False))
    body = vertex_body(
        "digits-csv", "csv", [f"{bucket}/in/digits.csv"], f"{bucket}/out", trained["model_dir"],
        instanceConfig={"excludedFields": ["target"]},
    )  # fmt: skip
    assert run_body(bucket, body) == 0
    rows = vertex_outputs(f"{bucket}/out", "digits-csv")["predictions"]
    lookup = {tuple(np.round(r, 5)): i for i, r in enumerate(trained["x"])}
    check_digits(
        rows,
        trained,
        lambda row: lookup[tuple(np.round([row["instance"][c] for c in frame.columns[:64]], 5))],
    )


@pytest.mark.parametrize("instances_format", ["tf-record", "tf-record-gzip"])
def test_tf_record_with_key_field(trained, bucket, instances_format):
    records = [example_bytes(r, key=i) for i, r in enumerate(trained["x"])]
    gz = instances_format == "tf-record-gzip"
    write_tfrecords(f"{bucket}/in/a.tfrecord", records[:70], compress=gz)
    write_tfrecords(f"{bucket}/in/b.tfrecord", records[70:], compress=gz)
    body = vertex_body(
        "digits-tfr", instances_format, [f"{bucket}/in/*.tfrecord"], f"{bucket}/out",
        trained["model_dir"], instanceConfig={"keyField": "id"},
    )  # fmt: skip
    assert run_body(bucket, body) == 0
    rows = vertex_outputs(f"{bucket}/out", "digits-tfr")["predictions"]
    check_digits(rows, trained, lambda r: int(r["key"]))


def test_tf_records_go_to_any_signature_with_one_string_input(bytes_model, trained, bucket):
    """Raw bytes records (not tf.Examples) to a model whose only input is a string named
    image_bytes: each record is that input, and the row echoes it as {"b64"}."""
    path, weights = bytes_model
    x = trained["x"][:50]
    write_tfrecords(f"{bucket}/in/raw.tfrecord", [r.tobytes() for r in x])
    body = vertex_body("raw-tfr", "tf-record", [f"{bucket}/in/raw.tfrecord"], f"{bucket}/out", path)
    assert run_body(bucket, body) == 0
    rows = vertex_outputs(f"{bucket}/out", "raw-tfr")["predictions"]
    assert len(rows) == 50
    by_bytes = {r.tobytes(): r @ weights for r in x}
    for row in rows:
        raw = base64.b64decode(row["instance"]["b64"])
        np.testing.assert_allclose(row["prediction"], by_bytes[raw], rtol=1e-5, atol=1e-5)


def test_file_list_sends_each_file_as_b64(bytes_model, trained, bucket):
    path, weights = bytes_model
    x = trained["x"][:30]
    uris = []
    for i, row in enumerate(x):
        uris.append(f"{bucket}/images/{i}.raw")
        storage.write_bytes(uris[-1], row.tobytes())
    write_lines(f"{bucket}/in/files.txt", [*uris, f"{bucket}/images/missing.raw"])
    body = vertex_body(
        "files", "file-list", [f"{bucket}/in/files.txt"], f"{bucket}/out", path,
        manualBatchTuningParameters={"batchSize": 8},
    )  # fmt: skip
    assert run_body(bucket, body) == 0
    out = vertex_outputs(f"{bucket}/out", "files")
    rows = out["predictions"]
    assert sorted(r["instance"] for r in rows) == sorted(uris)
    for row in rows:
        i = int(row["instance"].rsplit("/", 1)[1].split(".")[0])
        np.testing.assert_allclose(row["prediction"], x[i] @ weights, rtol=1e-5, atol=1e-5)
    (error,) = out["errors"]
    assert error["instance"] == f"{bucket}/images/missing.raw"
    assert error["error"]["status"] == "NOT_FOUND"
    assert out["errors"] and out["files"][1] == "errors_0001.jsonl"


def test_error_rows_are_prediction_results_with_status_names(trained, bucket):
    lines = [json.dumps({"id": i, "pixels": r.tolist()}) for i, r in enumerate(trained["x"][:20])]
    lines += ['{"id": 77, "pixels": [1, 2]}', '{"pixels": [0.5]}', "not json", ""]
    write_lines(f"{bucket}/in/a.jsonl", lines)
    body = vertex_body(
        "mixed", "jsonl", [f"{bucket}/in/a.jsonl"], f"{bucket}/out", trained["model_dir"],
        instanceConfig={"keyField": "id"},
    )  # fmt: skip
    assert run_body(bucket, body) == 0
    out = vertex_outputs(f"{bucket}/out", "mixed")
    assert len(out["predictions"]) == 20
    by_kind = {e["error"]["message"].split(":")[0]: e for e in out["errors"]}
    assert set(by_kind) == {"wrong_shape", "missing_key", "bad_json", "blank_line"}
    assert all(set(e) == {"key", "error"} or set(e) == {"instance", "error"} for e in out["errors"])
    assert all(e["error"]["status"] == "INVALID_ARGUMENT" for e in out["errors"])
    assert by_kind["wrong_shape"]["key"] == "77"
    assert by_kind["missing_key"]["instance"] == {"pixels": [0.5]}
    assert base64.b64decode(by_kind["bad_json"]["instance"]["b64"]) == b"not json"
    assert out["stats"] == {
        "records_read": 24, "predictions": 20, "errors": 4,
        "errors_by_kind": {"bad_json": 1, "blank_line": 1, "missing_key": 1, "wrong_shape": 1},
    }  # fmt: skip


def test_flags_give_the_vertex_layout_too(trained, bucket):
    lines = [json.dumps(r.tolist()) for r in trained["x"][:10]]
    write_lines(f"{bucket}/in/a.jsonl", lines)
    assert predict.main([
        "--input-paths", f"{bucket}/in/a.jsonl", "--data-format", "jsonl",
        "--output-path", f"{bucket}/out", "--model-dir", trained["model_dir"],
        "--output-layout", "vertex", "--display-name", "by-flags", "--log-format", "text",
        *local_args(),
    ]) == 0  # fmt: skip
    out = vertex_outputs(f"{bucket}/out", "by-flags")
    assert len(out["predictions"]) == 10 and out["errors"] == []


@pytest.mark.parametrize(
    "change, message",
    [
        ({"inputConfig": {"instancesFormat": "bigquery", "bigquerySource": {"inputUri": "bq://p.d.t"}}},
         "bigquery"),
        ({"outputConfig": {"predictionsFormat": "csv", "gcsDestination": {"outputUriPrefix": "gs://b/o"}}},
         "predictionsFormat 'csv' is not supported"),
        ({"model": "projects/p/locations/us-central1/models/123", "unmanagedContainerModel": {}},
         "pass --model-dir"),
    ],
)  # fmt: skip
def test_what_cannot_run_here_is_one_clear_line(trained, bucket, capfd, change, message):
    body = vertex_body(
        "bad", "jsonl", [f"{bucket}/in/*.jsonl"], f"{bucket}/out", trained["model_dir"]
    )
    body.update(change)
    storage.write_text(f"{bucket}/job.json", json.dumps(body))
    code = cli.run(predict.main, ["--job-spec", f"{bucket}/job.json", "--log-format", "text"])
    assert code == 2
    err = capfd.readouterr().err
    assert message in err and "Traceback" not in err
    assert len([ln for ln in err.splitlines() if "ERROR" in ln]) == 1


def test_unknown_fields_are_named(trained, bucket, capfd):
    write_lines(f"{bucket}/in/a.jsonl", [json.dumps(trained["x"][0].tolist())])
    body = vertex_body(
        "named", "jsonl", [f"{bucket}/in/a.jsonl"], f"{bucket}/out", trained["model_dir"],
        labels={"team": "ml"}, colour="blue",
        instanceConfig={"keyFeild": "id"},
    )  # fmt: skip
    assert run_body(bucket, body) == 0
    logged = capfd.readouterr().err
    for field in ("labels", "colour", "instanceConfig.keyFeild"):
        assert f"job spec field {field} ignored" in logged, field


def test_a_rerun_removes_the_directory_an_interrupted_run_left(trained, bucket):
    """An earlier run of the same job that was killed left a marked, partial directory: the
    rerun removes it, so one complete prediction directory remains."""
    stale = f"{bucket}/out/prediction-again-2026-01-01T00:00:00.000Z"
    storage.write_text(f"{stale}/.batch-predict-running", "started\n")
    storage.write_text(f"{stale}/predictions_0001.jsonl", '{"instance": 1, "prediction": 2}\n')
    finished = f"{bucket}/out/prediction-other-2026-01-01T00:00:00.000Z/predictions_0001.jsonl"
    storage.write_text(finished, "{}\n")  # another job's finished output stays
    write_lines(f"{bucket}/in/a.jsonl", [json.dumps(r.tolist()) for r in trained["x"][:12]])
    body = vertex_body(
        "again", "jsonl", [f"{bucket}/in/a.jsonl"], f"{bucket}/out", trained["model_dir"]
    )
    assert run_body(bucket, body) == 0
    out = vertex_outputs(f"{bucket}/out", "again")
    assert out["dir"] != stale and not storage.glob(f"{stale}/*")
    assert len(out["predictions"]) == 12
    assert ".batch-predict-running" not in out["files"]
    assert storage.exists(finished)


def test_listed_files_over_the_limit_are_error_rows(bytes_model, trained, bucket):
    path, weights = bytes_model
    small = f"{bucket}/images/small.raw"
    storage.write_bytes(small, trained["x"][0].tobytes())  # 256 bytes
    big = f"{bucket}/images/big.raw"
    storage.write_bytes(big, b"\0" * 5000)
    write_lines(f"{bucket}/in/files.txt", [small, big])
    body = vertex_body("limits", "file-list", [f"{bucket}/in/files.txt"], f"{bucket}/out", path)
    assert run_body(bucket, body, "--max-instance-bytes", "1000") == 0
    out = vertex_outputs(f"{bucket}/out", "limits")
    assert [r["instance"] for r in out["predictions"]] == [small]
    np.testing.assert_allclose(
        out["predictions"][0]["prediction"], trained["x"][0] @ weights, rtol=1e-5
    )
    (error,) = out["errors"]
    assert error["instance"] == big and error["error"]["message"].startswith("too_large:")
