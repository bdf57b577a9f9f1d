"""The SavedModel signature contract and the atomic export layout."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from jobcommon import exports, storage
from jobcommon.errors import NotFoundError
from jobcommon.schema import Feature, Schema
from trainer import export, models
from trainer.data import serialize_example

MIXED = Schema(
    features=[Feature("size", "float32", [3]), Feature("rooms", "int64", [])],
    label=Feature("price", "float32", []),
    task="regression",
)


@pytest.fixture(scope="module")
def regression_model():
    model = models.build(models.HParams(hidden_units=(8,)), MIXED)
    rng = np.random.default_rng(0)
    x = {"size": rng.random((32, 3), np.float32), "rooms": rng.integers(1, 6, 32)}
    model.fit(x, rng.random(32, np.float32), epochs=1, verbose=0)
    return model, x


def test_signatures_take_named_features_and_examples(regression_model, tmp_path):
    model, x = regression_model
    export.write_savedmodel(model, MIXED, str(tmp_path))
    loaded = tf.saved_model.load(str(tmp_path))
    default = loaded.signatures["serving_default"]
    _, inputs = default.structured_input_signature
    assert {k: (v.dtype, v.shape.as_list()) for k, v in inputs.items()} == {
        "size": (tf.float32, [None, 3]),
        "rooms": (tf.int64, [None]),
    }
    expected = model.predict(x, verbose=0)[:, 0]
    out = default(size=tf.constant(x["size"]), rooms=tf.constant(x["rooms"]))
    assert set(out) == {"predictions"}
    np.testing.assert_allclose(out["predictions"].numpy(), expected, rtol=1e-5, atol=1e-6)

    records = [
        serialize_example({"size": x["size"][i], "rooms": x["rooms"][i]}, MIXED, with_label=False)
        for i in range(32)
    ]
    by_example = loaded.signatures[exports.TF_EXAMPLE_SIGNATURE](examples=tf.constant(records))
    np.testing.assert_allclose(by_example["predictions"].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_export_model_writes_marker_last_and_readers_skip_partial_exports(regression_model, bucket):
    model, _ = regression_model
    job = f"{bucket}/job"
    # An export whose upload died: files but no marker. Readers must not pick it.
    storage.write_text(f"{job}/keras_export/99990101T000000Z/saved_model.pb", "partial")
    with pytest.raises(NotFoundError):
        exports.latest_export(f"{job}/keras_export")
    path = export.export_model(model, MIXED, job, {"notes.txt": "hello", "bin.dat": b"\x00\x01"})
    assert exports.latest_export(f"{job}/keras_export") == path
    assert storage.read_text(f"{path}/notes.txt") == "hello"
    assert storage.read_bytes(f"{path}/bin.dat") == b"\x00\x01"
    assert Schema.load(f"{path}/schema.json") == MIXED
    assert storage.exists(f"{path}/model.keras")
    assert storage.read_text(f"{path}/{exports.EXPORT_MARKER}").strip() == path.rsplit("/", 1)[1]
    # A second export (even within the same second) gets its own name and is the newest.
    second = export.export_model(model, MIXED, job)
    assert second != path
    assert exports.latest_export(f"{job}/keras_export") == second


def test_write_savedmodel_refuses_gcs_paths(regression_model):
    with pytest.raises(ValueError, match="writes locally"):
        export.write_savedmodel(regression_model[0], MIXED, "gs://bucket/x")
