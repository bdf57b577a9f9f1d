"""Training data: numpy/CSV -> sharded TFRecords + schema, and the ``tf.data`` input.

Writing (:func:`write_dataset`, CLI :mod:`trainer.convert`): rows become ``tf.Example``
records split over ``train-00000-of-0000N.tfrecord[.gz]`` / ``eval-…`` shards plus one
``schema.json`` (:class:`jobcommon.schema.Schema`), written locally and copied to the
destination (local or ``gs://``) through the storage layer.

Reading (:func:`make_dataset`): ``--train-files`` globs are resolved through the storage
layer, ``gs://`` shards are downloaded in parallel to a local directory (TensorFlow never
sees a ``gs://`` path), every shard is checked against the schema once (a mismatch names
the file; with ``skip_bad_records`` bad records are counted and dropped), then read with
``tf.data``: parallel interleave over shards, parsing in batches, cache and prefetch.
Files ending ``.tfrecord``/``.tfrecords``/``.tfr`` (``.gz`` for GZIP), ``.csv`` and
``.jsonl``/``.json`` are accepted.

Example:
    >>> info = write_dataset({"pixels": x}, y, "gs://b/data", num_shards=4)  # doctest: +SKIP
    >>> ds, stats = make_dataset("gs://b/d/train-*", schema, 128, training=True)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from jobcommon import storage
from jobcommon.errors import BadInputError, NotFoundError, UsageError
from jobcommon.schema import SCHEMA_FILE, Feature, Schema
from trainer.export import feature_spec

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


def infer_schema(
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
) -> DatasetInfo:
    """Write ``train``/``eval`` TFRecord shards and ``schema.json`` to ``output_dir``.

    Rows are shuffled with ``seed`` before the split, so the eval split is a fair held-out set.

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
    schema, labels = infer_schema(features, labels, task, label_name)
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
                matched = [f for f in storage.list_files(pattern) if _format_of(f)]
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


def _format_of(path: str) -> str | None:
    name = path.lower()
    gz = name.endswith(".gz")
    if gz:
        name = name[:-3]
    if name.endswith(TFRECORD_SUFFIXES) or (gz and not name.endswith(CSV_SUFFIXES + JSON_SUFFIXES)):
        return "tfrecord_gzip" if gz else "tfrecord"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(JSON_SUFFIXES):
        return "jsonl"
    return None


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


@dataclass
class DataStats:
    """Counts from checking the input against the schema."""

    records: int = 0
    bad: int = 0
    files: int = 0


def _finite(parsed: dict, schema: Schema) -> tf.Tensor:
    """True where every float feature (and float label) of a record is finite."""
    checks = [
        tf.reduce_all(tf.math.is_finite(parsed[f.name]), axis=list(range(-len(f.shape), 0)))
        if f.shape
        else tf.math.is_finite(parsed[f.name])
        for f in [*schema.features, schema.label]
        if f.dtype == "float32"
    ]
    if not checks:
        return tf.constant(True)
    return tf.reduce_all(tf.stack(checks, axis=-1), axis=-1)


