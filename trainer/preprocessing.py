"""The model's first layers for tabular features, so the served model takes raw values.

Built from the schema's training statistics (see :mod:`trainer.tabular`), not from a pass of
its own over the data:

- a numeric feature with a training ``mean``: a Keras ``Normalization`` layer with the
  training mean and variance, then missing values (NaN) become 0, the mean;
- a numeric feature without statistics (data written by :mod:`trainer.convert`): as is;
- a categorical feature: a ``StringLookup`` over its vocabulary, one-hot (a value not seen in
  training falls in the lookup's unknown bucket; a missing value is its own category);
- a regression target with statistics: the last Dense unit's output is scaled back to the
  target's mean and spread (``Rescaling``), so the network learns a standardised target.

Only stock Keras layers and ops are used: ``model.keras`` loads without this module.

Example:
    >>> from jobcommon.schema import Feature, Schema
    >>> schema = Schema([Feature("mean radius", "float32", mean=14.0, variance=12.0),
    ...                  Feature("kind", "string", vocabulary=["", "a", "b"])],
    ...                 Feature("y", "int64"), num_classes=2)
    >>> inputs = model_inputs(schema)
    >>> sorted(inputs), [tuple(t.shape) for t in encoded_features(schema, inputs)]
    (['kind', 'mean_radius'], [(None, 1), (None, 4)])
"""

from __future__ import annotations

import math

import keras

from jobcommon.errors import UsageError
from jobcommon.schema import Feature, Schema


def model_inputs(schema: Schema) -> dict[str, keras.KerasTensor]:
    """One ``keras.Input`` per feature, keyed and named by the feature's input name."""
    for f in schema.features:
        if f.dtype == "string" and not f.vocabulary:
            raise UsageError(
                f"feature {f.name!r} is a string without a vocabulary: the built-in models "
                "take numbers or categories; give it a vocabulary in the schema or pass "
                "--model-module with your own model"
            )
    return {
        f.input_name: keras.Input(shape=tuple(f.shape), name=f.input_name, dtype=f.dtype)
        for f in schema.features
    }


def encoded_features(
    schema: Schema, inputs: dict[str, keras.KerasTensor]
) -> list[keras.KerasTensor]:
    """Each feature as a float32 ``[batch, k]`` tensor: imputed, normalised or one-hot."""
    return [_encode(f, inputs[f.input_name]) for f in schema.features]


def _encode(f: Feature, t: keras.KerasTensor) -> keras.KerasTensor:
    name = f.input_name
    if f.dtype == "string":
        lookup = keras.layers.StringLookup(
            vocabulary=f.vocabulary, output_mode="one_hot", name=f"lookup_{name}"
        )
        return keras.ops.cast(lookup(t), "float32")
    t = keras.ops.cast(t, "float32")
    if len(t.shape) == 1:  # a scalar feature: [batch] -> [batch, 1]
        t = keras.layers.Reshape((1,), name=f"col_{name}")(t)
    elif len(t.shape) > 2:
        t = keras.layers.Flatten(name=f"flat_{name}")(t)
    if f.mean is None or f.variance is None:
        return t
    normalize = keras.layers.Normalization(
        mean=_flat_list(f.mean), variance=_flat_list(f.variance), name=f"normalize_{name}"
    )
    # Missing cells arrive as NaN (from the data reader and batch prediction alike) and stay
    # NaN through the normalisation; 0 there is the training mean.
    z = normalize(t)
    return keras.ops.where(keras.ops.isnan(z), 0.0, z)


def _flat_list(value: float | list) -> list[float]:
    if isinstance(value, int | float):
        return [float(value)]
    out: list[float] = []
    for v in value:
        out.extend(_flat_list(v))
    return out


def concatenated(schema: Schema, inputs: dict[str, keras.KerasTensor]) -> keras.KerasTensor:
    """All encoded features side by side: ``[batch, total width]``."""
    parts = encoded_features(schema, inputs)
    return parts[0] if len(parts) == 1 else keras.layers.Concatenate()(parts)


def regression_output(x: keras.KerasTensor, schema: Schema) -> keras.KerasTensor:
    """The regression head: Dense units, scaled back to the target's training mean and std."""
    # float32 also under mixed precision, as the classification head.
    y = keras.layers.Dense(max(1, schema.label.size), name="predictions", dtype="float32")(x)
    label = schema.label
    if isinstance(label.mean, int | float) and isinstance(label.variance, int | float):
        std = math.sqrt(label.variance) or 1.0
        y = keras.layers.Rescaling(
            scale=std, offset=label.mean, name="target_scale", dtype="float32"
        )(y)
    return y
