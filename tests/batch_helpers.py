"""Shared pieces of the batch prediction tests: a trained model, inputs, reading outputs."""

from __future__ import annotations

import gzip
import json
import os
import uuid

import numpy as np
import orjson
import pytest

from jobcommon import storage
from jobcommon.schema import Feature, Schema

N = 200

FEATURE = "pixels"


def train_digits_model(epochs: int = 3):
    """A small Keras 3 classifier really trained on scikit-learn's digits (8x8 images)."""
    import keras
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int64")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,), name=FEATURE)
    hidden = keras.layers.Dense(32, activation="relu")(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    schema = Schema(
        features=[Feature(FEATURE, "float32", [64])],
        label=Feature("label", "int64", []),
        task="classification",
        num_classes=10,
    )
    return model, schema, x, y


def example_bytes(row: np.ndarray, key: int | None = None, name: str = FEATURE) -> bytes:
    import tensorflow as tf

    feature = {name: tf.train.Feature(float_list=tf.train.FloatList(value=row.tolist()))}
    if key is not None:
        feature["id"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[key]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_lines(path: str, lines: list[bytes | str]) -> None:
    data = b"".join((ln.encode() if isinstance(ln, str) else ln) + b"\n" for ln in lines)
    storage.write_bytes(path, data)


def json_line(value) -> bytes:
    return json.dumps(value).encode()


def write_tfrecords(path: str, records: list[bytes], compress: bool = False) -> None:
    from batch.tfrecords import frame

    data = b"".join(frame(r) for r in records)
    storage.write_bytes(path, gzip.compress(data) if compress else data)


def read_rows(output_path: str, prefix: str) -> list[dict]:
    """Every JSON line of every shard ``<output_path>/<prefix>-*``."""
    rows = []
    for path in storage.glob(storage.join(output_path, prefix + "-*")):
        rows += [orjson.loads(ln) for ln in storage.read_text(path).splitlines() if ln.strip()]
    return rows


def read_stats(output_path: str) -> dict:
    rows = read_rows(output_path, "prediction.errors_stats")
    assert len(rows) == 1, rows
    return rows[0]


def local_args() -> list[str]:
    """Beam options for in-process runs: one worker in this process (no start-up cost)."""
    return ["--direct_num_workers=1", "--direct_running_mode=in_memory"]


def repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session", name="trained")
def trained_fixture(gcs):
    """One trained model per session, exported twice under keras_export/ in the emulator."""
    from trainer.export import export_model

    model, schema, x, _ = train_digits_model()
    name = f"models-{uuid.uuid4().hex[:8]}"
    gcs.create_bucket(name)
    job_dir = f"gs://{name}/job"
    export_model(model, schema, job_dir)  # an older export: the newest must be picked
    newest = export_model(model, schema, job_dir)
    # An export still uploading (no marker yet) is newer than both and must be skipped.
    storage.write_text(storage.join(job_dir, "keras_export", "99999999T999999Z", "x.txt"), "")
    x = x[:N]
    expected = model.predict(x, verbose=0)
    return {"model_dir": f"{job_dir}/keras_export", "export": newest, "x": x, "expected": expected}
