"""Train on digits from TFRecord shards in the fake GCS to an export in the fake GCS."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from trainer_helpers import new_bucket, read_text, restore_logging, write_digits  # noqa: F401 (a fixture)

from jobcommon import exports, storage
from jobcommon.schema import Schema
from trainer import task, vertex_hypertune
from trainer.data import serialize_example

EPOCHS = 12


@pytest.fixture(scope="module")
def trained(gcs, tmp_path_factory):
    """One real training run (default MLP), shared by the tests of this module."""
    bucket = new_bucket(gcs)
    data = write_digits(f"{bucket}/digits")
    metric_file = str(tmp_path_factory.mktemp("hp") / "output.metrics")
    os.environ["CLOUD_ML_HP_METRIC_FILE"] = metric_file
    argv = [
        "--job-dir", f"{bucket}/job",
        "--train-files", f"{bucket}/digits/train-*",
        "--eval-files", f"{bucket}/digits/eval-*",
        "--epochs", str(EPOCHS), "--batch-size", "32", "--seed", "7",
    ]  # fmt: skip
    try:
        result = task.run(task.build_parser().parse_args(argv))
    finally:
        del os.environ["CLOUD_ML_HP_METRIC_FILE"]
    local = str(tmp_path_factory.mktemp("export"))
    storage.copy_tree(result.export_path, local)
    return {
        "bucket": bucket, "data": data, "result": result, "local": local, "argv": argv,
        "metric_file": metric_file,
    }  # fmt: skip


def _eval_arrays(trained) -> tuple[np.ndarray, np.ndarray]:
    feats, labels = [], []
    for path in trained["data"].splits["eval"]:
        local = os.path.join(trained["local"], "..", os.path.basename(path))
        storage.download_file(path, local)
        for rec in tf.data.TFRecordDataset(local):
            ex = tf.train.Example.FromString(rec.numpy())
            feats.append(list(ex.features.feature["pixels"].float_list.value))
            labels.append(ex.features.feature["label"].int64_list.value[0])
    return np.array(feats, np.float32), np.array(labels)


def test_default_mlp_reaches_95_percent_on_held_out_digits(trained):
    metrics = trained["result"].metrics
    assert metrics["eval_records"] == 359
    assert metrics["accuracy"] >= 0.95
    # The reloaded export agrees on the held-out split.
    x, y = _eval_arrays(trained)
    loaded = tf.saved_model.load(trained["local"])
    out = loaded.signatures["serving_default"](pixels=tf.constant(x))
    assert np.mean(out["class_id"].numpy() == y) >= 0.95


def test_export_is_complete_and_newest_in_gcs(trained):
    path = trained["result"].export_path
    assert path.startswith(trained["bucket"] + "/job/keras_export/")
    assert exports.latest_export(trained["bucket"] + "/job/keras_export") == path
    names = {os.path.relpath(f, trained["local"]) for f in storage.list_files(trained["local"])}
    for expected in ("saved_model.pb", "model.keras", "schema.json", "history.json",
                     "metrics.json", "training.png", "hyperparameters.json",
                     exports.EXPORT_MARKER):  # fmt: skip
        assert expected in names
    assert Schema.load(os.path.join(trained["local"], "schema.json")) == trained["data"].schema
    with open(os.path.join(trained["local"], "training.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    history = json.loads(read_text(os.path.join(trained["local"], "history.json")))
    assert len(history["metrics"]["loss"]) == len(history["metrics"]["val_loss"]) == EPOCHS


def test_both_signatures_match_the_in_memory_model(trained):
    x, _ = _eval_arrays(trained)
    model = trained["result"].model
    expected = model.predict({"pixels": x}, verbose=0)
    loaded = tf.saved_model.load(trained["local"])
    by_name = loaded.signatures["serving_default"](pixels=tf.constant(x))
    np.testing.assert_allclose(by_name["probabilities"].numpy(), expected, atol=1e-5)
    assert by_name["class_id"].dtype == tf.int64
    np.testing.assert_array_equal(by_name["class_id"].numpy(), expected.argmax(axis=1))

    schema = trained["data"].schema
    serialized = [serialize_example({"pixels": row}, schema, with_label=False) for row in x]
    by_example = loaded.signatures[exports.TF_EXAMPLE_SIGNATURE](examples=tf.constant(serialized))
    np.testing.assert_allclose(by_example["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(by_example["class_id"].numpy(), expected.argmax(axis=1))

    import keras

    reloaded = keras.models.load_model(os.path.join(trained["local"], "model.keras"))
    np.testing.assert_allclose(reloaded.predict({"pixels": x}, verbose=0), expected, atol=1e-5)


def test_tensorboard_logs_and_checkpoints_uploaded(trained):
    logs = storage.list_files(trained["bucket"] + "/job/logs")
    assert any("/train/events.out.tfevents" in f for f in logs)
    assert any("/validation/events.out.tfevents" in f for f in logs)
    assert storage.read_text(trained["bucket"] + "/job/checkpoints/LATEST").strip() == str(EPOCHS)


def test_hypertune_file_is_written_only_in_a_tuning_trial(trained):
    # No CLOUD_ML_TRIAL_ID: not a tuning-service trial, so no metric file (see
    # test_trainer_tuning for the file a trial writes after each epoch).
    assert not os.path.exists(trained["metric_file"])


def test_rerun_of_a_finished_job_does_not_train_again(trained):
    again = task.run(task.build_parser().parse_args(trained["argv"]))
    assert again.skipped and again.export_path == trained["result"].export_path
    assert len(storage.list_dir(trained["bucket"] + "/job/keras_export")) == 1


def test_hypertune_writer_keeps_at_most_100_reports(tmp_path):
    writer = vertex_hypertune.HypertuneWriter(str(tmp_path / "m" / "out.metrics"), trial="3")
    for step in range(1, 106):
        writer.report("val_accuracy", step / 1000, step)
    lines = [json.loads(s) for s in read_text(tmp_path / "m" / "out.metrics").splitlines()]
    assert len(lines) == 100
    assert lines[0]["global_step"] == "6" and lines[-1]["global_step"] == "105"
    assert lines[-1] == {**lines[-1], "trial": "3", "val_accuracy": "0.105"}
