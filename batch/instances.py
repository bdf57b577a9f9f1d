"""One instance's values checked and turned into the tensors of the model's signature.

Each record is checked against the signature's inputs (names, shape, dtype) while its
batch is decoded (see :mod:`batch.batches`), so a bad record becomes an error row of its
own and never reaches the model. Before that check, the instance is shaped as Vertex AI's
``instanceConfig`` says (:class:`Shaping`: the key field taken out, fields included or
excluded, an object turned into an array). tf.Example records are checked only when the
model fails on their batch (:func:`check_example`).

Example:
    >>> specs = {"pixels": InputSpec("pixels", "float32", (2,))}
    >>> instance_tensors({"pixels": [0.5, 1]}, specs)["pixels"]
    array([0.5, 1. ], dtype=float32)
    >>> instance_tensors([1, 2, 3], specs)
    Traceback (most recent call last):
    ...
    batch.instances.RecordError: wrong_shape: input 'pixels' needs shape [2], got [3]
    >>> Shaping(key_field="id", included_fields=("b", "a"), instance_type="array").apply(
    ...     {"id": 7, "a": 1, "b": 2, "c": 3})
    (7, [2, 1])
"""

from __future__ import annotations

import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pybase64  # SIMD base64: a 3 KB tf.Example echoed in 0.3 us, not 3.5 us (stdlib)

from batch.model import InputSpec
from jobcommon.errors import first_line

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
BLANK_LINE = "blank_line"
TOO_LARGE = "too_large"
UNREADABLE_FILE = "unreadable_file"
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
    BLANK_LINE,
    TOO_LARGE,
    UNREADABLE_FILE,
)
# Each kind as a google.rpc.Code name, for Vertex AI's error rows.
STATUS = {
    CORRUPT_RECORD: "DATA_LOSS",
    INFERENCE_FAILED: "INTERNAL",
    UNREADABLE_FILE: "NOT_FOUND",
}
DEFAULT_STATUS = "INVALID_ARGUMENT"
# An error row echoes at most this much of a record it could not use; the message then
# says how long the record was.
ECHO_BYTES = 8192
# Error messages are cut here (a message may quote a value of the record).
MESSAGE_CHARS = 1000

_NUMERIC_KINDS = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}


class RecordError(Exception):
    """One record that cannot be predicted: ``kind`` is one of :data:`ERROR_KINDS`."""

    def __init__(self, kind: str, message: str) -> None:
        message = message[:MESSAGE_CHARS]
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message

    def __reduce__(self):
        return RecordError, (self.kind, self.message)


def root_cause(exc: BaseException) -> str:
    """The line of a model failure that says what went wrong, not where.

    TensorFlow's errors open with ``Graph execution error:`` and a stack of where the op
    was defined; the cause (an assert's message, an index out of range) is on the line that
    names no node or file, usually the last, with its ``[[{{node ...}}]]`` suffix cut.

    >>> root_cause(ValueError("Graph execution error:\\n\\nDetected at node x defined at:\\n"
    ...     "  File \\"m.py\\", line 3\\n\\nindices[0] = 12 is not in [0, 10)\\n"
    ...     "\\t [[{{node GatherV2}}]] [Op:__inference_serve_42]"))
    'indices[0] = 12 is not in [0, 10)'
    >>> root_cause(KeyError())
    'KeyError'
    """
    text = str(getattr(exc, "message", None) or exc)
    causes = []
    for raw in text.splitlines():
        line = re.sub(r"\s*\[\[\{\{node [^\]]*\]\]|\s*\[Op:[^\]]*\]", "", raw).strip()
        if not line or raw[:1].isspace() or line.startswith(_NOT_CAUSES) or line.endswith(":"):
            continue
        causes.append(line)
    if causes:
        return causes[-1][:MESSAGE_CHARS]
    return first_line(exc, MESSAGE_CHARS)


_NOT_CAUSES = ("Graph execution error", "Detected at node", "File ", "Traceback")


def b64(data: bytes) -> dict[str, str]:
    """Bytes as the ``{"b64": ...}`` object used in inputs and outputs."""
    return {"b64": pybase64.b64encode(data).decode("ascii")}


def b64_head(record: bytes) -> bytes:
    """The row head echoing a binary record (a bounded prefix of a long one)."""
    return b'"instance":' + orjson.dumps(b64(record[:ECHO_BYTES]))


def raw_record(data: bytes) -> dict[str, Any]:
    """The input as it was read, for an error row whose record could not be decoded; at
    most :data:`ECHO_BYTES` of it (see :func:`echo_note`)."""
    return {"raw": b64(data[:ECHO_BYTES])}


