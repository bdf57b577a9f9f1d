"""The built-in model families and loading a user's own ``build_model``.

Every model takes a dict of feature tensors keyed by schema feature name (one
``keras.Input`` per feature), so the export's ``serving_default`` maps JSON instances onto it.

- ``mlp`` (default): the flattened features -> ``Dense(512, relu)`` -> softmax, the network
  of the original notebook; ``--hidden-units 256,128`` stacks more layers.
- ``cnn``: for small images; a flat feature whose size is a perfect square (64 -> 8x8) is
  reshaped to a one-channel image.
- ``linear``: a single Dense layer (logistic / linear regression).

A user's module (``--model-module my_pkg.my_model``) defines ``build_model(hp, schema)``
returning a compiled or uncompiled ``keras.Model``; ``hp`` is a keras-tuner
``HyperParameters`` during a search and a :class:`HParams` otherwise.

Example:
    >>> model = build_model(HParams(), schema)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import math
from dataclasses import asdict, dataclass
from typing import Any

import keras

from jobcommon.errors import UsageError
from jobcommon.schema import Schema
from trainer import preprocessing

MODELS = ("mlp", "cnn", "linear")
OPTIMIZERS = ("adam", "rmsprop", "sgd", "adagrad")


@dataclass
class HParams:
    """Plain hyperparameters, readable like keras-tuner's (``hp.get("learning_rate")``)."""

    model: str = "mlp"
    learning_rate: float = 1e-3
    hidden_units: tuple[int, ...] = (512,)
    dropout: float = 0.0
    optimizer: str = "rmsprop"

    def get(self, name: str) -> Any:
        return getattr(self, name)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden_units"] = list(self.hidden_units)
        return d


def parse_hidden_units(text: str) -> tuple[int, ...]:
    """``"256,128"`` -> ``(256, 128)``; raises UsageError naming the flag when malformed."""
    try:
        units = tuple(int(u) for u in str(text).replace(" ", "").split(",") if u)
    except ValueError as exc:
        raise UsageError(
            f"--hidden-units {text!r}: give comma-separated positive integers, e.g. 256,128"
        ) from exc
    if not units or any(u <= 0 for u in units):
        raise UsageError(f"--hidden-units {text!r}: give positive integers, e.g. 512 or 256,128")
    return units


def _inputs(schema: Schema) -> dict[str, keras.KerasTensor]:
    return preprocessing.model_inputs(schema)


def _flat(inputs: dict[str, keras.KerasTensor], schema: Schema):
    return preprocessing.concatenated(schema, inputs)


def _head(x, schema: Schema):
    if schema.task == "classification":
        if not schema.num_classes or schema.num_classes < 2:
            raise UsageError("a classification schema needs num_classes >= 2")
        return keras.layers.Dense(schema.num_classes, activation="softmax", name="probabilities")(x)
    return preprocessing.regression_output(x, schema)


def _image_of(schema: Schema, inputs) -> keras.KerasTensor:
    if len(schema.features) != 1:
        raise UsageError("--model cnn takes one image feature; this schema has several")
    f = schema.features[0]
    x = keras.ops.cast(inputs[f.input_name], "float32")
    if len(f.shape) == 1:
        side = math.isqrt(f.shape[0])
        if side * side != f.shape[0]:
            raise UsageError(
                f"--model cnn: feature {f.name!r} has {f.shape[0]} values, not a square image; "
                "store it with shape [height, width] or [height, width, channels]"
            )
        return keras.layers.Reshape((side, side, 1))(x)
    if len(f.shape) == 2:
        return keras.layers.Reshape((*f.shape, 1))(x)
    if len(f.shape) == 3:
        return x
    raise UsageError(f"--model cnn: feature {f.name!r} has shape {f.shape}, not an image")


def build_builtin(hp: Any, schema: Schema, model: str | None = None) -> keras.Model:
    """One of :data:`MODELS`, uncompiled; ``hp`` gives hidden_units and dropout."""
    model = model or hp.get("model")
    inputs = _inputs(schema)
    units = _units(hp)
    dropout = float(hp.get("dropout"))
    if model == "linear":
        x = _flat(inputs, schema)
    elif model == "mlp":
        x = _flat(inputs, schema)
        for i, n in enumerate(units):
            x = keras.layers.Dense(n, activation="relu", name=f"dense_{i}")(x)
            if dropout:
                x = keras.layers.Dropout(dropout)(x)
    elif model == "cnn":
        x = _image_of(schema, inputs)
        side = min(x.shape[1], x.shape[2])
        x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
        if side >= 8:
            x = keras.layers.MaxPooling2D()(x)
        x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        if dropout:
            x = keras.layers.Dropout(dropout)(x)
        x = keras.layers.Dense(units[0], activation="relu")(x)
    else:
        raise UsageError(f"--model {model!r}: choose one of {', '.join(MODELS)}")
    return keras.Model(inputs, _head(x, schema), name=model)


def _units(hp: Any) -> tuple[int, ...]:
    units = hp.get("hidden_units")
    if isinstance(units, str | int):
        return parse_hidden_units(str(units))
    return tuple(int(u) for u in units)


def load_user_builder(module_name: str):
    """The ``build_model(hp, schema)`` function of a user's module."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(
            f"--model-module {module_name!r} cannot be imported ({exc}); install it in the image "
            "or put it on PYTHONPATH"
        ) from exc
    fn = getattr(module, "build_model", None)
    if not callable(fn):
        raise UsageError(f"--model-module {module_name!r} has no build_model(hp, schema) function")
    return fn


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    classes = {
        "adam": keras.optimizers.Adam,
        "rmsprop": keras.optimizers.RMSprop,
        "sgd": keras.optimizers.SGD,
        "adagrad": keras.optimizers.Adagrad,
    }
    if name not in classes:
        raise UsageError(f"--optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}")
    return classes[name](learning_rate=learning_rate)


def compile_model(model: keras.Model, schema: Schema, optimizer: str, learning_rate: float):
    """Compile with the task's loss and metric unless the user's builder already did."""
    if schema.task == "classification":
        loss, metrics = "sparse_categorical_crossentropy", ["accuracy"]
    else:
        loss, metrics = "mse", ["mae"]
    model.compile(optimizer=make_optimizer(optimizer, learning_rate), loss=loss, metrics=metrics)
    return model


def build(hp: Any, schema: Schema, model_module: str | None = None) -> keras.Model:
    """Build and compile the chosen model (built-in or a user's ``build_model``).

    Example:
        >>> m = build(HParams(model="mlp", hidden_units=(64,)), schema)  # doctest: +SKIP
    """
    if model_module:
        model = load_user_builder(model_module)(hp, schema)
        if not isinstance(model, keras.Model):
            raise UsageError(f"--model-module {model_module}: build_model must return a Model")
    else:
        model = build_builtin(hp, schema)
    if not model.compiled:
        compile_model(model, schema, hp.get("optimizer"), float(hp.get("learning_rate")))
    return model
