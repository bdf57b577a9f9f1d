"""The built-in model families, the optimizer and task registries, and a user's own model.

Every built-in model takes a dict of feature tensors keyed by schema feature name (one
``keras.Input`` per feature), so the export's ``serving_default`` maps JSON instances onto it.

- ``mlp`` (default): the flattened features -> ``Dense(512, relu)`` -> softmax, the network
  of the original notebook; ``--hidden-units 256,128`` stacks more layers.
- ``cnn``: for small images; a flat feature whose size is a perfect square (64 -> 8x8) is
  reshaped to a one-channel image.
- ``linear``: a single Dense layer (logistic / linear regression).

A user's module (``--model-module my_pkg.my_model``) defines ``build_model(hp, schema)``
returning a compiled or uncompiled ``keras.Model`` of any kind: functional, ``Sequential``
(with or without ``keras.Input``) or a subclass with ``call()``. ``hp`` is a keras-tuner
``HyperParameters`` during a search and a :class:`HParams` otherwise. Which input it takes
(the feature dict, or the lone tensor of a one-feature schema) is decided from public Keras
API: :func:`takes_dict`.

Keras is imported when a model is built, not when this module is: the registries below are
what the command line lists.

Example:
    >>> sorted(MODELS), sorted(OPTIMIZERS), TASKS["regression"].default_metric
    (['cnn', 'linear', 'mlp'], ['adagrad', 'adam', 'rmsprop', 'sgd'], 'loss')
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from jobcommon.errors import UsageError
from jobcommon.schema import Schema

# Keras optimizer class names (``keras.optimizers.<name>``) by flag value.
OPTIMIZERS = {"adam": "Adam", "rmsprop": "RMSprop", "sgd": "SGD", "adagrad": "Adagrad"}


@dataclass(frozen=True)
class Task:
    """How a task is compiled and which epoch metric it is judged by."""

    loss: str
    metrics: tuple[str, ...]
    default_metric: str  # without the ``val_`` prefix
    direction: str  # "max" or "min" for default_metric

    def objective(self, has_eval: bool, explicit: str | None = None) -> str:
        """The metric to report and tune on: ``explicit``, else the task's (``val_`` if eval).

        Example:
            >>> TASKS["classification"].objective(True), TASKS["regression"].objective(False)
            ('val_accuracy', 'loss')
        """
        if explicit:
            return explicit
        return f"val_{self.default_metric}" if has_eval else self.default_metric


TASKS = {
    "classification": Task("sparse_categorical_crossentropy", ("accuracy",), "accuracy", "max"),
    "regression": Task("mse", ("mae",), "loss", "min"),
}


def direction_of(metric: str) -> str:
    """``"min"`` for losses and errors, ``"max"`` otherwise.

    Example:
        >>> direction_of("val_loss"), direction_of("val_accuracy"), direction_of("mae")
        ('min', 'max', 'min')
    """
    return "min" if "loss" in metric or "error" in metric or metric.endswith("mae") else "max"


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


def hparams_dict(hp: Any) -> dict[str, Any]:
    """The values of :class:`HParams` or of keras-tuner's ``HyperParameters``, for the logs."""
    return hp.as_dict() if hasattr(hp, "as_dict") else dict(hp.values)


def parse_hidden_units(text: str) -> tuple[int, ...]:
    """``"256,128"`` -> ``(256, 128)``; raises UsageError naming the flag when malformed.

    Example:
        >>> parse_hidden_units("256, 128")
        (256, 128)
    """
    try:
        units = tuple(int(u) for u in str(text).replace(" ", "").split(",") if u)
    except ValueError as exc:
        raise UsageError(
            f"--hidden-units {text!r}: give comma-separated positive integers, e.g. 256,128"
        ) from exc
    if not units or any(u <= 0 for u in units):
        raise UsageError(f"--hidden-units {text!r}: give positive integers, e.g. 512 or 256,128")
    return units


def _inputs(schema: Schema) -> dict:
    from trainer import preprocessing

    return preprocessing.model_inputs(schema)


def _flat(inputs: dict, schema: Schema):
    from trainer import preprocessing

    return preprocessing.concatenated(schema, inputs)


def _head(x, schema: Schema):
    import keras

    if schema.task == "classification":
        if not schema.num_classes or schema.num_classes < 2:
            raise UsageError("a classification schema needs num_classes >= 2")
        # float32 outputs also under mixed precision: softmax in float16 is unstable.
        return keras.layers.Dense(
            schema.num_classes, activation="softmax", name="probabilities", dtype="float32"
        )(x)
    from trainer import preprocessing

    return preprocessing.regression_output(x, schema)


def _image_of(schema: Schema, inputs):
    import keras

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


def _linear(hp: Any, schema: Schema, inputs: dict):
    return _flat(inputs, schema)


