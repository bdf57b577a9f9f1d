"""Whole batches of records: decode many at once, and write their output rows at once.

Beam spends a few microseconds on every element it moves between steps, and a job with
millions of records would spend most of its time there. So records travel as batches of
``--batch-size`` from right after reading: a :class:`Batch` holds the good records of one
input batch as stacked arrays (one per signature input) and, per record, the *head* of its
output row, the ``"instance": ...`` or ``"key": ...`` member already in JSON text. A JSON
instance is echoed by splicing its input line, which is valid JSON (it was just parsed), so
the instance is never serialized again; a tf.Example record's head (its bytes in base64)
is made only when its row is written. Bad records leave the batch as error tuples.

Example:
    >>> specs = {"x": InputSpec("x", "float32", (2,))}
    >>> batch, errors = decode_json_batch([b'[1, 2]', b'oops', b'[3, 4]'], specs)
    >>> batch.tensors["x"].shape, [kind for _, kind, _ in errors]
    ((2, 2), ['bad_json'])
    >>> results_text(batch, output_columns({"y": np.array([0.5, 1.5], np.float32)}))
    b'{"instance":[1, 2],"prediction":0.5}\\n{"instance":[3, 4],"prediction":1.5}'
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from pybase64 import b64encode

from batch import instances
from batch.instances import RecordError
from batch.model import InputSpec
from batch.numeric_json import NumericLines
from batch.outputs import DUMP_OPTIONS, output_value
from jobcommon.errors import first_line

# An error on its way to the errors output: (metadata dict or row head, kind, message).
ErrorTuple = tuple[dict[str, Any] | bytes, str, str]


@dataclass
class Batch:
    """Good records of one batch: output row heads and one stacked array per input.

    With ``echo_b64`` the heads are the records themselves, each to be echoed as
    ``"instance": {"b64": ...}``: the base64 text is then made only where the rows are
    written (:meth:`row_heads`, :func:`results_text`).
    """

    heads: list[bytes]
    tensors: dict[str, np.ndarray]
    echo_b64: bool = False
    # The model's work on this batch once started (see batch.model_handler); not pickled.
    pending: Future | None = field(default=None, compare=False, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "pending": None}

    def __len__(self) -> int:
        return len(self.heads)

    def take(self, start: int, stop: int) -> Batch:
        """Records ``start:stop`` (to re-run part of a batch the model failed on)."""
        tensors = {k: v[start:stop] for k, v in self.tensors.items()}
        return Batch(self.heads[start:stop], tensors, self.echo_b64)

    def select(self, indices: Sequence[int]) -> Batch:
        """The records at ``indices``, in that order."""
        rows = np.asarray(indices, dtype=np.intp)
        tensors = {name: values[rows] for name, values in self.tensors.items()}
        return Batch([self.heads[i] for i in indices], tensors, self.echo_b64)

    def row_heads(self) -> list[bytes]:
        """Each record's row head as JSON text, e.g. ``b'"instance":[1, 2]'``."""
        if not self.echo_b64:
            return self.heads
        return [b"".join((_B64_HEAD, b64encode(record), b'"}')) for record in self.heads]

    def num_bytes(self) -> int:
        total = 0
        for arr in self.tensors.values():
            total += sum(map(len, arr)) if arr.dtype == object else arr.nbytes
        return total


_B64_HEAD = b'"instance":{"b64":"'


def head_of(meta: dict[str, Any]) -> bytes:
    """``{"instance": v}`` -> ``b'"instance":<v as JSON>'`` (the row without its braces)."""
    return orjson.dumps(meta, option=DUMP_OPTIONS)[1:-1]


def stack(rows: Sequence[dict[str, Any]], specs: dict[str, InputSpec]) -> dict[str, np.ndarray]:
    """Per-record tensors -> one array per input with a leading batch dimension."""
    out = {}
    for name, spec in specs.items():
        values = [tensors[name] for tensors in rows]
        if spec.is_string and (not values or isinstance(values[0], bytes)):
            arr = np.empty(len(values), dtype=object)
            arr[:] = values  # np.array() would turn bytes into a fixed-width dtype
            out[name] = arr
        elif values and spec.shape and None not in spec.shape:
            # Filled row by row: np.stack's per-array cost is not paid.
            arr = np.empty((len(values), *spec.shape), spec.numpy_dtype())
            for i, value in enumerate(values):
                arr[i] = value
            out[name] = arr
        elif values:
            out[name] = np.stack(values)
        else:
            out[name] = np.empty((0, *[d or 0 for d in spec.shape]), spec.numpy_dtype())
    return out