def echo_note(message: str, size: int) -> str:
    """``message`` plus, for a record longer than an error row echoes, its length."""
    if size <= ECHO_BYTES:
        return message
    return f"{message} (a record of {size} bytes; the row shows its first {ECHO_BYTES})"


_BIG_INT = re.compile(rb"\d{16,}")


def loads(line: bytes) -> Any:
    """Parse one JSON text; integers beyond 2**53 (even beyond 64 bits) are kept exact.

    orjson reads integers up to 64 bits exactly but turns longer ones into floats; the
    stdlib parser keeps every integer, so it reads the (rare) lines that hold a long run
    of digits.

    >>> loads(b'{"id": 123456789012345678901234567890}')
    {'id': 123456789012345678901234567890}
    """
    value = orjson.loads(line)
    if _BIG_INT.search(line):
        value = json.loads(line)
    return value


def dumps(value: Any) -> bytes:
    """JSON text of a parsed value, exact for integers of any size."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:  # an integer beyond 64 bits
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def key_text(value: Any) -> str:
    """A key as Vertex AI writes it: a string (an integer's digits exactly, JSON otherwise).

    >>> key_text(2**60 + 1), key_text("a"), key_text(1.5)
    ('1152921504606846977', 'a', '1.5')
    """
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return dumps(value).decode()


@dataclass(frozen=True)
class Shaping:
    """Vertex AI's ``instanceConfig``: how an input instance becomes what the model gets.

    ``key_field`` is taken out of the instance (and becomes the row's key),
    ``included_fields`` / ``excluded_fields`` pick the fields sent, and ``instance_type``
    ``array`` sends an object's values in ``included_fields`` order (the object's own
    order without it); ``object`` requires an object.
    """

    key_field: str | None = None
    included_fields: tuple[str, ...] = ()
    excluded_fields: tuple[str, ...] = ()
    instance_type: str | None = None
    # Keys written as strings (Vertex AI's PredictionResult), or as the JSON value read.
    key_as_string: bool = False

    @property
    def reshapes(self) -> bool:
        return bool(self.included_fields or self.excluded_fields or self.instance_type)

    def apply(self, value: Any) -> tuple[Any, Any]:
        """(the key or None, the instance to send to the model); raises RecordError."""
        key = None
        if self.key_field is not None:
            if not isinstance(value, dict) or self.key_field not in value:
                raise RecordError(MISSING_KEY, f"the instance has no key field {self.key_field!r}")
            value = dict(value)
            key = value.pop(self.key_field)
        if not self.reshapes:
            return key, value
        if not isinstance(value, dict):
            raise RecordError(
                WRONG_FEATURES, "instanceConfig needs each instance to be a JSON object"
            )
        if self.included_fields:
            missing = [n for n in self.included_fields if n not in value]
            if missing:
                raise RecordError(WRONG_FEATURES, f"the instance lacks included fields {missing}")
            value = {n: value[n] for n in self.included_fields}
        elif self.excluded_fields:
            value = {n: v for n, v in value.items() if n not in self.excluded_fields}
        if self.instance_type == "array":
            value = list(value.values())
        return key, value

    def key_head(self, key: Any) -> bytes:
        """The row head for a key: ``"key":...``."""
        text = key_text(key) if self.key_as_string else key
        return b'"key":' + dumps(text)


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
        arr = cast(arr, spec)
    if arr.ndim != len(spec.shape) or any(
        want is not None and want != got for want, got in zip(spec.shape, arr.shape, strict=False)
    ):
        raise RecordError(
            WRONG_SHAPE,
            f"input {spec.name!r} needs shape {_dims(spec.shape)}, got {_dims(arr.shape)}",
        )
    return arr


def cast(arr: np.ndarray, spec: InputSpec) -> np.ndarray:
    """A numeric array in the spec's dtype; a finite value outside a float dtype's range
    (which ``astype`` would silently make inf) raises ``wrong_dtype``."""
    if arr.dtype == spec.dtype:
        return arr
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(spec.dtype)
    if out.dtype.kind == "f" and not np.array_equal(
        np.isfinite(out), np.isfinite(arr.astype(np.float64, copy=False))
    ):
        raise RecordError(
            WRONG_DTYPE, f"input {spec.name!r} has values outside the {spec.dtype} range"
        )
    return out


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
    """Parse ``record`` as a tf.Example and check it has the schema's features and the key;
    raise RecordError naming what is wrong. Returns the tf.Example proto."""
    from batch.model import import_tensorflow

    # The proto module comes with TensorFlow's package, whose import runs first: through
    # import_tensorflow, without Keras (1.5 s instead of 3 s in a job process that has
    # not imported TensorFlow, see batch.model_process).
    import_tensorflow()
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
