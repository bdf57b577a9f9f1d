"""Data conversion and input, bad input, and the command-line contract of trainer.task."""

from __future__ import annotations

import json
import os
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from trainer_helpers import child_env, digits, read_text, restore_logging, run_task, write_digits  # noqa: F401 (a fixture)

from jobcommon import cli, exports, storage
from jobcommon.errors import BadInputError, NotFoundError, UsageError
from jobcommon.schema import Feature, Schema
from trainer import convert, data, task
from trainer.data import make_dataset, serialize_example

SCHEMA = Schema([Feature("pixels", "float32", [64])], Feature("label", "int64", []), num_classes=10)


def _run(tmp_path, *extra: str, train: str, eval_: str | None = None):
    argv = ["--job-dir", str(tmp_path / "job"), "--train-files", train, "--seed", "0", *extra]
    if eval_:
        argv += ["--eval-files", eval_]
    return task.run(
        task.build_parser().parse_args(argv),
        env={"CLOUD_ML_HP_METRIC_FILE": str(tmp_path / "hypertune.metrics")},
    )


@pytest.fixture(scope="module")
def local_digits(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("digits"))
    write_digits(out, num_shards=2)
    return out


# ---------------------------------------------------------------- conversion


def test_convert_cli_writes_gzip_shards_and_schema_to_gcs(bucket, capsys):
    assert convert.main(["--input", "sklearn:digits", "--output-dir", f"{bucket}/d",
                         "--feature-name", "pixels", "--num-shards", "3", "--gzip",
                         "--log-format", "json"]) == 0  # fmt: skip
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["counts"] == {"train": 1438, "eval": 359}
    assert storage.glob(f"{bucket}/d/train-*-of-00003.tfrecord.gz") == info["files"]["train"]
    schema = Schema.load(f"{bucket}/d/schema.json")
    assert schema == SCHEMA
    ds, stats = make_dataset(f"{bucket}/d/eval-*", schema, 100, training=False)
    assert stats.records == 359 and stats.bad == 0
    # A directory or a bare * takes the shards, not the schema.json beside them.
    assert data.resolve_files(f"{bucket}/d/*") == sorted(
        info["files"]["eval"] + info["files"]["train"]
    )
    x, y = next(iter(ds))
    assert x["pixels"].shape == (100, 64) and y.dtype == tf.int64


def test_convert_csv_with_string_labels_gets_a_vocabulary(tmp_path):
    csv_path = tmp_path / "iris.csv"
    rows = ["a,b,kind"] + [f"{i},{i * 2},{'cat' if i % 2 else 'dog'}" for i in range(20)]
    csv_path.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    assert convert.main(["--input", str(csv_path), "--output-dir", str(out), "--label", "kind",
                         "--num-shards", "1", "--log-format", "json"]) == 0  # fmt: skip
    schema = Schema.load(str(out / "schema.json"))
    assert schema.feature_names == ["a", "b"]
    assert schema.label.vocabulary == ["cat", "dog"] and schema.num_classes == 2