def _bad(line: bytes, err: RecordError, head: bytes | None = None) -> ErrorTuple:
    """The error tuple of a line: its row head when known (and short enough to echo), else
    the line itself as raw bytes (a bounded prefix of it)."""
    if head is not None and len(head) <= instances.ECHO_BYTES:
        return head, err.kind, err.message
    return instances.raw_record(line), err.kind, instances.echo_note(err.message, len(line))


def _blank(line: bytes) -> ErrorTuple:
    return (
        instances.raw_record(line),
        instances.BLANK_LINE,
        "a blank line holds no instance (each line must hold one)",
    )


def decode_json_batch(
    lines: Sequence[bytes],
    specs: dict[str, InputSpec],
    shaping: instances.Shaping | None = None,
) -> tuple[Batch, list[ErrorTuple]]:
    """JSON lines -> (a Batch of the good ones, error tuples for the bad ones).

    Every line is a record: a blank one is a ``blank_line`` error, so that records read
    always equal predictions plus errors. Without a key field the row head echoes the line
    itself (the input instance, exactly as written, long integers included). Lines whose
    inputs are plain arrays of numbers are read by :mod:`batch.numeric_json` (no Python
    floats); the rest, and every line of a job with a key field or ``instanceConfig``, the
    general way. Both give the same arrays and errors; errors come in the order of lines.
    """
    shaping = shaping or instances.Shaping()
    # (line number, error): the errors are returned in the order of their lines.
    numbered: list[tuple[int, ErrorTuple]] = []
    texts: list[bytes] = []
    sources: list[int] = []
    for number, line in enumerate(lines):
        text = line.strip()
        if text:
            texts.append(text)
            sources.append(number)
        else:
            numbered.append((number, _blank(line)))
    plain = shaping.key_field is None and not shaping.reshapes
    numeric = NumericLines.for_specs(specs) if plain else None
    fast, taken = numeric.read(texts) if numeric is not None else ({}, [])
    if numeric is not None and len(taken) == len(texts):
        return Batch([b'"instance":' + text for text in texts], fast), [e for _, e in numbered]
    skip = set(taken)
    heads: list[bytes] = []
    rows: list[dict[str, Any]] = []
    kept: list[int] = []
    loads = orjson.loads
    for index, (text, number) in enumerate(zip(texts, sources, strict=True)):
        if index in skip:
            continue
        line = lines[number]
        head = None
        try:
            try:
                value = loads(text) if plain else instances.loads(text)
            except orjson.JSONDecodeError as exc:
                raise RecordError(instances.BAD_JSON, f"not valid JSON: {exc}") from None
            head = b'"instance":' + text
            key, value = shaping.apply(value)
            if key is not None:
                head = shaping.key_head(key)
            rows.append(instances.instance_tensors(value, specs))
            heads.append(head)
            kept.append(index)
        except RecordError as err:
            numbered.append((number, _bad(line, err, head)))
    numbered.sort(key=lambda pair: pair[0])
    errors = [error for _, error in numbered]
    general = stack(rows, specs)
    if not taken:
        return Batch(heads, general), errors
    return _merged(texts, taken, fast, kept, heads, general), errors


def _merged(
    texts: Sequence[bytes],
    taken: list[int],
    fast: dict[str, np.ndarray],
    kept: list[int],
    heads: list[bytes],
    general: dict[str, np.ndarray],
) -> Batch:
    """One Batch, in input order, of the records read the fast way (``taken``, the indices
    of their ``texts``) and those read the general way (``kept``, with their ``heads``)."""
    order = sorted(taken + kept)
    rank = {index: position for position, index in enumerate(order)}
    at_fast = [rank[index] for index in taken]
    at_general = [rank[index] for index in kept]
    tensors = {}
    for name, values in fast.items():
        arr = np.empty((len(order), *values.shape[1:]), values.dtype)
        arr[at_fast] = values
        arr[at_general] = general[name]
        tensors[name] = arr
    by_index = dict(zip(kept, heads, strict=True))
    merged = [by_index.get(index) or b'"instance":' + texts[index] for index in order]
    return Batch(merged, tensors)


