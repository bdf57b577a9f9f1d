"""Turn one input record into the tensors of one instance, or a named, per-record error.

Every record is decoded and checked against the signature's inputs (names, shape, dtype)
before batching, so a bad record becomes an error row of its own and never reaches a batch.

JSON lines (``dataFormat: JSON``): one instance per line, an object keyed by input name or,
for a model with one input, the bare value; ``{"b64": "..."}`` stands for bytes.
TFRecords: each record is a serialized ``tf.Example`` for the model's tf.Example signature.

Example:
    >>> specs = {"pixels": InputSpec("pixels", "float32", (2,))}
    >>> meta, tensors = decode_json(b'{"pixels": [0.5, 1]}', specs)
    >>> tensors["pixels"]
    array([0.5, 1. ], dtype=float32)
    >>> decode_json(b'[1, 2, 3]', specs)
    Traceback (most recent call last):
    ...
    batch.instances.RecordError: wrong_shape: input 'pixels' needs shape [2], got [3]
"""

from __future__ import annotations

import binascii
from typing import Any

import numpy as np
import orjson
import pybase64  # SIMD base64: a 3 KB tf.Example echoed in 0.3 us, not 3.5 us (stdlib)

from batch.model import InputSpec

# Error kinds, as written to the errors output and counted in errors_stats.
BAD_JSON = "bad_json"
BAD_B64 = "bad_b64"
MISSING_KEY = "missing_key"
WRONG_FEATURES = "wrong_features"
WRONG_SHAPE = "wrong_shape"
WRONG_DTYPE = "wrong_dtype"
BAD_EXAMPLE = "bad_example"
CORRUPT_RECORD = "corrupt_record"
INFERENCE_FAILED = "inference_failed"
ERROR_KINDS = (
    BAD_JSON,
    BAD_B64,
    MISSING_KEY,
    WRONG_FEATURES,
    WRONG_SHAPE,
    WRONG_DTYPE,
    BAD_EXAMPLE,
    CORRUPT_RECORD,
    INFERENCE_FAILED,
)

_NUMERIC_KINDS = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}


class RecordError(Exception):
    """One record that cannot be predicted: ``kind`` is one of :data:`ERROR_KINDS`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message

    def __reduce__(self):
        return RecordError, (self.kind, self.message)


def b64(data: bytes) -> dict[str, str]:
    """Bytes as the ``{"b64": ...}`` object used in inputs and outputs."""
    return {"b64": pybase64.b64encode(data).decode("ascii")}


def raw_record(data: bytes) -> dict[str, Any]:
    """The input as it was read, for an error row whose record could not be decoded."""
    return {"raw": b64(data)}


def decode_json(
    line: bytes, specs: dict[str, InputSpec], key_field: str | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Parse one JSON line into (output metadata, tensors keyed by input name).

    The metadata is ``{"instance": ...}``, or ``{"key": ...}`` with ``key_field``.
    Raises RecordError naming what is wrong with the record.
    """
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise RecordError(BAD_JSON, f"not valid JSON: {exc}") from None
    meta: dict[str, Any]
    if key_field is not None:
        if not isinstance(value, dict) or key_field not in value:
            raise RecordError(MISSING_KEY, f"the instance has no key field {key_field!r}")
        value = dict(value)
        meta = {"key": value.pop(key_field)}
    else:
        meta = {"instance": value}
    return meta, instance_tensors(value, specs)


