"""Property tests of the batch instance decoder: any input line is either tensors that match
the signature or a RecordError, and values that fit the signature round-trip exactly."""

from __future__ import annotations

import base64

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batch import batches, instances
from batch.model import InputSpec

FLOATS = {"pixels": InputSpec("pixels", "float32", (4,))}
TWO = {"a": InputSpec("a", "int64", (2,)), "b": InputSpec("b", "string", ())}
BYTES = {"data": InputSpec("data", "string", ())}
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=20,
)


def _decode_or_record_error(line: bytes, specs, key_field=None):
    batch, errors = batches.decode_json_batch([line], specs, instances.Shaping(key_field))
    assert len(batch) + len(errors) == 1  # every line is accounted for
    if errors:
        ((_, kind, message),) = errors
        assert kind in instances.ERROR_KINDS and message
        return None
    meta = orjson.loads(b"{" + batch.heads[0] + b"}")
    # One record of the batch, as an array also for a scalar string input (kept as bytes).
    tensors = {
        name: np.asarray(values[0], dtype=object) if isinstance(values[0], bytes) else values[0]
        for name, values in batch.tensors.items()
    }
    assert set(tensors) == set(specs)
    for name, spec in specs.items():
        arr = tensors[name]
        assert arr.shape == spec.shape
        if not spec.is_string:
            assert arr.dtype == np.dtype(spec.dtype)
    return meta, tensors


@SETTINGS
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_fail_as_a_record_error(line):
    for specs in (FLOATS, TWO, BYTES):
        _decode_or_record_error(line, specs)
        _decode_or_record_error(line, specs, key_field="id")


@SETTINGS
@given(json_values)
def test_any_json_value_decodes_or_fails_as_a_record_error(value):
    line = orjson.dumps(value)
    for specs in (FLOATS, TWO, BYTES):
        _decode_or_record_error(line, specs)
        _decode_or_record_error(line, specs, key_field="id")


@SETTINGS
@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=4, max_size=4))
def test_float_instances_round_trip(values):
    decoded = _decode_or_record_error(orjson.dumps({"pixels": values}), FLOATS)
    assert decoded is not None
    np.testing.assert_array_equal(decoded[1]["pixels"], np.asarray(values, dtype=np.float32))
    bare = _decode_or_record_error(orjson.dumps(values), FLOATS)  # one input: bare value
    np.testing.assert_array_equal(bare[1]["pixels"], decoded[1]["pixels"])


@SETTINGS
@given(st.binary(max_size=200), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.text())
def test_b64_bytes_and_keys_round_trip(data, a, key):
    line = orjson.dumps({"id": key, "data": instances.b64(data)})
    meta, tensors = _decode_or_record_error(line, BYTES, key_field="id")
    assert meta == {"key": key}
    assert tensors["data"].item() == data
    line = orjson.dumps({"a": [a, 0], "b": {"b64": base64.b64encode(data).decode()}})
    _, tensors = _decode_or_record_error(line, TWO)
    assert tensors["a"].tolist() == [a, 0] and tensors["b"].item() == data


@SETTINGS
@given(st.integers(min_value=2**63, max_value=2**64 - 1) | st.integers(max_value=-(2**63) - 1))
def test_integers_out_of_the_input_range_are_errors_not_wrapped(value):
    # A value int64 cannot hold must fail its record, never wrap around silently.
    try:
        line = orjson.dumps({"a": [value, 0], "b": "x"})
    except TypeError:
        line = f'{{"a": [{value}, 0], "b": "x"}}'.encode()
    decoded = _decode_or_record_error(line, TWO)
    if decoded is not None:
        assert decoded[1]["a"].tolist() == [value, 0]


@SETTINGS
@given(st.floats(min_value=3.5e38, max_value=1e308), st.booleans())
def test_finite_floats_beyond_float32_are_errors_not_infinity(value, negative):
    # float32 tops out near 3.4e38: a larger finite value must fail its record, never
    # reach the model as inf.
    line = orjson.dumps({"pixels": [-value if negative else value, 0.0, 0.0, 0.0]})
    decoded = _decode_or_record_error(line, FLOATS)
    if decoded is not None:
        assert np.isfinite(decoded[1]["pixels"]).all()