def csv_instance(header: Sequence[str], text: str, specs: dict[str, InputSpec]) -> dict[str, Any]:
    """One CSV row as an object keyed by column name, each value typed by the signature
    input of that name (or, for a model with one input that is not a column, by that
    input); other columns stay strings.

    >>> specs = {"x": InputSpec("x", "float32", (2,))}
    >>> csv_instance(["a", "b"], "0.5,2", specs)
    {'a': 0.5, 'b': 2.0}
    """
    values = next(csv.reader([text]))
    if len(values) != len(header):
        raise RecordError(
            instances.WRONG_FEATURES,
            f"the row has {len(values)} values; the header names {len(header)} columns",
        )
    lone = next(iter(specs.values())) if len(specs) == 1 else None
    if lone is not None and lone.name in header:
        lone = None
    row = {}
    for name, raw in zip(header, values, strict=True):
        spec = specs.get(name, lone)
        row[name] = raw if spec is None else _typed(name, raw, spec)
    return row


def _typed(column: str, raw: str, spec: InputSpec) -> Any:
    if spec.is_string:
        return raw
    kind = np.dtype(spec.dtype).kind
    try:
        if kind in "iu":
            return int(raw)
        if kind == "b":
            return {"true": True, "false": False, "1": True, "0": False}[raw.strip().lower()]
        return float(raw)
    except (ValueError, KeyError):
        raise RecordError(
            instances.WRONG_DTYPE,
            f"column {column!r}: {raw[:100]!r} is not a {spec.dtype} value",
        ) from None


def decode_csv_batch(
    header: Sequence[str],
    lines: Sequence[bytes],
    specs: dict[str, InputSpec],
    shaping: instances.Shaping | None = None,
) -> tuple[Batch, list[ErrorTuple]]:
    """CSV rows (below a file's ``header``) -> (a Batch of the good ones, error tuples).

    A model with one input that is not a column gets each row's values as one array (in
    column order, after the key and excluded fields are taken out).
    """
    shaping = shaping or instances.Shaping()
    lone = len(specs) == 1 and next(iter(specs)) not in header
    heads: list[bytes] = []
    rows: list[dict[str, Any]] = []
    errors: list[ErrorTuple] = []
    for line in lines:
        if not line.strip():
            errors.append(_blank(line))
            continue
        head = None
        try:
            try:
                text = line.decode("utf-8").rstrip("\r")
            except UnicodeDecodeError:
                raise RecordError(instances.BAD_JSON, "the row is not UTF-8 text") from None
            row = csv_instance(header, text, specs)
            head = b'"instance":' + instances.dumps(row)
            key, value = shaping.apply(row)
            if key is not None:
                head = shaping.key_head(key)
            if lone and isinstance(value, dict):
                value = list(value.values())
            rows.append(instances.instance_tensors(value, specs))
            heads.append(head)
        except RecordError as err:
            errors.append(_bad(line, err, head))
    return Batch(heads, stack(rows, specs)), errors


def decode_file_list_batch(
    lines: Sequence[bytes], input_name: str, read: Any, max_bytes: int
) -> tuple[Batch, list[ErrorTuple]]:
    """Lines naming files -> (a Batch of their bytes for the one string input, errors).

    ``read(path, limit)`` returns the file's bytes, at most ``limit + 1`` of them (so a file
    over ``max_bytes`` is told apart without reading it whole), and raises OSError (or
    Beam's IO errors) when it cannot. Each row's instance is the file's path.
    """
    heads: list[bytes] = []
    data: list[bytes] = []
    errors: list[ErrorTuple] = []
    for line in lines:
        path = line.strip()
        if not path:
            errors.append(_blank(line))
            continue
        head = b'"instance":' + orjson.dumps(path.decode("utf-8", "replace"))
        try:
            content = read(path.decode("utf-8"), max_bytes)
        except UnicodeDecodeError:
            errors.append((head, instances.UNREADABLE_FILE, "the path is not UTF-8 text"))
            continue
        except Exception as exc:  # Beam's filesystems raise several kinds for one failure
            message = f"cannot read {path.decode('utf-8', 'replace')}: {first_line(exc)}"
            errors.append((head, instances.UNREADABLE_FILE, message))
            continue
        if len(content) > max_bytes:
            errors.append(
                (head, instances.TOO_LARGE, f"the file is larger than {max_bytes} bytes "
                 "(--max-instance-bytes)")
            )  # fmt: skip
            continue
        heads.append(head)
        data.append(content)
    return Batch(heads, {input_name: _object_array(data)}), errors


