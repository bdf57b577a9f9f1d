"""Tables as users have them: CSV and JSON-lines files (gzipped or not) -> schema and columns.

Two passes over local files, both streamed row by row:

1. :func:`infer_schema` reads the training files once and profiles every column: numeric
   (every value that is not missing reads as a number) or categorical (its vocabulary, the
   most frequent values), the count of missing cells, and for numbers the mean and variance
   of the values present. A pandas index (``df.to_csv(path)`` writes it as a first column
   without a name, holding distinct whole numbers) is recognised and dropped, with a log line.
2. :func:`read_columns` turns rows into one numpy array per model input (numbers as float32
   with NaN where a cell is missing: the model replaces it with the training mean; strings
   with :data:`MISSING_TOKEN`), and the label. Rows without a label are skipped and counted.

Missing cells are what pandas writes or reads as missing: an empty field, ``NaN``, ``NA``,
``null`` … (:data:`MISSING_STRINGS`), or JSON ``null``. Gzip is recognised by its first
bytes, whatever the file is called.

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "t.csv")
    >>> _ = open(path, "w").write(",mean radius,kind,y\\n0,1.5,a,1\\n1,,b,0\\n2,2.5,a,1.0\\n")
    >>> src = Source(path, path, "csv")
    >>> schema = infer_schema([src], "y")
    >>> [(f.name, f.input_name, f.dtype, f.mean) for f in schema.features]
    [('mean radius', 'mean_radius', 'float32', 2.0), ('kind', 'kind', 'string', None)]
    >>> schema.features[1].vocabulary, schema.label.name, schema.num_classes
    (['a', 'b'], 'y', 2)
    >>> table = read_columns([src], schema)
    >>> table.features["mean_radius"], table.labels, table.stats.records
    (array([1.5, nan, 2.5], dtype=float32), array([1, 0, 1]), 3)
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import logging
import math
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jobcommon.errors import BadInputError
from jobcommon.schema import Feature, Schema

log = logging.getLogger(__name__)

# What pandas reads as NaN by default (pandas.read_csv's na_values), and what it writes for NaN.
MISSING_STRINGS = frozenset(
    [
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    ]
)
# A missing categorical value is a category of its own, spelt as the empty string.
MISSING_TOKEN = ""
# Categorical columns keep their most frequent values; rarer ones share the unknown bucket.
MAX_VOCABULARY = 1000
# Distinct values counted per column before rarer new ones stop being counted (memory bound).
_MAX_COUNTED = 100_000
PANDAS_INDEX_HEADERS = ("", "Unnamed: 0")


@dataclass
class Source:
    """One table file: ``uri`` as the user named it (for messages), ``local`` its local copy,
    ``fmt`` ``"csv"`` or ``"jsonl"``."""

    uri: str
    local: str
    fmt: str


@dataclass
class TableStats:
    """Rows read, rows skipped as bad (``--skip-bad-records``) and rows without a label."""

    records: int = 0
    bad: int = 0
    missing_target: int = 0

    @property
    def usable(self) -> int:
        return self.records - self.bad - self.missing_target


@dataclass
class Table:
    """Columns read with a schema: ``features`` keyed by input name, ``labels``, counts."""

    features: dict[str, np.ndarray]
    labels: np.ndarray
    stats: TableStats


class _BadRow(ValueError):
    """One row that cannot be used; the message says which column and why."""


# ---------------------------------------------------------------- reading rows


def _open_text(src: Source) -> io.TextIOWrapper:
    with open(src.local, "rb") as f:
        magic = f.read(2)
    raw = gzip.open(src.local, "rb") if magic == b"\x1f\x8b" else open(src.local, "rb")  # noqa: SIM115
    # utf-8-sig: Excel and some pandas users write a byte-order mark before the header.
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


@contextlib.contextmanager
def _reading(src: Source) -> Iterator[io.TextIOWrapper]:
    """The file as text; undecodable text, damaged gzip or CSV become one BadInputError."""
    try:
        with _open_text(src) as text:
            yield text
    except UnicodeDecodeError as exc:
        raise BadInputError(
            f"{src.uri} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as "
            "UTF-8 (pandas: to_csv(..., encoding='utf-8'))"
        ) from exc
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise BadInputError(
            f"{src.uri} is a damaged gzip file ({exc or type(exc).__name__}); write it again"
        ) from exc
    except csv.Error as exc:
        raise BadInputError(f"{src.uri} is not valid CSV ({exc}); check its quoting") from exc


def iter_rows(src: Source, skip_bad: bool, stats: TableStats) -> Iterator[tuple[int, dict]]:
    """``(line number, {column: raw value})`` for each row of one file.

    A row with the wrong number of fields (CSV) or that is not a JSON object is named in a
    BadInputError, or counted in ``stats.bad`` and skipped with ``skip_bad``.
    """
    with contextlib.ExitStack() as stack:
        if src.fmt == "tfrecord":
            rows = _example_rows(src)
        else:
            text = stack.enter_context(_reading(src))
            rows = _csv_rows(src, text) if src.fmt == "csv" else _json_rows(src, text)
        for lineno, row in rows:
            if isinstance(row, _BadRow):
                stats.records += 1
                if not skip_bad:
                    raise BadInputError(
                        f"{_where(src, lineno)}: {row}; fix the row or pass "
                        "--skip-bad-records to skip such rows"
                    )
                stats.bad += 1
                continue
            yield lineno, row


def _where(src: Source, n: int) -> str:
    return f"{src.uri} record {n}" if src.fmt == "tfrecord" else f"{src.uri} line {n}"


def _example_rows(src: Source) -> Iterator[tuple[int, Any]]:
    """The tf.Examples of a TFRecord file as rows: each feature a number (int64_list values
    stay ints), a string, or a list of them."""
    import tensorflow as tf
    from tensorflow.core.example import example_pb2

    with open(src.local, "rb") as f:
        compression = "GZIP" if f.read(2) == b"\x1f\x8b" else ""
    records = tf.data.TFRecordDataset(src.local, compression_type=compression)
    try:
        for n, record in enumerate(records.as_numpy_iterator()):
            try:
                example = example_pb2.Example.FromString(record)
            except Exception:  # noqa: BLE001 (protobuf's DecodeError and friends)
                yield n, _BadRow("not a serialized tf.Example")
                continue
            row: dict[str, Any] = {}
            for key, feature in example.features.feature.items():
                kind = feature.WhichOneof("kind")
                values = list(getattr(feature, kind).value) if kind else []
                if kind == "bytes_list":
                    values = [v.decode("utf-8", "replace") for v in values]
                row[key] = None if not values else values[0] if len(values) == 1 else values
            yield n, row
    except tf.errors.OpError as exc:
        raise BadInputError(
            f"{src.uri} is not a readable TFRecord file ({exc.message.splitlines()[0]}); "
            "re-create it or check --train-files"
        ) from exc


def csv_header(src: Source) -> list[str]:
    """The column names of a CSV file (its first row)."""
    with _reading(src) as text:
        header = next(csv.reader(text), None)
    if not header:
        raise BadInputError(f"{src.uri} is empty: a CSV file needs a header row")
    return header


def _csv_rows(src: Source, text) -> Iterator[tuple[int, Any]]:
    reader = csv.reader(text)
    header = next(reader, None)
    if not header:
        raise BadInputError(f"{src.uri} is empty: a CSV file needs a header row")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise BadInputError(f"{src.uri}: the header names columns {dupes} more than once")
    for row in reader:
        if not row:
            continue  # a blank line
        if len(row) != len(header):
            yield (
                reader.line_num,
                _BadRow(f"{len(row)} fields where the header has {len(header)}"),
            )
            continue
        yield reader.line_num, dict(zip(header, row, strict=True))


def _json_rows(src: Source, text) -> Iterator[tuple[int, Any]]:
    for lineno, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            yield lineno, _BadRow(f"not valid JSON ({exc})")
            continue
        if not isinstance(row, dict):
            yield lineno, _BadRow("not a JSON object keyed by column name")
            continue
        yield lineno, row


# ---------------------------------------------------------------- values


def is_missing(value: Any) -> bool:
    """True for an empty or NaN-like cell (see :data:`MISSING_STRINGS`) or JSON null."""
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() in MISSING_STRINGS
    return isinstance(value, float) and math.isnan(value)


def as_number(value: Any) -> float | None:
    """A cell as a float, or None when it is not a number (``"abc"``, a list)."""
    if isinstance(value, bool | int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _number_list(value: Any) -> list[float] | None:
    if not isinstance(value, list):
        return None
    out = []
    for v in value:
        n = as_number(v) if not isinstance(v, list) else None
        if n is None:
            return None
        out.append(n)
    return out


# ---------------------------------------------------------------- pass 1: the schema


@dataclass
class _Profile:
    """What one pass learns about a column."""

    name: str
    numeric: bool = True
    shape: tuple[int, ...] | None = None
    present: int = 0
    missing: int = 0
    total: Any = 0.0
    total_sq: Any = 0.0
    counts: Counter = field(default_factory=Counter)
    first_text: tuple[str, str] | None = None  # (where, value) of the first non-number
    first_fraction: tuple[str, float] | None = None  # the first number that is not whole
    ints_only: bool = True  # every value a Python int (a tf.Example's int64_list)
    negative: bool = False
    index_like: bool = True  # distinct whole numbers >= 0, none missing
    seen_ints: set = field(default_factory=set)

    def add(self, value: Any, where: str) -> None:
        if is_missing(value):
            self.missing += 1
            self.index_like = False
            return
        self.present += 1
        if isinstance(value, list):
            numbers = _number_list(value)
            if numbers is None or (self.shape is not None and self.shape != (len(numbers),)):
                raise BadInputError(
                    f"{where}: column {self.name!r} holds a list that is not "
                    "numbers of the same length as in the rows before; fix the row"
                )
            self.shape = (len(numbers),)
            self.ints_only = self.ints_only and all(type(v) is int for v in value)
            arr = np.asarray(numbers, dtype=np.float64)
            self.total = self.total + arr
            self.total_sq = self.total_sq + arr * arr
            self.index_like = False
            return
        if self.shape not in (None, ()):
            raise BadInputError(
                f"{where}: column {self.name!r} holds a single value where earlier "
                "rows hold lists; fix the row"
            )
        self.shape = ()
        self.ints_only = self.ints_only and type(value) is int
        text = value.strip() if isinstance(value, str) else json.dumps(value)
        if len(self.counts) < _MAX_COUNTED or text in self.counts:
            self.counts[text] += 1
        number = as_number(value)
        if number is None or not math.isfinite(number):
            if self.numeric and number is None:
                self.first_text = (where, text)
            self.numeric = self.numeric and number is not None
            self.index_like = False
            return
        self.total += number
        self.total_sq += number * number
        if number != int(number):
            self.index_like = False
            if self.first_fraction is None:
                self.first_fraction = (where, number)
        if number < 0:
            self.negative = True
            self.index_like = False
        if self.index_like:
            if number in self.seen_ints:
                self.index_like = False
                self.seen_ints = set()
            else:
                self.seen_ints.add(number)

    def numeric_feature(self, input_name: str | None = None) -> Feature:
        n = max(self.present, 1)
        mean = np.asarray(self.total, dtype=np.float64) / n
        var = np.maximum(np.asarray(self.total_sq, dtype=np.float64) / n - mean * mean, 0.0)
        as_json = (lambda a: float(a)) if not self.shape else (lambda a: [float(v) for v in a])
        return Feature(
            self.name,
            "float32",
            list(self.shape or ()),
            input_name=input_name,
            mean=as_json(mean),
            variance=as_json(var),
        )

    def vocabulary(self) -> list[str]:
        ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        vocab = sorted(v for v, _ in ranked[:MAX_VOCABULARY])
        if self.missing:
            vocab.insert(0, MISSING_TOKEN)
        return vocab


def infer_schema(
    sources: list[Source],
    target_column: str,
    task: str | None = None,
    skip_bad: bool = False,
) -> Schema:
    """The schema of the training files: one pass profiling every column (see module doc)."""
    profiles: dict[str, _Profile] = {}
    columns: list[str] | None = None
    stats = TableStats()
    for src in sources:
        file_columns = csv_header(src) if src.fmt == "csv" else None
        if file_columns is not None:
            if columns is None:
                columns = file_columns
                _check_target(target_column, columns, src.uri)  # before reading every row
            elif set(file_columns) != set(columns):
                raise BadInputError(
                    f"{src.uri} has columns {file_columns} but {sources[0].uri} has {columns}; "
                    "give every training file the same columns"
                )
        for lineno, row in iter_rows(src, skip_bad, stats):
            stats.records += 1
            for name, value in row.items():
                if name not in profiles:
                    profiles[name] = _Profile(name)
                profiles[name].add(value, _where(src, lineno))
    if not profiles:
        raise BadInputError(
            f"{sources[0].uri}: no data rows; check the files are not empty"
            if len(sources) == 1
            else f"no data rows in {len(sources)} training files; check they are not empty"
        )
    names = columns or list(profiles)
    _check_target(target_column, names, sources[0].uri)
    names = _drop_pandas_index(names, profiles, sources[0].uri, target_column)
    task = task or "classification"
    examples = all(s.fmt == "tfrecord" for s in sources)
    if examples:
        _check_example_label(profiles[target_column], task, sources[0].uri)
    label, num_classes = _label_feature(profiles[target_column], task)
    features = []
    for name in names:
        if name == target_column:
            continue
        p = profiles.get(name) or _Profile(name)
        if p.present == 0:
            log.warning("column %r has no values in the training data: not used", name)
            continue
        if p.numeric:
            feature = p.numeric_feature()
            if examples and p.ints_only:
                feature.dtype = "int64"  # parsed as the tf.Example stores it
            features.append(feature)
        else:
            features.append(Feature(name, "string", [], vocabulary=p.vocabulary()))
    if not features:
        raise BadInputError(
            f"{sources[0].uri}: no feature columns besides the target {target_column!r}"
        )
    schema = Schema(features, label, task, num_classes=num_classes)
    log.info(
        "inferred the schema from %d rows: %d numeric and %d categorical features, target %r (%s)",
        stats.records,
        sum(f.dtype == "float32" for f in features),
        sum(f.dtype == "string" for f in features),
        target_column,
        task,
    )
    return schema


def _check_example_label(p: _Profile, task: str, uri: str) -> None:
    """A tf.Example target is parsed as stored: class ids as int64, regression targets float."""
    if task == "classification" and not (p.numeric and p.ints_only and not p.negative):
        raise BadInputError(
            f"{uri}: the target {p.name!r} must hold class ids 0..C-1 in an int64_list to be "
            "read without a schema (pass --task regression for numbers, or --schema-file)"
        )
    if task == "regression" and (not p.numeric or p.ints_only):
        raise BadInputError(
            f"{uri}: the target {p.name!r} must be a float_list for --task regression "
            "without a schema; store it as floats or pass --schema-file"
        )


def _check_target(target: str, names: list[str], uri: str) -> None:
    if target not in names:
        shown = [n for n in names if n not in PANDAS_INDEX_HEADERS]
        raise BadInputError(
            f"{uri} has no column {target!r}: pass --target-column with one of its columns {shown}"
        )


def _drop_pandas_index(
    names: list[str], profiles: dict[str, _Profile], uri: str, target: str
) -> list[str]:
    unnamed = [n for n in names if n.strip() in PANDAS_INDEX_HEADERS]
    for name in unnamed:
        p = profiles.get(name)
        is_index = name == names[0] and p is not None and p.index_like and p.present > 0
        if not is_index:
            raise BadInputError(
                f"{uri}: column {names.index(name) + 1} has no name; give it a header (or "
                "write the file with pandas to_csv(..., index=False))"
            )
        log.info(
            "%s: the first column has no name and holds distinct row numbers (a pandas "
            "index written by to_csv): not used as a feature",
            uri,
        )
    return [n for n in names if n not in unnamed or n == target]


def _label_feature(p: _Profile, task: str) -> tuple[Feature, int | None]:
    """The label's feature and, for classification, the number of classes."""
    if task == "regression":
        if not p.numeric:
            where, value = p.first_text
            raise BadInputError(
                f"{where}: the target column {p.name!r} holds {value!r}, not a "
                "number; --task regression needs numeric targets (fix the row, or train a "
                "classifier without --task regression)"
            )
        return p.numeric_feature(), None
    if p.present == 0:
        raise BadInputError(f"the target column {p.name!r} has no values")
    if p.numeric and p.first_fraction is not None:
        where, value = p.first_fraction
        raise BadInputError(
            f"{where}: the target column {p.name!r} holds {value}, not a class; "
            "pass --task regression to predict numbers"
        )
    if p.numeric and not p.negative:
        # Whole numbers 0..C-1 (also written as 1.0) are class ids themselves.
        classes = max(int(float(v)) for v in p.counts) + 1
        return Feature(p.name, "int64", []), max(classes, 2)
    if p.numeric:
        vocab = [str(v) for v in sorted({int(float(v)) for v in p.counts})]
    else:
        vocab = sorted(p.counts)
    return Feature(p.name, "int64", [], vocabulary=vocab), max(len(vocab), 2)