def _mlp(hp: Any, schema: Schema, inputs: dict):
    import keras

    x = _flat(inputs, schema)
    dropout = float(hp.get("dropout"))
    for i, n in enumerate(_units(hp)):
        x = keras.layers.Dense(n, activation="relu", name=f"dense_{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout)(x)
    return x


def _cnn(hp: Any, schema: Schema, inputs: dict):
    import keras

    x = _image_of(schema, inputs)
    side = min(x.shape[1], x.shape[2])
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    if side >= 8:
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dropout = float(hp.get("dropout"))
    if dropout:
        x = keras.layers.Dropout(dropout)(x)
    return keras.layers.Dense(_units(hp)[0], activation="relu")(x)


# The body of each built-in family: (hp, schema, inputs) -> the tensor the head goes on.
MODELS: dict[str, Callable[[Any, Schema, dict], Any]] = {
    "mlp": _mlp,
    "cnn": _cnn,
    "linear": _linear,
}


def build_builtin(hp: Any, schema: Schema, model: str | None = None):
    """One of :data:`MODELS`, uncompiled; ``hp`` gives hidden_units and dropout."""
    import keras

    model = model or hp.get("model")
    if model not in MODELS:
        raise UsageError(f"--model {model!r}: choose one of {', '.join(MODELS)}")
    inputs = _inputs(schema)
    return keras.Model(inputs, _head(MODELS[model](hp, schema, inputs), schema), name=model)


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


def make_optimizer(name: str, learning_rate: float):
    """The Keras optimizer registered under ``name`` in :data:`OPTIMIZERS`."""
    import keras

    if name not in OPTIMIZERS:
        raise UsageError(f"--optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}")
    return getattr(keras.optimizers, OPTIMIZERS[name])(learning_rate=learning_rate)


def compile_model(model, schema: Schema, optimizer: str, learning_rate: float):
    """Compile with the task's loss and metric (see :data:`TASKS`)."""
    task = TASKS[schema.task]
    model.compile(
        optimizer=make_optimizer(optimizer, learning_rate),
        loss=task.loss,
        metrics=list(task.metrics),
    )
    return model


def takes_dict(model, schema: Schema) -> bool:
    """Whether ``model`` is called with the feature dict (else: the lone feature tensor).

    A model whose inputs are known (functional, or Sequential given ``keras.Input``) says so
    through ``model.input``; a Sequential without ``Input`` or a subclass is called with the
    lone tensor of a one-feature schema and with the dict otherwise.
    """
    try:
        structure = model.input
    except (AttributeError, ValueError):
        return len(schema.features) != 1
    return isinstance(structure, dict) or len(schema.features) != 1


def model_inputs(model, schema: Schema, features: dict):
    """What to pass to ``model``: the feature dict, or the lone tensor for one-input models."""
    if takes_dict(model, schema):
        return features
    return features[schema.features[0].input_name]


def ensure_built(model, schema: Schema) -> None:
    """Build a model that has no weights yet (Sequential without Input, subclass) on one batch.

    ``BackupAndRestore`` and the export need the weights to exist before ``fit()``; calling
    the model on a batch of zeros shaped like the schema creates them.
    """
    if model.built and model.weights:
        return
    import numpy as np

    zeros = {
        f.input_name: np.zeros([1, *f.shape], "float32" if f.dtype == "float32" else f.dtype)
        for f in schema.features
        if f.dtype != "string"
    }
    if len(zeros) != len(schema.features):
        raise UsageError(
            "--model-module: the model has no keras.Input and the schema has string features; "
            "start the model with keras.Input(...) so its inputs are known"
        )
    try:
        model(model_inputs(model, schema, zeros), training=False)
    except Exception as exc:  # noqa: BLE001 (the user's model: say which call failed, once)
        from jobcommon.errors import first_line

        raise UsageError(
            f"--model-module: calling the model on a batch shaped like the schema's features "
            f"({', '.join(f'{f.name}{[None, *f.shape]}' for f in schema.features)}) failed: "
            f"{first_line(exc)}"
        ) from exc


def build_user(hp: Any, schema: Schema, model_module: str):
    """The model a user's ``build_model(hp, schema)`` returns, with its weights built."""
    import keras

    model = load_user_builder(model_module)(hp, schema)
    if not isinstance(model, keras.Model):
        raise UsageError(f"--model-module {model_module}: build_model must return a Model")
    ensure_built(model, schema)
    return model


def build(hp: Any, schema: Schema, model_module: str | None = None, compile_as: Any = None):
    """Build and compile the chosen model (built-in or a user's ``build_model``).

    An uncompiled model is compiled with the optimizer and learning rate of ``compile_as``
    (an :class:`HParams`; default ``hp``), so a user's model built from keras-tuner's
    ``HyperParameters`` still gets the flags' optimizer.

    Example:
        >>> m = build(HParams(model="mlp", hidden_units=(64,)), schema)  # doctest: +SKIP
    """
    model = build_user(hp, schema, model_module) if model_module else build_builtin(hp, schema)
    if not model.compiled:
        source = compile_as or hp
        compile_model(model, schema, source.get("optimizer"), float(source.get("learning_rate")))
    return model
