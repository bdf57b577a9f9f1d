"""Training data: arrays -> sharded TFRecords + schema, and the ``tf.data`` input.

Writing (:func:`write_dataset`, CLI :mod:`trainer.convert`): rows become ``tf.Example``
records split over ``train-00000-of-0000N.tfrecord[.gz]`` / ``eval-…`` shards plus one
``schema.json`` (:class:`jobcommon.schema.Schema`), written locally and copied to the
destination (local or ``gs://``) through the storage layer.

Reading, in named steps: :func:`stage_sources` resolves the ``--train-files`` globs through
the storage layer, decides each file's format and downloads ``gs://`` files in parallel to a
local directory (TensorFlow never sees a ``gs://`` path); :func:`dataset_from_sources`
checks every TFRecord shard against the schema once (a mismatch names the file; with
``skip_bad_records`` bad records are counted and dropped) and streams it with ``tf.data``
(parallel interleave, parsing in batches), reads tables (CSV, JSON lines; see
:mod:`trainer.tabular`) into memory, then caches, shuffles, batches and prefetches.
:func:`load_tabular` is what the trainer calls: it finds or infers the schema too.
Files ending ``.tfrecord``/``.tfrecords``/``.tfr``, ``.csv`` and ``.jsonl``/``.json``,
each optionally ``.gz``, are accepted; gzip is recognised by content.

Example:
    >>> info = write_dataset({"pixels": x}, y, "gs://b/data", num_shards=4)  # doctest: +SKIP
    >>> ds, stats = make_dataset("gs://b/d/train-*", schema, 128, training=True)  # doctest: +SKIP
    >>> data = load_tabular("gs://b/wine.csv", target_column="target")  # doctest: +SKIP
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from jobcommon import storage
from jobcommon.errors import BadInputError, NotFoundError, UsageError, first_line
from jobcommon.schema import SCHEMA_FILE, Feature, Schema
from trainer import tabular
from trainer.export import feature_spec
from trainer.tabular import Source

log = logging.getLogger(__name__)

TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfr")
CSV_SUFFIXES = (".csv",)
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
# Staged data below this size is cached in memory after the first epoch.
MEMORY_CACHE_BYTES = 2 * 2**30
PARSE_BATCH = 1024


# ---------------------------------------------------------------- writing


def _dtype_of(arr: np.ndarray) -> str:
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
        return "int64"
    if np.issubdtype(arr.dtype, np.floating):
        return "float32"
    return "string"


def schema_of_arrays(
    features: dict[str, np.ndarray],
    labels: np.ndarray,
    task: str = "classification",
    label_name: str = "label",
) -> tuple[Schema, np.ndarray]:
    """A schema for column arrays, and the labels encoded for it.

    Classification labels that are not integers get a vocabulary (sorted distinct values)
    and are replaced by their index in it.
    """
    feats = [
        Feature(name, _dtype_of(np.asarray(a)), list(np.asarray(a).shape[1:]))
        for name, a in features.items()
    ]
    labels = np.asarray(labels)
    if task == "classification":
        vocab = None
        if labels.dtype.kind not in "iub":
            if labels.dtype.kind == "f" and np.all(labels == np.round(labels)):
                labels = labels.astype(np.int64)
            else:
                vocab = sorted({str(v) for v in labels.ravel()})
                index = {v: i for i, v in enumerate(vocab)}
                labels = np.array([index[str(v)] for v in labels.ravel()], dtype=np.int64)
        labels = labels.astype(np.int64)
        if labels.size and labels.min() < 0:
            raise BadInputError("classification labels must be 0..C-1 (found a negative label)")
        num_classes = len(vocab) if vocab else int(labels.max()) + 1 if labels.size else 0
        label = Feature(label_name, "int64", list(labels.shape[1:]), vocab)
        return Schema(feats, label, task, max(num_classes, 2)), labels
    labels = labels.astype(np.float32)
    return Schema(feats, Feature(label_name, "float32", list(labels.shape[1:])), task), labels


def _tf_feature(value: np.ndarray, dtype: str) -> tf.train.Feature:
    flat = np.asarray(value).reshape(-1)
    if dtype == "float32":
        return tf.train.Feature(float_list=tf.train.FloatList(value=flat.astype(np.float32)))
    if dtype == "int64":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=flat.astype(np.int64)))
    data = [v if isinstance(v, bytes) else str(v).encode() for v in flat]
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=data))


def serialize_example(row: dict[str, np.ndarray], schema: Schema, with_label: bool = True) -> bytes:
    """One ``tf.Example`` (serialized) for one row of feature (and label) values."""
    cols = schema.features + ([schema.label] if with_label else [])
    return tf.train.Example(
        features=tf.train.Features(
            feature={f.name: _tf_feature(row[f.name], f.dtype) for f in cols}
        )
    ).SerializeToString()


@dataclass
class DatasetInfo:
    """What :func:`write_dataset` wrote."""

    schema: Schema
    schema_path: str
    splits: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def write_dataset(
    features: dict[str, np.ndarray],
    labels: np.ndarray,
    output_dir: str,
    *,
    task: str = "classification",
    label_name: str = "label",
    num_shards: int = 4,
    eval_fraction: float = 0.2,
    gzip: bool = False,
    seed: int = 0,
    schema: Schema | None = None,
) -> DatasetInfo:
    """Write ``train``/``eval`` TFRecord shards and ``schema.json`` to ``output_dir``.

    Rows are shuffled with ``seed`` before the split, so the eval split is a fair held-out set.
    Without ``schema`` it is made from the arrays (:func:`schema_of_arrays`); with one (a
    table's, from :mod:`trainer.tabular`) ``features`` are keyed by its feature names and
    ``labels`` already encoded.

    Example:
        >>> write_dataset({"pixels": x}, y, "gs://b/digits", num_shards=4)  # doctest: +SKIP
    """
    n = len(labels)
    if n == 0:
        raise BadInputError("no rows to convert: the input is empty")
    if any(len(a) != n for a in features.values()):
        raise BadInputError("every feature column must have as many rows as the labels")
    if not 0 <= eval_fraction < 1:
        raise UsageError("--eval-fraction must be in [0, 1)")
    if schema is None:
        schema, labels = schema_of_arrays(features, labels, task, label_name)
    label_name = schema.label.name
    order = np.random.default_rng(seed).permutation(n)
    n_eval = int(round(n * eval_fraction))
    splits = {"eval": order[:n_eval], "train": order[n_eval:]} if n_eval else {"train": order}
    options = tf.io.TFRecordOptions(compression_type="GZIP" if gzip else "")
    suffix = ".tfrecord.gz" if gzip else ".tfrecord"
    info = DatasetInfo(schema, storage.join(output_dir, SCHEMA_FILE))
    staging = tempfile.mkdtemp(prefix="convert-")
    try:
        for split, rows in splits.items():
            shards = max(1, min(num_shards, len(rows)))
            names = []
            for s, part in enumerate(np.array_split(rows, shards)):
                name = f"{split}-{s:05d}-of-{shards:05d}{suffix}"
                with tf.io.TFRecordWriter(os.path.join(staging, name), options) as w:
                    for i in part:
                        row = {k: v[i] for k, v in features.items()}
                        row[label_name] = labels[i]
                        w.write(serialize_example(row, schema))
                names.append(storage.join(output_dir, name))
            info.splits[split] = names
            info.counts[split] = len(rows)
        with open(os.path.join(staging, SCHEMA_FILE), "w") as f:
            f.write(schema.to_json())
        storage.copy_tree(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("wrote %s rows and the schema to %s", info.counts, output_dir)
    return info


# ---------------------------------------------------------------- reading


# --data-format / AIP_DATA_FORMAT values -> the reader; Vertex spells TFRecord "tf-record".
DATA_FORMATS = {"csv": "csv", "jsonl": "jsonl", "tf-record": "tfrecord", "tfrecord": "tfrecord"}
# Target column names taken without --target-column when a file has one of them.
DEFAULT_TARGETS = ("label", "target")


def resolve_files(patterns: str | list[str], what: str = "--train-files") -> list[str]:
    """Expand comma-separated globs (local or ``gs://``); a pattern matching nothing is an error."""
    if isinstance(patterns, str):
        patterns = [p for p in patterns.split(",") if p.strip()]
    files: list[str] = []
    for pattern in patterns:
        pattern = pattern.strip()
        matched = storage.glob(pattern) if any(c in pattern for c in "*?[") else None
        if matched is None:
            if storage.exists(pattern) and storage.list_dir(pattern):
                matched = [f for f in storage.list_files(pattern) if format_of(f)]
            elif storage.exists(pattern):
                matched = [pattern]
            else:
                matched = []
        # The schema and marker/hidden files may sit beside the shards: they are not data.
        matched = [f for f in matched if not _is_side_file(f)]
        if not matched:
            raise NotFoundError(pattern, f"{what} matched no files; check the path or glob")
        files.extend(matched)
    return files


def _is_side_file(path: str) -> bool:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name == SCHEMA_FILE or name.startswith(("_", "."))


def format_of(path: str) -> str | None:
    """``tfrecord``, ``csv`` or ``jsonl`` from a file's name (``.gz`` allowed), else None."""
    name = path.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(TFRECORD_SUFFIXES):
        return "tfrecord"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(JSON_SUFFIXES):
        return "jsonl"
    # A bare .gz is a GZIP TFRecord file, as trainer.convert --gzip once named them.
    return "tfrecord" if path.lower().endswith(".gz") else None


def _data_format(value: str | None) -> str | None:
    if value is None:
        return None
    fmt = DATA_FORMATS.get(value.lower())
    if fmt is None:
        raise UsageError(
            f"data format {value!r} is not supported; use one of {', '.join(DATA_FORMATS)}"
        )
    return fmt


def stage_files(files: list[str], local_dir: str) -> list[str]:
    """Local copies of ``files``: ``gs://`` objects are downloaded in parallel, local kept.

    Files already staged (same name and size) are not downloaded again.
    """
    os.makedirs(local_dir, exist_ok=True)

    def one(i_uri):
        i, uri = i_uri
        if not storage.is_gcs(uri):
            return uri
        local = os.path.join(local_dir, f"{i:05d}-{os.path.basename(uri)}")
        if not os.path.exists(local):
            storage.download_file(uri, local)
        return local

    with ThreadPoolExecutor(max_workers=storage.PARALLEL_TRANSFERS) as pool:
        return list(pool.map(one, enumerate(files)))


def stage_sources(
    patterns: str | list[str],
    staging_dir: str,
    data_format: str | None = None,
    what: str = "--train-files",
) -> list[Source]:
    """Resolve ``patterns``, decide each file's format and copy ``gs://`` files locally.

    ``data_format`` (``csv``, ``jsonl``, ``tf-record``) is used for every file, as Vertex's
    ``AIP_DATA_FORMAT`` says; without it the name decides (``.csv``, ``.jsonl``,
    ``.tfrecord``, each optionally ``.gz``).
    """
    files = resolve_files(patterns, what)
    fmt = _data_format(data_format)
    formats = []
    for f in files:
        file_fmt = fmt or format_of(f)
        if file_fmt is None:
            raise BadInputError(
                f"{f}: unknown file type; name it .csv, .jsonl or .tfrecord (each optionally "
                ".gz), or pass the format (AIP_DATA_FORMAT=csv|jsonl|tf-record)"
            )
        formats.append(file_fmt)
    local = stage_files(files, staging_dir)
    return [Source(u, p, f) for u, p, f in zip(files, local, formats, strict=True)]


@dataclass
class DataStats:
    """Counts from reading the input: records read, bad ones skipped, ones without a label."""

    records: int = 0
    bad: int = 0
    files: int = 0
    missing_target: int = 0

    @property
    def usable(self) -> int:
        return self.records - self.bad - self.missing_target


def _finite(parsed: dict, schema: Schema) -> tf.Tensor:
    """True where every float feature (and float label) of a record is finite.

    A feature with a training mean may be NaN (missing: the model imputes it), not infinite.
    """
    checks = []
    for f in [*schema.features, schema.label]:
        if f.dtype != "float32":
            continue
        value = parsed[f.name]
        ok = tf.logical_not(tf.math.is_inf(value)) if f.mean is not None else None
        ok = tf.math.is_finite(value) if ok is None else ok
        checks.append(tf.reduce_all(ok, axis=list(range(-len(f.shape), 0))) if f.shape else ok)
    if not checks:
        return tf.constant(True)
    return tf.reduce_all(tf.stack(checks, axis=-1), axis=-1)


def _check_tfrecord(src: Source, schema: Schema, skip_bad: bool) -> tuple[int, int]:
    """(records, bad records) of one shard; raises BadInputError naming it on a mismatch."""
    spec = feature_spec(schema, with_label=True)
    raw = tf.data.TFRecordDataset(src.local, compression_type=_compression(src.local))
    uri = src.uri
    try:
        if not skip_bad:
            n = 0
            for batch in raw.batch(PARSE_BATCH):
                finite = _finite(tf.io.parse_example(batch, spec), schema)
                if not bool(tf.reduce_all(finite)):
                    first = n + int(tf.argmin(tf.cast(finite, tf.int32)))
                    raise BadInputError(
                        f"record {first} of {uri} has NaN or infinite values; clean the data "
                        "or pass --skip-bad-records to skip such records"
                    )
                n += int(batch.shape[0])
            return n, 0
        total = int(raw.ignore_errors().reduce(np.int64(0), lambda c, _: c + 1))
        good = int(
            raw.map(lambda r: tf.io.parse_single_example(r, spec))
            .ignore_errors()
            .filter(lambda p: _finite(p, schema))
            .reduce(np.int64(0), lambda c, _: c + 1)
        )
        return total, total - good
    except tf.errors.DataLossError as exc:
        raise BadInputError(
            f"{uri} is not a readable TFRecord file ({first_line(exc)}); "
            "re-create it, check --train-files, or GZIP files must end in .gz"
        ) from exc
    except tf.errors.InvalidArgumentError as exc:
        raise BadInputError(
            f"a record in {uri} does not match the schema ({first_line(exc)}); fix the data "
            "or the schema, or pass --skip-bad-records to skip such records"
        ) from exc


def _compression(local: str) -> str:
    """``GZIP`` when the file starts with gzip's magic bytes (whatever its name), else ``""``."""
    with open(local, "rb") as f:
        return "GZIP" if f.read(2) == b"\x1f\x8b" else ""


def _tfrecord_dataset(
    paths: list[str], schema: Schema, training: bool, skip_bad: bool
) -> tf.data.Dataset:
    """Parsed ``(features by input name, label)`` records of TFRecord shards, interleaved."""
    spec = feature_spec(schema, with_label=True)
    renames = {f.name: f.input_name for f in schema.features}
    label = schema.label.name

    def split(parsed):
        features = {renames[k]: v for k, v in parsed.items() if k != label}
        return features, parsed[label]

    parts = []
    for compression in ("", "GZIP"):
        group = [p for p in paths if _compression(p) == compression]
        if not group:
            continue
        records = tf.data.Dataset.from_tensor_slices(group).interleave(
            lambda p, c=compression: tf.data.TFRecordDataset(p, compression_type=c),
            cycle_length=min(len(group), 8),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=not training,
        )
        if skip_bad:
            ds = (
                records.map(
                    lambda r: tf.io.parse_single_example(r, spec),
                    num_parallel_calls=tf.data.AUTOTUNE,
                )
                .ignore_errors()
                .filter(lambda p: _finite(p, schema))
            )
        else:
            ds = (
                records.batch(PARSE_BATCH)
                .map(lambda b: tf.io.parse_example(b, spec), num_parallel_calls=tf.data.AUTOTUNE)
                .unbatch()
            )
        parts.append(ds.map(split))
    return _concatenate(parts)


def _concatenate(parts: list[tf.data.Dataset]) -> tf.data.Dataset:
    ds = parts[0]
    for p in parts[1:]:
        ds = ds.concatenate(p)
    return ds


def _batched(
    ds: tf.data.Dataset,
    usable: int,
    cache_bytes: int,
    batch_size: int,
    training: bool,
    seed: int | None,
) -> tf.data.Dataset:
    """Cache (when small), shuffle (training), batch, size and prefetch a record dataset."""
    if cache_bytes <= MEMORY_CACHE_BYTES:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(min(usable, 10_000), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    # The count is known from reading the input; telling tf.data lets Keras size its epochs.
    ds = ds.apply(tf.data.experimental.assert_cardinality(-(-usable // batch_size)))
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    # Shards are already split across workers by the strategy's data sharding of batches.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def dataset_from_sources(
    sources: list[Source],
    schema: Schema,
    batch_size: int,
    *,
    training: bool,
    skip_bad_records: bool = False,
    seed: int | None = None,
    what: str = "--train-files",
) -> tuple[tf.data.Dataset, DataStats]:
    """A batched ``(features by input name, label)`` dataset of staged files, and counts.

    TFRecord shards are checked against the schema once (a mismatch names the file) and
    then streamed; tables (CSV, JSON lines) are read into memory with the schema.
    """
    stats = DataStats(files=len(sources))
    tfrecords = [s for s in sources if s.fmt == "tfrecord"]
    tables = [s for s in sources if s.fmt != "tfrecord"]
    parts = []
    for src in tfrecords:
        n, bad = _check_tfrecord(src, schema, skip_bad_records)
        stats.records += n
        stats.bad += bad
    if tfrecords:
        paths = [s.local for s in tfrecords]
        parts.append(_tfrecord_dataset(paths, schema, training, skip_bad_records))
    if tables:
        table = tabular.read_columns(tables, schema, skip_bad_records)
        stats.records += table.stats.records
        stats.bad += table.stats.bad
        stats.missing_target += table.stats.missing_target
        parts.append(tf.data.Dataset.from_tensor_slices((table.features, table.labels)))
    if stats.bad:
        log.warning(
            "skipped %d of %d records that do not match the schema (%s)",
            stats.bad,
            stats.records,
            what,
        )
    if stats.usable <= 0:
        raise BadInputError(
            f"{what} {', '.join(s.uri for s in sources[:3])}: no usable records in "
            f"{len(sources)} file(s); check the files are not empty and match the schema"
        )
    size = sum(os.path.getsize(s.local) for s in sources)
    ds = _batched(_concatenate(parts), stats.usable, size, batch_size, training, seed)
    return ds, stats


def make_dataset(
    patterns: str | list[str],
    schema: Schema,
    batch_size: int,
    *,
    training: bool,
    staging_dir: str | None = None,
    skip_bad_records: bool = False,
    seed: int | None = None,
    what: str = "--train-files",
    data_format: str | None = None,
) -> tuple[tf.data.Dataset, DataStats]:
    """A batched ``(features, label)`` dataset and the record counts; features are keyed
    by the schema's input names.

    Raises NotFoundError when nothing matches, BadInputError on a schema mismatch (unless
    ``skip_bad_records``) or when no usable record remains.
    """
    staging_dir = staging_dir or tempfile.mkdtemp(prefix="data-")
    sources = stage_sources(patterns, staging_dir, data_format, what)
    return dataset_from_sources(
        sources,
        schema,
        batch_size,
        training=training,
        skip_bad_records=skip_bad_records,
        seed=seed,
        what=what,
    )


@dataclass
class TrainingData:
    """What :func:`load_tabular` gives the trainer: the schema and the batched datasets.

    ``schema_inferred`` is True when no ``schema.json`` was found and the files' columns
    made it; the trainer writes it into the export either way.
    """

    schema: Schema
    train: tf.data.Dataset
    train_stats: DataStats
    eval: tf.data.Dataset | None = None
    eval_stats: DataStats | None = None
    schema_inferred: bool = False


def find_schema(schema_file: str | None, first_file: str) -> Schema | None:
    """``schema_file``, else ``schema.json`` beside the first training file, else None."""
    if schema_file:
        return Schema.load(schema_file)
    path = storage.join(_parent(first_file), SCHEMA_FILE)
    return Schema.load(path) if storage.exists(path) else None


def _parent(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[0] if storage.is_gcs(path) else os.path.dirname(path)


def _default_target(sources: list[Source]) -> str:
    src = sources[0]
    columns = tabular.csv_header(src) if src.fmt == "csv" else _jsonl_keys(src)
    for name in DEFAULT_TARGETS:
        if name in columns:
            return name
    shown = [c for c in columns if c not in tabular.PANDAS_INDEX_HEADERS]
    raise UsageError(
        f"which column is the target? pass --target-column NAME ({src.uri} has the columns {shown})"
    )


def _jsonl_keys(src: Source) -> list[str]:
    for _, row in tabular.iter_rows(src, skip_bad=True, stats=tabular.TableStats()):
        return list(row)
    return []


def load_tabular(
    train_files: str | list[str],
    eval_files: str | list[str] | None = None,
    *,
    data_format: str | None = None,
    target_column: str | None = None,
    schema_file: str | None = None,
    task: str | None = None,
    batch_size: int = 128,
    skip_bad_records: bool = False,
    seed: int | None = None,
    staging_dir: str | None = None,
) -> TrainingData:
    """The trainer's data: the schema and batched train (and eval) datasets.

    ``train_files``/``eval_files`` are comma-separated globs or lists of CSV, JSON-lines or
    TFRecord files, each optionally gzipped, local or ``gs://`` (copied to ``staging_dir``
    first). ``data_format`` (``csv``, ``jsonl``, ``tf-record``: Vertex's
    ``AIP_DATA_FORMAT``) overrides what the file names say. The schema is ``schema_file``,
    else ``schema.json`` beside the first training file, else inferred from the training
    files (tables or tf.Examples; see :mod:`trainer.tabular`) with ``target_column`` as the
    label (default: a column named ``label`` or ``target``) and ``task`` (default
    classification).

    Example:
        >>> data = load_tabular("gs://b/wine/train.csv", "gs://b/wine/eval.csv",
        ...                     target_column="target")  # doctest: +SKIP
        >>> data.schema.feature_names[:2], data.train_stats.usable  # doctest: +SKIP
        (['alcohol', 'malic_acid'], 142)
    """
    staging_dir = staging_dir or tempfile.mkdtemp(prefix="data-")
    train = stage_sources(train_files, os.path.join(staging_dir, "train"), data_format)
    schema = find_schema(schema_file, train[0].uri)
    inferred = schema is None
    if schema is None:
        schema = tabular.infer_schema(
            train, target_column or _default_target(train), task, skip_bad_records
        )
    else:
        if target_column and target_column != schema.label.name:
            raise UsageError(
                f"--target-column {target_column!r} but the schema's label is "
                f"{schema.label.name!r}; drop one of them or fix the schema"
            )
        if task and task != schema.task:
            raise UsageError(f"--task {task} but the schema's task is {schema.task}")
    train_ds, train_stats = dataset_from_sources(
        train,
        schema,
        batch_size,
        training=True,
        skip_bad_records=skip_bad_records,
        seed=seed,
    )
    result = TrainingData(schema, train_ds, train_stats, schema_inferred=inferred)
    if eval_files:
        sources = stage_sources(
            eval_files, os.path.join(staging_dir, "eval"), data_format, "--eval-files"
        )
        result.eval, result.eval_stats = dataset_from_sources(
            sources,
            schema,
            batch_size,
            training=False,
            skip_bad_records=skip_bad_records,
            what="--eval-files",
        )
    return result


def load_arrays(path: str, x_key: str | None = None, y_key: str | None = None):
    """Features and labels from a ``.npz`` file (arrays ``x``/``y``, or ``x_train``/``y_train``,
    unless ``x_key``/``y_key`` name others). CSV files are read by :mod:`trainer.tabular`."""
    data = storage.read_bytes(path)
    if path.endswith(".npz"):
        npz = np.load(io.BytesIO(data), allow_pickle=False)
        xk = x_key or ("x" if "x" in npz else "x_train" if "x_train" in npz else None)
        yk = y_key or ("y" if "y" in npz else "y_train" if "y_train" in npz else None)
        if xk not in npz or yk not in npz:
            raise BadInputError(
                f"{path}: expected arrays named x and y (found {sorted(npz.files)}); "
                "pass --x-key/--y-key"
            )
        return npz[xk], npz[yk]
    raise BadInputError(f"{path}: expected a .npz file")