# ---------------------------------------------------------------- pass 2: the columns


def read_columns(sources: list[Source], schema: Schema, skip_bad: bool = False) -> Table:
    """Every usable row of ``sources`` as arrays keyed by the schema's input names."""
    stats = TableStats()
    out: dict[str, list] = {f.input_name: [] for f in schema.features}
    labels: list = []
    encoders = [(f, _encoder(f)) for f in schema.features]
    label_encoder = _label_encoder(schema)
    for src in sources:
        if src.fmt == "csv":
            _check_csv_columns(src, schema)
        for lineno, row in iter_rows(src, skip_bad, stats):
            stats.records += 1
            raw_label = row.get(schema.label.name)
            if is_missing(raw_label):
                stats.missing_target += 1
                continue
            try:
                y = label_encoder(raw_label)
                values = [encode(_cell(row, f)) for f, encode in encoders]
            except _BadRow as exc:
                if not skip_bad:
                    raise BadInputError(
                        f"{_where(src, lineno)}: {exc}; fix the row or pass "
                        "--skip-bad-records to skip such rows"
                    ) from None
                stats.bad += 1
                continue
            labels.append(y)
            for (f, _), v in zip(encoders, values, strict=True):
                out[f.input_name].append(v)
    if stats.missing_target:
        log.warning(
            "skipped %d of %d rows without a value in the target column %r",
            stats.missing_target,
            stats.records,
            schema.label.name,
        )
    features = {}
    for f in schema.features:
        dtype = object if f.dtype == "string" else f.dtype
        features[f.input_name] = np.array(out[f.input_name], dtype=dtype).reshape(-1, *f.shape)
    label_dtype = np.float32 if schema.label.dtype == "float32" else np.int64
    return Table(features, np.array(labels, dtype=label_dtype), stats)


