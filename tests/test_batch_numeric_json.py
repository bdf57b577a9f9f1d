"""The fast way for numeric JSON instances (batch.numeric_json) gives exactly what the
general way gives: the same records accepted, the same arrays, the same error rows."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batch import batches, instances
from batch.model import InputSpec
from batch.numeric_json import NumericLines

FLAT = {"pixels": InputSpec("pixels", "float32", (4,))}
GRID = {"image": InputSpec("image", "float32", (2, 3))}
INTS = {"ids": InputSpec("ids", "int32", (3,))}
TWO = {"a": InputSpec("a", "float64", (2,)), "b": InputSpec("b", "int64", (2,))}
ALL_SPECS = (FLAT, GRID, INTS, TWO)

# Lines made to tell the two ways apart: each is accepted or rejected by the general way,
# and the fast way must agree (by reading it, or by leaving it to the general way).
TRICKY = [
    b"[0, 0.5, 1, 2]",
    b'{"pixels": [0, 0.5, 1, 2]}',
    b'{"pixels": [0, 0.5, 1]}',  # too short
    b'{"pixels": [[0], 0.5, 1, 2]}',  # nested
    b'{"pixels": [[0, 0.5], [1, 2]]}',  # 2-D for a 1-D input
    b'{"pixels": [[], 0.5, 1, 2, 3]}',  # an empty row
    b'{"pixels": [0, 0.5, 1, true]}',  # a boolean
    b'{"pixels": [0, 0.5, 1, null]}',  # a null inside
    b'{"pixels": null}',  # a null input: NaN for a float scalar, an error for an array
    b'{"pixels": [0, 0.5, 1, "2"]}',  # a string
    b'{"pixels": [0, 0.5, 1, 2], "pixels": [3, 4, 5, 6]}',  # a repeated key
    b'{"pixels": [0, 0.5, 1, 2], "other": 1}',  # an extra key
    b'{"pixels": [0, 0.5, 1, 2], "[x": 1}',  # a bracket in a key
    b'{"pixels": [1e39, 0, 0, 0]}',  # beyond float32
    b'{"pixels": [-1e39, 0, 0, 0]}',
    b'{"pixels": [1e400, 0, 0, 0]}',  # beyond float64
    b'{"pixels": [9007199254740993, 0, 0, 0]}',  # 2**53 + 1: rounds differently via doubles
    b'{"pixels": [123456789012345678901234567890, 0, 0, 0]}',  # beyond 64 bits
    b'{"pixels": [3.4028235e38, -0.0, 1e-45, 5e-324]}',  # float32's edges
    b'{"pixels": [NaN, 0, 0, 0]}',  # not JSON
    b'{"pixels": [01, 0, 0, 0]}',  # not JSON
    b'{"pixels": [.5, 0, 0, 0]}',  # not JSON
    b'{"pixels": [0, 0, 0, 0]',  # truncated
    b'{"b64": "AAAA"}',
    b'{"image": [[1, 2, 3], [4, 5, 6]]}',
    b"[[1, 2, 3], [4, 5, 6]]",
    b'{"image": [[1, 2, 3, 4], [5, 6]]}',  # ragged with the right count
    b'{"image": [[1, 2], [3, 4], [5, 6]]}',  # transposed
    b'{"image": [[1, 2, [3]], [4, 5, 6]]}',
    b'{"ids": [1, 2, 3]}',
    b'{"ids": [1, 2.0, 3]}',  # a float for an int input
    b'{"ids": [1, 2, 4294967296]}',  # wraps in int32 on both ways
    b'{"ids": [1, 2, 18446744073709551615]}',  # uint64
    b'{"ids": [-1, 2, 3]}',
    b'{"a": [1.5, 2], "b": [3, 4]}',
    b'{"b": [3, 4], "a": [1.5, 2]}',  # another key order
    b'{"a": [1.5, 2], "b": [3.5, 4]}',
    b'{"a": [1.5, 2]}',
    b"[1.5, 2]",  # bare, for two inputs
    b"[]",
    b"{}",
    b"  [0, 0.5, 1, 2]  ",
    b"",
]


def general_only(lines, specs, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(NumericLines, "for_specs", classmethod(lambda cls, specs: None))
        return batches.decode_json_batch(lines, specs)


def assert_same(got, want):
    (batch, errors), (batch_want, errors_want) = got, want
    assert batch.heads == batch_want.heads
    assert set(batch.tensors) == set(batch_want.tensors)
    for name, values in batch.tensors.items():
        expected = batch_want.tensors[name]
        assert values.dtype == expected.dtype and values.shape == expected.shape, name
        # Bit for bit: -0.0 stays -0.0, and float32's rounding is the same.
        assert values.tobytes() == expected.tobytes(), name
    assert sorted(errors, key=repr) == sorted(errors_want, key=repr)


@pytest.mark.parametrize("specs", ALL_SPECS, ids=["flat", "grid", "ints", "two"])
def test_both_ways_agree_on_lines_made_to_tell_them_apart(specs, monkeypatch):
    for line in TRICKY:
        got = batches.decode_json_batch([line], specs)
        assert_same(got, general_only([line], specs, monkeypatch))
    # And all of them in one batch: the same records, in the order they were read.
    got = batches.decode_json_batch(TRICKY, specs)
    assert_same(got, general_only(TRICKY, specs, monkeypatch))
    assert len(got[0]) + len(got[1]) == len(TRICKY)


def test_plain_numeric_lines_take_the_fast_way():
    # The speed depends on this: plain arrays of numbers must not fall back line by line.
    lines = [orjson.dumps({"pixels": [i, 0.25, -1.5, 1e-3]}) for i in range(100)]
    lines += [orjson.dumps([i, 0, 0, 0]) for i in range(100)]
    arrays, taken = NumericLines.for_specs(FLAT).read(lines)
    assert taken == list(range(200))
    assert arrays["pixels"].dtype == np.float32 and arrays["pixels"].shape == (200, 4)
    grid = NumericLines.for_specs(GRID).read([b"[[1, 2, 3], [4, 5, 6]]"])
    assert grid[1] == [0] and grid[0]["image"].tolist() == [[[1, 2, 3], [4, 5, 6]]]


def test_inputs_the_fast_way_cannot_hold_are_left_to_the_general_way():
    assert NumericLines.for_specs({"s": InputSpec("s", "string", ())}) is None
    assert NumericLines.for_specs({"x": InputSpec("x", "float32", ())}) is None  # scalar
    assert NumericLines.for_specs({"x": InputSpec("x", "float32", (None,))}) is None
    assert NumericLines.for_specs({"x": InputSpec("x", "float16", (4,))}) is None
    assert NumericLines.for_specs({"x": InputSpec("x", "bool", (4,))}) is None
    assert NumericLines.for_specs({"b64": InputSpec("b64", "float32", (4,))}) is None


def test_a_mixed_batch_keeps_the_input_order(monkeypatch):
    lines = [
        b"[1, 2, 3, 4]",
        b'{"pixels": [9007199254740993, 0, 0, 0]}',  # general way
        b"[5, 6, 7, 8]",
        b"oops",
        b"[[9], 10, 11, 12]",  # general way: an error
        b'{"pixels": [13, 14, 15, 16]}',
    ]
    batch, errors = batches.decode_json_batch(lines, FLAT)
    assert [h.split(b":", 1)[1] for h in batch.heads] == [lines[0], lines[1], lines[2], lines[5]]
    assert batch.tensors["pixels"][:, 0].tolist() == [1, 2.0**53, 5, 13]
    assert sorted(kind for _, kind, _ in errors) == [instances.BAD_JSON, instances.WRONG_SHAPE]
    assert_same((batch, errors), general_only(lines, FLAT, monkeypatch))


numbers = (
    st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(width=32, allow_nan=False, allow_infinity=False)
)
values = st.recursive(
    numbers | st.none() | st.booleans() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.sampled_from("ab["), inner),
    max_leaves=12,
)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _line(value) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # an integer beyond 64 bits: write its digits
        return repr(value).replace("'", '"').replace("None", "null").encode()


@SETTINGS
@given(st.lists(numbers, min_size=4, max_size=4) | st.lists(numbers, max_size=6) | values)
def test_both_ways_agree_on_any_value(value):
    lines = [_line(value), _line({"pixels": value}), _line({"a": value, "b": value})]
    for specs in ALL_SPECS:
        got = batches.decode_json_batch(lines, specs)
        with pytest.MonkeyPatch.context() as patch:
            assert_same(got, general_only(lines, specs, patch))