def _check_tfrecord(
    local: str, uri: str, schema: Schema, skip_bad: bool, compression: str
) -> tuple[int, int]:
    """(records, bad records) of one shard; raises BadInputError naming it on a mismatch."""
    spec = feature_spec(schema, with_label=True)
    raw = tf.data.TFRecordDataset(local, compression_type=compression)
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
            f"{uri} is not a readable TFRecord file ({_first_line(exc)}); "
            "re-create it, check --train-files, or GZIP files must end in .gz"
        ) from exc
    except tf.errors.InvalidArgumentError as exc:
        raise BadInputError(
            f"a record in {uri} does not match the schema ({_first_line(exc)}); fix the data "
            "or the schema, or pass --skip-bad-records to skip such records"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__


def _parse_value(value, feature: Feature):
    arr = np.asarray(value, dtype=object if feature.dtype == "string" else feature.dtype)
    return arr.reshape(feature.shape)


def _read_table(local: str, uri: str, fmt: str, schema: Schema, skip_bad: bool):
    """Rows of a CSV (one column per scalar, ``name_i`` per element) or JSON-lines file."""
    cols = schema.features + [schema.label]
    out = {f.name: [] for f in cols}
    total = bad = 0
    with open(local, newline="") as fh:
        rows = csv.DictReader(fh) if fmt == "csv" else (line for line in fh if line.strip())
        for lineno, row in enumerate(rows, start=2 if fmt == "csv" else 1):
            total += 1
            try:
                if fmt == "jsonl":
                    row = json.loads(row)
                values = {}
                for f in cols:
                    if fmt == "csv" and f.size != 1:
                        v = [row[f"{f.name}_{i}"] for i in range(f.size)]
                    else:
                        v = row[f.name]
                    if f is schema.label and f.vocabulary and isinstance(v, str):
                        v = f.vocabulary.index(v)
                    values[f.name] = _parse_value(v, f)
                    if f.dtype == "float32" and not np.all(np.isfinite(values[f.name])):
                        raise ValueError(f"{f.name} has NaN or infinite values")
            except (KeyError, ValueError, TypeError) as exc:
                if not skip_bad:
                    raise BadInputError(
                        f"{uri} line {lineno} does not match the schema ({exc!r}); fix the "
                        "data or pass --skip-bad-records to skip such rows"
                    ) from exc
                bad += 1
                continue
            for k, v in values.items():
                out[k].append(v)
    arrays = {f.name: np.array(out[f.name]).reshape(-1, *f.shape) for f in cols}
    for f in cols:
        if f.dtype != "string":
            arrays[f.name] = arrays[f.name].astype(f.dtype)
    return arrays, total, bad


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
) -> tuple[tf.data.Dataset, DataStats]:
    """A batched ``(features, label)`` dataset and the record counts.

    Raises NotFoundError when nothing matches, BadInputError on a schema mismatch (unless
    ``skip_bad_records``) or when no usable record remains.
    """
    files = resolve_files(patterns, what)
    for f in files:
        if _format_of(f) is None:
            raise BadInputError(
                f"{f}: unknown file type; use .tfrecord (.tfrecord.gz for GZIP), .csv or .jsonl"
            )
    staging_dir = staging_dir or tempfile.mkdtemp(prefix="data-")
    local = stage_files(files, staging_dir)
    stats = DataStats(files=len(files))
    tfrecords: dict[str, list[str]] = {"": [], "GZIP": []}
    tables = []
    for loc, uri in zip(local, files, strict=True):
        fmt = _format_of(uri)
        if fmt.startswith("tfrecord"):
            compression = "GZIP" if fmt == "tfrecord_gzip" else ""
            n, bad = _check_tfrecord(loc, uri, schema, skip_bad_records, compression)
            tfrecords[compression].append(loc)
        else:
            arrays, n, bad = _read_table(loc, uri, fmt, schema, skip_bad_records)
            tables.append(arrays)
        stats.records += n
        stats.bad += bad
    if bad_share := stats.bad:
        log.warning(
            "skipped %d of %d records that do not match the schema (%s)",
            bad_share,
            stats.records,
            what,
        )
    if stats.records - stats.bad <= 0:
        raise BadInputError(
            f"{what} {patterns}: no usable records in {len(files)} file(s); "
            "check the files are not empty and match the schema"
        )
    spec = feature_spec(schema, with_label=True)
    label = schema.label.name

    def split(parsed):
        parsed = dict(parsed)
        y = parsed.pop(label)
        return parsed, y

    parts = []
    for compression, paths in tfrecords.items():
        if not paths:
            continue
        names = tf.data.Dataset.from_tensor_slices(paths)
        records = names.interleave(
            lambda p, c=compression: tf.data.TFRecordDataset(p, compression_type=c),
            cycle_length=min(len(paths), 8),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=not training,
        )
        if skip_bad_records:
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
    for arrays in tables:
        y = arrays.pop(label)
        parts.append(tf.data.Dataset.from_tensor_slices((arrays, y)))
    ds = parts[0]
    for p in parts[1:]:
        ds = ds.concatenate(p)
    size = sum(os.path.getsize(p) for p in local)
    if size <= MEMORY_CACHE_BYTES:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(min(stats.records, 10_000), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    # The count is known from the check above; telling tf.data lets Keras size its epochs.
    usable = stats.records - stats.bad
    ds = ds.apply(tf.data.experimental.assert_cardinality(-(-usable // batch_size)))
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    # Shards are already split across workers by the strategy's data sharding of batches.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options), stats


def load_arrays(path: str, x_key: str | None = None, y_key: str | None = None):
    """Feature columns and labels from a ``.npz`` (keys ``x``/``y`` by default) or a ``.csv``."""
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