def _cell(row: dict, f: Feature) -> Any:
    if f.name in row or f.size == 1:
        return row.get(f.name)
    # A vector feature spread over CSV columns name_0, name_1, … (trainer.convert's layout).
    return [row.get(f"{f.name}_{i}") for i in range(f.size)]


def _check_csv_columns(src: Source, schema: Schema) -> None:
    header = set(csv_header(src))
    needed = []
    for f in [*schema.features, schema.label]:
        if f.name in header:
            continue
        if f.size != 1 and all(f"{f.name}_{i}" in header for i in range(f.size)):
            continue
        needed.append(f.name)
    if needed:
        raise BadInputError(
            f"{src.uri} lacks the columns {needed} of the schema; its columns are "
            f"{sorted(header)}; give it the same columns as the training data"
        )


def _encoder(f: Feature):
    name = f.name
    if f.dtype == "string":

        def encode_string(value):
            if is_missing(value):
                return MISSING_TOKEN
            return value.strip() if isinstance(value, str) else json.dumps(value)

        return encode_string
    if f.shape:

        def encode_vector(value):
            if is_missing(value):
                return np.full(f.shape, np.nan, np.float32)
            values = value if isinstance(value, list) else None
            numbers = None
            if values is not None and len(values) == f.size:
                numbers = [math.nan if is_missing(v) else as_number(v) for v in values]
            if numbers is None or any(n is None for n in numbers):
                raise _BadRow(f"column {name!r} needs {f.size} numbers")
            return np.asarray(numbers, dtype=np.float32).reshape(f.shape)

        return encode_vector

    def encode_number(value):
        if is_missing(value):
            return math.nan
        number = as_number(value)
        if number is None or math.isinf(number):
            raise _BadRow(f"column {name!r} holds {value!r}, not a number")
        if f.dtype == "int64":
            if number != int(number):
                raise _BadRow(f"column {name!r} holds {value!r}, not a whole number")
            return int(number)
        return number

    return encode_number


def _label_encoder(schema: Schema):
    label = schema.label
    if schema.task == "regression":

        def encode_target(value):
            number = as_number(value)
            if number is None or not math.isfinite(number):
                raise _BadRow(
                    f"the target column {label.name!r} holds {value!r}, not a number "
                    "(--task regression needs numbers)"
                )
            return number

        return encode_target
    index = {v: i for i, v in enumerate(label.vocabulary or [])}
    classes = schema.num_classes or 0

    def encode_class(value):
        number = as_number(value)
        key = value.strip() if isinstance(value, str) else str(value)
        if index:
            if number is not None and number == int(number) and str(int(number)) in index:
                key = str(int(number))
            if key not in index:
                raise _BadRow(
                    f"the target column {label.name!r} holds {value!r}, a class the training "
                    f"data does not have ({sorted(index)[:10]})"
                )
            return index[key]
        if number is None or number != int(number) or not 0 <= number < classes:
            raise _BadRow(
                f"the target column {label.name!r} holds {value!r}, not a class id 0..{classes - 1}"
            )
        return int(number)

    return encode_class