def decode_example_batch(
    records: Sequence[bytes],
    input_name: str,
    feature_names: list[str] | None,
    key_field: str | None = None,
    shaping: instances.Shaping | None = None,
) -> tuple[Batch, list[ErrorTuple]]:
    """TFRecord records -> (a Batch of the good ones, error tuples for the bad ones), for a
    signature with one string input ``input_name``.

    Without a key field the records are not parsed here: a tf.Example signature parses a
    whole batch at once, and a batch it fails on gets the careful per-record check then
    (see :func:`batch.isolation.check_records`). With a key field each record is
    parsed as a tf.Example for its key, and checked on the way.
    """
    if key_field is None:
        return Batch(list(records), {input_name: _object_array(records)}, echo_b64=True), []
    shaping = shaping or instances.Shaping(key_field=key_field)
    heads: list[bytes] = []
    good: list[bytes] = []
    errors: list[ErrorTuple] = []
    for record in records:
        try:
            key = instances.example_key(record, feature_names, key_field)
        except RecordError as err:
            errors.append((instances.b64_head(record), err.kind, err.message))
            continue
        heads.append(shaping.key_head(key))
        good.append(record)
    return Batch(heads, {input_name: _object_array(good)}), errors


def _object_array(values: Sequence[bytes]) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values  # np.array() would turn bytes into a fixed-width dtype
    return arr


def prediction_json(prediction: dict[str, Any]) -> bytes:
    """One record's outputs as the row's ``prediction`` value: the value itself for a model
    with one output, an object keyed by output name for several."""
    if len(prediction) == 1:
        value = output_value(next(iter(prediction.values())))
    else:
        value = {name: output_value(v) for name, v in prediction.items()}
    return orjson.dumps(value, option=DUMP_OPTIONS)


def result_line(head: bytes, prediction: dict[str, Any]) -> bytes:
    return b"{" + head + b',"prediction":' + prediction_json(prediction) + b"}"


def result_lines(batch: Batch, outputs: dict[str, np.ndarray]) -> list[bytes]:
    """One results line per record of ``batch`` from the model's batched ``outputs``."""
    return results_text(batch, output_columns(outputs)).split(b"\n") if len(batch) else []


def output_columns(outputs: dict[str, np.ndarray]) -> dict[str, list[bytes]]:
    """The model's batched outputs -> each output's rows as JSON text (see column_json)."""
    return {name: column_json(values) for name, values in outputs.items()}


def results_text(batch: Batch, columns: dict[str, list[bytes]]) -> bytes:
    """The results lines of ``batch``, joined by newlines, from its :func:`output_columns`.

    The text is put together in one join, so a row's head (a 4 KB echoed tf.Example, say)
    is copied once. The lines are the same text :func:`result_line` writes record by record.
    """
    parts: list[bytes] = []
    opener = b"{"
    heads = batch.row_heads()
    if len(columns) == 1:
        (column,) = columns.values()
        for head, value in zip(heads, column, strict=True):
            parts += (opener, head, b',"prediction":', value, b"}")
            opener = b"\n{"
        return b"".join(parts)
    keys = [orjson.dumps(str(name)) + b":" for name in columns]
    for head, values in zip(heads, zip(*columns.values(), strict=True), strict=True):
        parts += (opener, head, b',"prediction":{')
        for key, value in zip(keys, values, strict=True):
            parts += (key, value, b",")
        parts[-1] = b"}}"
        opener = b"\n{"
    return b"".join(parts)


def column_json(values: np.ndarray) -> list[bytes]:
    """Each row of one batched output as JSON text.

    Numeric outputs of one or two dimensions (the usual scores, classes, embeddings) are
    dumped in one call and split at the row boundaries, which no number contains; anything
    else (bytes, deeper arrays) is dumped row by row.
    """
    if values.dtype.kind in "biuf" and values.ndim in (1, 2) and len(values):
        text = orjson.dumps(values, option=DUMP_OPTIONS)
        if values.ndim == 1:
            rows = text[1:-1].split(b",")
        else:
            rows = [b"[" + row + b"]" for row in text[2:-2].split(b"],[")]
        if len(rows) == len(values):
            return rows
    return [orjson.dumps(output_value(value), option=DUMP_OPTIONS) for value in values]
