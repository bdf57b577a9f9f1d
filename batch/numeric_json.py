"""JSON instances that are arrays of numbers, read straight into numpy, a batch at a time.

Most batch inputs are instances like ``{"pixels": [0.0, 0.5, ...]}`` or ``[0.0, 0.5, ...]``.
Read the general way, each number becomes a Python float first: for 784 pixels orjson
takes about 20 us and ``np.asarray`` 15 us more, and on the job's one decoding thread that
was half of a JSON run. simdjson parses the line and copies an array's numbers into a
buffer of doubles without making Python objects; the checks and the cast to the
signature's dtype are then done once per batch, not once per record.

:meth:`NumericLines.read` takes that path only for a line whose every input is an array of
numbers of exactly the signature's shape, each number below 2**53 in magnitude. Any other
line (a ragged or nested array, a string, a boolean, a null, a larger number, invalid
JSON) is left to the general way (:func:`batch.instances.instance_tensors`), which accepts
or rejects it with the error it always gave. So both ways accept the same lines and give
the same arrays; the tests check that on lines made to tell them apart.

Example:
    >>> specs = {"x": InputSpec("x", "float32", (2,))}
    >>> reader = NumericLines.for_specs(specs)
    >>> arrays, taken = reader.read([b'{"x": [1, 2.5]}', b'[[1], 2.5]', b'[3, 4]'])
    >>> arrays["x"], taken  # the second line is not numbers of shape [2]: the general way
    (array([[1. , 2.5],
           [3. , 4. ]], dtype=float32), [0, 2])
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import simdjson

from batch.model import InputSpec

# Doubles hold every integer up to 2**53 exactly, and float32 holds every number below it:
# a line with a larger number may hold an integer the general way converts without the
# double in between, or a value float32 cannot hold (the general way's wrong_dtype).
_EXACT = float(2**53)
_BUFFER = {"f": ("d", np.float64), "i": ("i", np.int64), "u": ("i", np.int64)}
# Float dtypes whose range holds 2**53 (float16's does not: its lines take the general way).
_FLOATS = ("float32", "float64")
_parsers = threading.local()


@dataclass(frozen=True)
class _Input:
    spec: InputSpec
    buffer_type: str  # simdjson's: "d" doubles, "i" 64-bit integers
    buffer_dtype: type


@dataclass(frozen=True)
class NumericLines:
    """Reads the lines whose inputs are all numeric arrays of the signature's shapes."""

    inputs: tuple[_Input, ...]
    keyed: bool  # lines must be objects keyed by input name (a lone input may be bare)
    brackets: int  # '[' in a line that holds exactly the expected arrays and nothing else

    @classmethod
    def for_specs(cls, specs: dict[str, InputSpec]) -> NumericLines | None:
        """A reader for these inputs, or None when some input is not a fixed-shape numeric
        array (strings, scalars, a dimension of any size): those lines take the general way.
        """
        inputs = []
        brackets = 0
        for spec in specs.values():
            kind = "O" if spec.is_string else np.dtype(spec.dtype).kind
            shape = spec.shape
            if (
                kind not in _BUFFER
                or (kind == "f" and spec.dtype not in _FLOATS)
                or not shape
                or None in shape
                or spec.name == "b64"  # {"b64": ...} is bytes to the general way
            ):
                return None
            inputs.append(_Input(spec, *_BUFFER[kind]))
            # One '[' per array: the input itself and every row above the last dimension.
            brackets += sum(math.prod(shape[:i]) for i in range(len(shape)))
        return cls(tuple(inputs), keyed=len(inputs) > 1, brackets=brackets)

    def read(self, texts: Sequence[bytes]) -> tuple[dict[str, np.ndarray], list[int]]:
        """(one array per input, stacked, in the signature's dtype; the indices of the
        ``texts`` they hold, in order). The other texts are for the general way."""
        parser = getattr(_parsers, "parser", None)
        if parser is None:
            parser = _parsers.parser = simdjson.Parser()
        buffers: list[list] = [[] for _ in self.inputs]
        taken: list[int] = []
        for index, text in enumerate(texts):
            # A '[' beyond the expected arrays (a nested array, a bracket in a string) means
            # the line is not for this way; counting costs far less than parsing.
            if text.count(b"[") != self.brackets:
                continue
            try:
                found = self._buffers(parser, text)
            except (ValueError, TypeError, RuntimeError, KeyError):
                continue
            if found is None:
                continue
            for bucket, buffer in zip(buffers, found, strict=True):
                bucket.append(buffer)
            taken.append(index)
        arrays, keep = self._stack(buffers, len(taken))
        if keep is not None:
            taken = [index for index, ok in zip(taken, keep, strict=True) if ok]
        return arrays, taken

    def _buffers(self, parser: simdjson.Parser, text: bytes) -> list | None:
        doc = parser.parse(text)
        try:
            if isinstance(doc, simdjson.Array):
                if self.keyed:
                    return None
                return [_buffer(doc, self.inputs[0])]
            if not isinstance(doc, simdjson.Object) or len(doc) != len(self.inputs):
                return None
            found = []
            for item in self.inputs:
                value = doc[item.spec.name]
                if not isinstance(value, simdjson.Array):
                    return None
                found.append(_buffer(value, item))
                del value
            return found
        finally:
            # The parser refuses a new document while a proxy of this one is alive.
            del doc

    def _stack(self, buffers: list[list], count: int) -> tuple[dict[str, np.ndarray], list | None]:
        """The buffers as arrays; ``keep`` (or None: all) marks the rows that hold only
        numbers below 2**53."""
        raw = {}
        keep = None
        for item, bucket in zip(self.inputs, buffers, strict=True):
            flat = np.frombuffer(b"".join(bucket), item.buffer_dtype)
            rows = flat.reshape(count, *item.spec.shape)
            raw[item.spec.name] = rows
            if item.buffer_type == "d" and count:
                small = np.abs(flat).reshape(count, -1).max(axis=1) < _EXACT
                if not small.all():
                    keep = small if keep is None else keep & small
        if keep is not None:
            raw = {name: rows[keep] for name, rows in raw.items()}
        arrays = {}
        for item in self.inputs:
            arrays[item.spec.name] = raw[item.spec.name].astype(item.spec.dtype, copy=False)
        return arrays, None if keep is None else keep.tolist()


def _buffer(value: simdjson.Array, item: _Input):
    """The numbers of one input, checked for the signature's shape, as a buffer."""
    if not _shaped(value, item.spec.shape):
        raise ValueError("not the signature's shape")
    return value.as_buffer(of_type=item.buffer_type)


def _shaped(value: simdjson.Array, shape: tuple[int, ...]) -> bool:
    """Every array down to the last dimension has the length ``shape`` says; with the
    bracket count in :meth:`NumericLines.read` that leaves only numbers in the last one."""
    if len(value) != shape[0]:
        return False
    if len(shape) == 1:
        return True
    for row in value:
        if not isinstance(row, simdjson.Array) or not _shaped(row, shape[1:]):
            return False
    return True