def instance_tensors(value: Any, specs: dict[str, InputSpec]) -> dict[str, np.ndarray]:
    """Map one parsed instance onto the signature inputs, checking names, shapes and dtypes."""
    keyed = isinstance(value, dict) and not _is_b64(value)
    if not keyed:
        if len(specs) != 1:
            raise RecordError(
                WRONG_FEATURES,
                f"the model has inputs {sorted(specs)}: each instance must be an object "
                "keyed by input name",
            )
        spec = next(iter(specs.values()))
        return {spec.name: to_array(value, spec)}
    names = set(value)
    if names != set(specs):
        missing, extra = sorted(set(specs) - names), sorted(names - set(specs))
        raise RecordError(
            WRONG_FEATURES,
            f"the model's inputs are {sorted(specs)}; missing {missing}, unexpected {extra}",
        )
    return {name: to_array(value[name], spec) for name, spec in specs.items()}


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def to_array(value: Any, spec: InputSpec) -> np.ndarray:
    """One input's value (without batch dimension) as an array of the spec's dtype and shape."""
    if spec.is_string:
        arr = np.asarray(_strings(value, spec), dtype=object)
        if arr.ndim and arr.dtype == object and any(isinstance(v, list) for v in arr.flat):
            raise RecordError(WRONG_SHAPE, f"input {spec.name!r} is a ragged list")
    else:
        if value is None and np.dtype(spec.dtype).kind == "f":
            # JSON null for a number: missing, NaN (a trainer export imputes the training mean).
            value = np.nan
        try:
            arr = np.asarray(value)
        except ValueError:
            raise RecordError(
                WRONG_SHAPE, f"input {spec.name!r} is a ragged list (rows of different lengths)"
            ) from None
        allowed = _NUMERIC_KINDS.get(np.dtype(spec.dtype).kind, "")
        if arr.dtype.kind not in allowed:
            got = "bytes ({b64})" if _is_b64(value) else _kind_name(arr)
            raise RecordError(
                WRONG_DTYPE, f"input {spec.name!r} needs {spec.dtype} values, got {got}"
            )
        if arr.dtype != spec.dtype:
            source = arr
            with np.errstate(over="ignore", invalid="ignore"):
                arr = arr.astype(spec.dtype)
            # A finite value outside the dtype's range would silently become inf.
            if arr.dtype.kind == "f" and not np.array_equal(
                np.isfinite(arr), np.isfinite(source.astype(np.float64))
            ):
                raise RecordError(
                    WRONG_DTYPE, f"input {spec.name!r} has values outside the {spec.dtype} range"
                )
    if arr.ndim != len(spec.shape) or any(
        want is not None and want != got for want, got in zip(spec.shape, arr.shape, strict=False)
    ):
        raise RecordError(
            WRONG_SHAPE,
            f"input {spec.name!r} needs shape {_dims(spec.shape)}, got {_dims(arr.shape)}",
        )
    return arr


def _kind_name(arr: np.ndarray) -> str:
    return {"U": "strings", "b": "booleans", "f": "floats", "O": "mixed values"}.get(
        arr.dtype.kind, str(arr.dtype)
    )


def _dims(shape: tuple) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _strings(value: Any, spec: InputSpec) -> Any:
    if isinstance(value, list):
        return [_strings(v, spec) for v in value]
    if isinstance(value, str):
        return value.encode("utf-8")
    if _is_b64(value):
        try:
            return pybase64.b64decode(value["b64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise RecordError(
                BAD_B64, f"input {spec.name!r}: the b64 value is not valid base64"
            ) from None
    raise RecordError(
        WRONG_DTYPE, f"input {spec.name!r} needs strings or {{'b64': ...}} bytes, got {value!r}"
    )


def example_key(record: bytes, feature_names: list[str] | None, key_field: str) -> Any:
    """The ``key_field`` value of one serialized tf.Example (its first value), checking the
    record on the way as :func:`check_example` does."""
    example = check_example(record, feature_names, key_field)
    return _first_value(example.features.feature[key_field])


def check_example(
    record: bytes, feature_names: list[str] | None, key_field: str | None = None
) -> Any:
    """Parse ``record`` when there is something to check (the schema's feature names, the
    key); raise RecordError if it fails. Returns the tf.Example proto, or None unparsed."""
    if not feature_names and key_field is None:
        return None
    from tensorflow.core.example import example_pb2

    try:
        example = example_pb2.Example.FromString(record)
    except Exception:  # protobuf's DecodeError and friends
        raise RecordError(BAD_EXAMPLE, "the record is not a serialized tf.Example") from None
    present = example.features.feature
    if feature_names:
        missing = [n for n in feature_names if n not in present]
        if missing:
            raise RecordError(
                WRONG_FEATURES, f"the tf.Example lacks features {missing} the model needs"
            )
    if key_field is not None and key_field not in present:
        raise RecordError(MISSING_KEY, f"the tf.Example has no key feature {key_field!r}")
    return example


def _first_value(feature: Any) -> Any:
    kind = feature.WhichOneof("kind")
    values = list(getattr(feature, kind).value) if kind else []
    if not values:
        return None
    first = values[0]
    if isinstance(first, bytes):
        try:
            return first.decode("utf-8")
        except UnicodeDecodeError:
            return b64(first)
    return first
