"""User models of every kind keras.io shows, and the training options users expect."""

from __future__ import annotations

import logging
import os
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from trainer_helpers import digits, restore_logging, write_digits  # noqa: F401 (a fixture)

from jobcommon import storage
from trainer import options, task

# Model modules as the keras.io guides write them (the Sequential model and subclassing
# guides): with keras.Input, without it (built on first call), and a subclass with call().
MODEL_MODULES = {
    "sequential_with_input": """
        import keras
        from keras import layers


        def build_model(hp, schema):
            return keras.Sequential(
                [
                    keras.Input(shape=(64,)),
                    layers.Dense(64, activation="relu"),
                    layers.Dense(10, activation="softmax"),
                ]
            )
    """,
    "sequential_without_input": """
        import keras
        from keras import layers


        def build_model(hp, schema):
            model = keras.Sequential()
            model.add(layers.Dense(64, activation="relu"))
            model.add(layers.Dense(10, activation="softmax"))
            return model
    """,
    "subclassed": """
        import keras
        from keras import layers


        class DigitsModel(keras.Model):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                self.hidden = layers.Dense(64, activation="relu")
                self.classifier = layers.Dense(10, activation="softmax")

            def call(self, inputs):
                return self.classifier(self.hidden(inputs))


        def build_model(hp, schema):
            model = DigitsModel()
            model.compile(
                optimizer=keras.optimizers.Adam(1e-2),
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
            )
            return model
    """,
}


@pytest.fixture(scope="module")
def local_digits(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("digits"))
    write_digits(out, num_shards=2)
    return out


def _run(tmp_path, local_digits, *extra: str, env: dict | None = None):
    argv = [
        "--job-dir", str(tmp_path / "job"),
        "--train-files", os.path.join(local_digits, "train-*"),
        "--eval-files", os.path.join(local_digits, "eval-*"),
        "--batch-size", "32", "--seed", "0", *extra,
    ]  # fmt: skip
    return task.run(options.parse(argv, environ=env or {}))


@pytest.mark.parametrize("kind", sorted(MODEL_MODULES))
def test_user_models_of_every_kind_train_and_export(kind, tmp_path, local_digits, monkeypatch):
    module = f"user_model_{kind}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(MODEL_MODULES[kind]))
    monkeypatch.syspath_prepend(str(tmp_path))
    result = _run(tmp_path, local_digits, "--model-module", module, "--epochs", "4")
    assert result.metrics["accuracy"] >= 0.85
    assert result.metrics["eval_records"] == 359

    # The served SavedModel takes the named feature and agrees with the trained model.
    local = str(tmp_path / "export")
    storage.copy_tree(result.export_path, local)
    x, _ = digits()
    expected = result.model.predict(x[:50], verbose=0)
    served = tf.saved_model.load(local).signatures["serving_default"](pixels=tf.constant(x[:50]))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(served["class_id"].numpy(), expected.argmax(axis=1))


def test_early_stopping_stops_and_restores_the_best_weights(tmp_path, local_digits):
    # SGD at a learning rate this high makes the validation accuracy stall within epochs.
    result = _run(
        tmp_path, local_digits, "--optimizer", "sgd", "--learning-rate", "2.0",
        "--epochs", "20", "--early-stopping-patience", "2",
    )  # fmt: skip
    trained = result.metrics["epochs_trained"]
    val_accuracy = result.history["metrics"]["val_accuracy"]
    assert 3 <= trained < 20 and len(val_accuracy) == trained
    # The last epochs did not improve; the model that was exported is the best epoch's.
    assert max(val_accuracy[-2:]) <= max(val_accuracy)
    assert result.metrics["accuracy"] == pytest.approx(max(val_accuracy), abs=1e-6)


def test_balanced_class_weights_match_scikit_learn(tmp_path, local_digits):
    from sklearn.utils.class_weight import compute_class_weight

    from trainer.data import write_dataset

    # Imbalanced digits: class 0 keeps all its rows, the others a quarter of theirs.
    x, y = digits()
    keep = (y == 0) | (np.arange(len(y)) % 4 == 0)
    data = write_dataset({"pixels": x[keep]}, y[keep], str(tmp_path / "imb"), num_shards=1)
    argv = [
        "--job-dir", str(tmp_path / "job"), "--train-files", data.splits["train"][0],
        "--epochs", "1", "--seed", "0", "--class-weight", "balanced",
    ]  # fmt: skip
    opts = options.parse(argv, environ={})
    loaded = task.load_data(opts, str(tmp_path / "scratch"))
    labels = np.concatenate([b.numpy() for _, b in loaded.train])
    expected = compute_class_weight("balanced", classes=np.arange(10), y=labels)
    weights = task.class_weights(opts, loaded)
    np.testing.assert_allclose([weights[c] for c in range(10)], expected, rtol=1e-6)
    assert weights[0] < weights[1]
    assert task.run(opts).metrics["train_records"] == len(labels)


def test_mixed_precision_on_a_cpu_warns_and_trains_in_float32(tmp_path, local_digits, caplog):
    import keras

    with caplog.at_level(logging.WARNING, logger="trainer.tensorflow"):
        result = _run(tmp_path, local_digits, "--mixed-precision", "--epochs", "1")
    assert any("no GPU" in r.getMessage() for r in caplog.records)
    assert keras.mixed_precision.global_policy().name == "float32"
    assert result.model.layers[-1].compute_dtype == "float32"
    assert result.export_path