def test_convert_names_a_missing_label_column(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(BadInputError, match="no column 'label'"):
        convert.main(["--input", str(tmp_path / "x.csv"), "--output-dir", str(tmp_path / "o")])


# ---------------------------------------------------------------- bad input


def _write_records(path: str, rows: list[dict], schema: Schema) -> None:
    with tf.io.TFRecordWriter(path) as w:
        for row in rows:
            w.write(serialize_example(row, schema))


def test_record_not_matching_schema_names_the_file_or_is_counted(tmp_path):
    x, y = digits()
    good = [{"pixels": x[i], "label": y[i]} for i in range(50)]
    _write_records(str(tmp_path / "train-0.tfrecord"), good, SCHEMA)
    short = Schema([Feature("pixels", "float32", [10])], SCHEMA.label, num_classes=10)
    bad = [{"pixels": x[i][:10], "label": y[i]} for i in range(3)]
    _write_records(str(tmp_path / "train-1.tfrecord"), good[:7] + bad, short)
    with pytest.raises(BadInputError, match=r"train-1\.tfrecord does not match the schema"):
        make_dataset(str(tmp_path / "train-*"), SCHEMA, 16, training=True)
    ds, stats = make_dataset(
        str(tmp_path / "train-*"), SCHEMA, 16, training=True, skip_bad_records=True
    )
    assert (stats.records, stats.bad) == (60, 3)
    assert sum(int(b[1].shape[0]) for b in ds) == 57


def test_skipped_records_are_reported_in_the_run_metrics(tmp_path, local_digits):
    x, y = digits()
    short = Schema([Feature("pixels", "float32", [3])], SCHEMA.label, num_classes=10)
    os.makedirs(tmp_path / "data")
    for name in os.listdir(local_digits):
        if name.startswith("train-"):
            os.symlink(os.path.join(local_digits, name), tmp_path / "data" / name)
    bad = [{"pixels": x[i][:3], "label": y[i]} for i in range(4)]
    _write_records(str(tmp_path / "data" / "train-bad.tfrecord"), bad, short)
    result = _run(
        tmp_path, "--epochs", "1", "--skip-bad-records",
        "--schema-file", os.path.join(local_digits, "schema.json"),
        train=str(tmp_path / "data" / "train-*"),
    )  # fmt: skip
    assert result.metrics["train_bad_records"] == 4
    assert result.metrics["train_records"] == 1438


def test_corrupt_shard_is_named(tmp_path, local_digits):
    (tmp_path / "train-x.tfrecord").write_bytes(b"this is not a tfrecord file at all" * 10)
    with pytest.raises(BadInputError, match=r"train-x\.tfrecord is not a readable TFRecord"):
        make_dataset(str(tmp_path / "train-*"), SCHEMA, 16, training=True)


def test_empty_dataset_is_a_clear_error(tmp_path):
    _write_records(str(tmp_path / "train-0.tfrecord"), [], SCHEMA)
    with pytest.raises(BadInputError, match="no usable records"):
        make_dataset(str(tmp_path / "train-*"), SCHEMA, 16, training=True)


def test_glob_matching_nothing_names_the_pattern(bucket):
    with pytest.raises(NotFoundError, match=r"train-\*.*--train-files matched no files"):
        make_dataset(f"{bucket}/none/train-*", SCHEMA, 16, training=True)


def test_nan_feature_values_are_named_or_skipped(tmp_path):
    x, y = digits()
    x = x[:64].copy()
    x[5, 3] = np.nan
    x[9, 0] = np.inf
    data.write_dataset({"pixels": x}, y[:64], str(tmp_path / "d"), num_shards=1, eval_fraction=0)
    shards = str(tmp_path / "d" / "train-*")
    with pytest.raises(BadInputError, match=r"train-00000-of-00001\.tfrecord has NaN or inf"):
        make_dataset(shards, SCHEMA, 16, training=True)
    ds, stats = make_dataset(shards, SCHEMA, 16, training=True, skip_bad_records=True)
    assert (stats.records, stats.bad) == (64, 2)
    assert all(np.isfinite(b[0]["pixels"].numpy()).all() for b in ds)


def test_diverging_loss_stops_with_a_clear_error(tmp_path):
    assert convert.main(["--input", "sklearn:diabetes", "--output-dir", str(tmp_path / "d"),
                         "--num-shards", "1", "--log-format", "json"]) == 0  # fmt: skip
    with pytest.raises(BadInputError, match=r"loss became NaN/inf in epoch \d; lower"):
        _run(tmp_path, "--epochs", "3", "--model", "linear", "--optimizer", "sgd",
             "--learning-rate", "1e12", train=str(tmp_path / "d" / "train-*"))  # fmt: skip
    # A diverged state is never made the one a restart resumes from.
    assert not os.path.exists(tmp_path / "job" / "keras_export")


def test_missing_job_dir_without_vertex_variables(monkeypatch, capsys, local_digits):
    for name in ("AIP_MODEL_DIR", "AIP_CHECKPOINT_DIR", "AIP_TENSORBOARD_LOG_DIR"):
        monkeypatch.delenv(name, raising=False)
    code = cli.run(task.main, ["--train-files", os.path.join(local_digits, "train-*")])
    assert code == UsageError.exit_code
    captured = capsys.readouterr()
    assert "no output location: pass --job-dir" in captured.err + captured.out


def test_unknown_flags_are_named_and_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        task.build_parser().parse_args(["--job-dir", "/tmp/j", "--lerning-rate", "0.1"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --lerning-rate" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        task.build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ("--job-dir", "--train-files", "--eval-files", "--schema-file", "--learning-rate",
                 "--batch-size", "--epochs", "--hidden-units", "--dropout", "--optimizer",
                 "--model", "--model-module", "--task", "--skip-bad-records", "--seed",
                 "--hypertune-metric", "--tune", "--max-trials", "--log-format",
                 "--log-level"):  # fmt: skip
        assert flag in text


def test_bad_hyperparameter_values_are_usage_errors(tmp_path, local_digits):
    with pytest.raises(UsageError, match="--hidden-units"):
        _run(tmp_path, "--hidden-units", "12,x", train=os.path.join(local_digits, "train-*"))
    with pytest.raises(UsageError, match="--dropout"):
        _run(tmp_path, "--dropout", "1.5", train=os.path.join(local_digits, "train-*"))


# ---------------------------------------------------------------- other inputs and models


def test_csv_and_jsonl_inputs_train(tmp_path):
    x, y = digits()
    header = ",".join([f"pixels_{i}" for i in range(64)] + ["label"])
    lines = [header] + [",".join(map(str, [*x[i], y[i]])) for i in range(300)]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    jsonl = [json.dumps({"pixels": x[i].tolist(), "label": int(y[i])}) for i in range(300, 400)]
    (tmp_path / "eval.jsonl").write_text("\n".join(jsonl) + "\n")
    SCHEMA.save(str(tmp_path / "schema.json"))
    result = _run(
        tmp_path, "--epochs", "2", "--hidden-units", "32",
        train=str(tmp_path / "train.csv"), eval_=str(tmp_path / "eval.jsonl"),
    )  # fmt: skip
    assert result.metrics["train_records"] == 300 and result.metrics["eval_records"] == 100


def test_regression_with_the_linear_model(tmp_path):
    assert convert.main(["--input", "sklearn:diabetes", "--output-dir", str(tmp_path / "d"),
                         "--num-shards", "1", "--log-format", "json"]) == 0  # fmt: skip
    result = _run(
        tmp_path, "--epochs", "2", "--model", "linear", "--learning-rate", "0.5",
        "--optimizer", "adam",
        train=str(tmp_path / "d" / "train-*"), eval_=str(tmp_path / "d" / "eval-*"),
    )  # fmt: skip
    assert "mae" in result.metrics
    loaded = tf.saved_model.load(exports.latest_export(str(tmp_path / "job" / "keras_export")))
    out = loaded.signatures["serving_default"](features=tf.zeros([3, 10]))
    assert set(out) == {"predictions"} and out["predictions"].shape == (3,)


def test_cnn_and_a_users_model_module(tmp_path, local_digits, monkeypatch):
    result = _run(tmp_path / "cnn", "--epochs", "1", "--model", "cnn",
                  train=os.path.join(local_digits, "train-*"))  # fmt: skip
    assert result.model.name == "cnn"
    (tmp_path / "my_models").mkdir()
    (tmp_path / "my_models" / "__init__.py").write_text("")
    (tmp_path / "my_models" / "tiny.py").write_text(
        textwrap.dedent("""
        import keras

        def build_model(hp, schema):
            inputs = keras.Input((64,), name="pixels")
            x = keras.layers.Dense(int(hp.get("hidden_units")[0]), activation="relu")(inputs)
            outputs = keras.layers.Dense(schema.num_classes, activation="softmax")(x)
            return keras.Model(inputs, outputs, name="users_tiny")
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    result = _run(tmp_path / "user", "--epochs", "1", "--model-module", "my_models.tiny",
                  "--hidden-units", "16", train=os.path.join(local_digits, "train-*"))  # fmt: skip
    assert result.model.name == "users_tiny"
    # A single plain input still gets the named-feature signature.
    loaded = tf.saved_model.load(result.export_path)
    assert loaded.signatures["serving_default"](pixels=tf.zeros([2, 64]))["class_id"].shape == (2,)
    with pytest.raises(UsageError, match="cannot be imported"):
        _run(tmp_path / "x", "--model-module", "no_such_pkg.mod",
             train=os.path.join(local_digits, "train-*"))  # fmt: skip


def test_vertex_variables_choose_data_and_outputs(gcs, tmp_path):
    bucket = f"gs://vx-{os.urandom(4).hex()}"
    gcs.create_bucket(bucket[5:])
    write_digits(f"{bucket}/data", num_shards=2)
    env = child_env(
        gcs.env(),
        AIP_MODEL_DIR=f"{bucket}/out/model/",
        AIP_CHECKPOINT_DIR=f"{bucket}/out/checkpoints/",
        AIP_TENSORBOARD_LOG_DIR=f"{bucket}/out/logs/",
        AIP_TRAINING_DATA_URI=f"{bucket}/data/train-*",
        AIP_VALIDATION_DATA_URI=f"{bucket}/data/eval-*",
        CLOUD_ML_JOB_ID="job-123",
        CLOUD_ML_HP_METRIC_FILE=str(tmp_path / "m"),
    )
    proc = run_task(["--epochs", "1", "--hidden-units", "16"], env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    # The SavedModel sits at the root of AIP_MODEL_DIR, where Model.upload's artifactUri points.
    assert exports.latest_export(f"{bucket}/out/model") == f"{bucket}/out/model"
    assert storage.exists(f"{bucket}/out/model/saved_model.pb")
    assert storage.exists(f"{bucket}/out/checkpoints/LATEST")
    assert storage.glob(f"{bucket}/out/logs/train/events.out.tfevents.*")
    first = json.loads(proc.stdout.splitlines()[0])
    assert first["logging.googleapis.com/labels"]["job_id"] == "job-123"
    assert first["severity"] == "INFO"
    assert not os.path.exists(tmp_path / "m")  # not a tuning trial: no hypertune file
    assert sys.executable  # the child used this interpreter (see trainer_helpers.task_cmd)
