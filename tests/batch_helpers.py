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


def save_bytes_model(path: str) -> np.ndarray:
    """A plain TF SavedModel (not Keras) whose one input is raw float32 bytes (64 floats);
    returns its weights, so rows can be checked against ``x @ weights``."""
    import tensorflow as tf

    weights = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")

    class RawPixels(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(weights)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve(self, image_bytes):
            x = tf.reshape(tf.io.decode_raw(image_bytes, tf.float32), [-1, 64])
            return {"scores": tf.matmul(x, self.w)}

    module = RawPixels()
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return weights


WINE_COLUMNS = ("alcohol", "malic_acid", "ash")


def save_columns_model(path: str) -> np.ndarray:
    """A plain TF SavedModel with one float input per wine column (scalars) and a
    tf.Example signature without a schema file; returns the weights (score = x @ w)."""
    import tensorflow as tf

    weights = np.array([0.5, -1.25, 2.0], dtype="float32")
    specs = [tf.TensorSpec([None], tf.float32, name=c) for c in WINE_COLUMNS]

    class Columns(tf.Module):
        @tf.function(input_signature=specs)
        def serve(self, alcohol, malic_acid, ash):
            return {"score": alcohol * weights[0] + malic_acid * weights[1] + ash * weights[2]}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve_examples(self, examples):
            features = {c: tf.io.FixedLenFeature([], tf.float32) for c in WINE_COLUMNS}
            parsed = tf.io.parse_example(examples, features)
            return self.serve(**parsed)

    module = Columns()
    tf.saved_model.save(
        module,
        path,
        signatures={
            "serving_default": module.serve,
            "serving_tf_example": module.serve_examples,
        },
    )
    return weights


def save_failing_model(path: str) -> None:
    """A model that fails on some instances the input checks cannot catch: an assertion
    on ``x`` (must be non-negative) and a lookup ``table[i]`` out of range for i >= 4."""
    import tensorflow as tf

    class Failing(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.float32, name="x"),
                tf.TensorSpec([None], tf.int64, name="i"),
            ]
        )
        def serve(self, x, i):
            check = tf.debugging.assert_non_negative(x, message="x must be non-negative")
            with tf.control_dependencies([check]):
                looked_up = tf.gather(tf.constant([10.0, 20.0, 30.0, 40.0]), i)
            return {"y": x + looked_up}

    module = Failing()
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})


def vertex_outputs(prefix: str, display_name: str) -> dict:
    """The one ``prediction-<display_name>-<time>`` directory under ``prefix`` and its rows."""
    dirs = {p.rsplit("/", 1)[0] for p in storage.glob(f"{prefix}/prediction-{display_name}-*/*")}
    assert len(dirs) == 1, dirs
    (run_dir,) = dirs

    def rows(pattern: str) -> list[dict]:
        found = []
        for path in sorted(storage.glob(f"{run_dir}/{pattern}")):
            found += [orjson.loads(ln) for ln in storage.read_text(path).splitlines() if ln]
        return found

    return {
        "dir": run_dir,
        "files": sorted(p.rsplit("/", 1)[1] for p in storage.glob(f"{run_dir}/*")),
        "predictions": rows("predictions_*.jsonl"),
        "errors": rows("errors_*.jsonl"),
        "stats": orjson.loads(storage.read_text(f"{run_dir}/completion_stats.json")),
    }
