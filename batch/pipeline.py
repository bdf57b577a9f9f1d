"""The batch prediction pipeline: read, decode, RunInference, write results and errors.

::

    read (JSON lines | TFRecord files) -> reshuffle -> decode + check each record
        -> RunInference(SavedModelHandler, batches of --batch-size) -> format
        -> prediction.results-*        (one row per good record)
        -> prediction.errors-*         (one row per bad record, from any step)
        -> prediction.errors_stats-*   (counts; predictions + errors == records read)

The reshuffle after reading spreads records over all workers: Beam's local runner only runs
stages after a shuffle in parallel, and on Dataflow it stops one large file from pinning
its records to the worker that read it.

JSON lines are read with Beam's ``ReadFromText`` (as bytes, so a line that is not UTF-8
becomes an error row, not a failed job). TFRecords are matched and opened with Beam's
``fileio`` and framed by :mod:`batch.tfrecords`, so a corrupt record fails only itself;
``ReadFromTFRecord`` would fail the job on the first bad checksum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.coders import coders
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import PredictionResult, RunInference

from batch import instances, outputs
from batch.instances import CORRUPT_RECORD, RecordError
from batch.model import SignatureInfo
from batch.model_handler import METRICS_NAMESPACE, SavedModelHandler
from batch.sink import WriteShards
from batch.tfrecords import CorruptRecord, iter_records
from jobcommon import storage

JSON = "JSON"
TF_RECORD = "TF_RECORD"
TF_RECORD_GZIP = "TF_RECORD_GZIP"
DATA_FORMATS = (JSON, TF_RECORD, TF_RECORD_GZIP)
_COMPRESSION = {TF_RECORD: CompressionTypes.UNCOMPRESSED, TF_RECORD_GZIP: CompressionTypes.GZIP}


@dataclass(frozen=True)
class JobConfig:
    """Everything the pipeline needs, resolved from flags and/or an AI Platform job body."""

    input_paths: tuple[str, ...]
    data_format: str
    output_path: str
    model_dir: str
    signature_name: str = "serving_default"
    batch_size: int = 64
    max_workers: int = 10
    key_field: str | None = None
    job_name: str | None = None
    # Shuffle records after reading so all workers share them; pointless with one worker.
    reshuffle: bool = True


def output_prefix(output_path: str, prefix: str) -> str:
    return storage.join(output_path, prefix)


class DecodeJson(beam.DoFn):
    """JSON line -> (metadata, tensors); bad lines go to the ``errors`` output."""

    def __init__(self, info: SignatureInfo, key_field: str | None) -> None:
        self._specs = info.input_specs
        self._key_field = key_field
        self._read = Metrics.counter(METRICS_NAMESPACE, "records_read")

    def process(self, line: bytes):
        self._read.inc()
        try:
            yield instances.decode_json(line, self._specs, self._key_field)
        except RecordError as err:
            meta = _meta_of_bad_line(line, self._key_field)
            yield beam.pvalue.TaggedOutput("errors", (meta, err.kind, err.message))


def _meta_of_bad_line(line: bytes, key_field: str | None) -> dict[str, Any]:
    """The best description of a bad line: its parsed value or key if any, else raw bytes."""
    import orjson

    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return instances.raw_record(line)
    if key_field is not None:
        if isinstance(value, dict) and key_field in value:
            return {"key": value[key_field]}
        return instances.raw_record(line)
    return {"instance": value}


class DecodeExample(beam.DoFn):
    """Serialized tf.Example -> (metadata, tensors); bad records go to ``errors``."""

    def __init__(self, info: SignatureInfo, key_field: str | None) -> None:
        self._input = next(iter(info.input_specs)) if info.takes_examples else "examples"
        self._features = info.schema.feature_names if info.schema else None
        self._key_field = key_field
        self._read = Metrics.counter(METRICS_NAMESPACE, "records_read")

    def process(self, record: bytes):
        self._read.inc()
        try:
            yield instances.decode_example(record, self._input, self._features, self._key_field)
        except RecordError as err:
            yield beam.pvalue.TaggedOutput(
                "errors", (instances.raw_record(record), err.kind, err.message)
            )


class ReadTFRecordFile(beam.DoFn):
    """A matched file -> its records; damaged parts go to ``errors`` (and count as read)."""

    def __init__(self, compression: str) -> None:
        self._compression = compression
        self._corrupt = Metrics.counter(METRICS_NAMESPACE, "records_read")

    def process(self, readable: fileio.ReadableFile):
        path = readable.metadata.path
        with readable.open(compression_type=self._compression) as stream:
            for item in iter_records(stream, path):
                if isinstance(item, CorruptRecord):
                    self._corrupt.inc()
                    message = f"{item.path} at byte {item.offset}: {item.reason}"
                    yield beam.pvalue.TaggedOutput(
                        "errors", (instances.raw_record(item.data), CORRUPT_RECORD, message)
                    )
                else:
                    yield item


class FormatPrediction(beam.DoFn):
    """PredictionResult -> a results line, or an ``errors`` tuple when inference failed."""

    def __init__(self) -> None:
        self._predicted = Metrics.counter(METRICS_NAMESPACE, "predicted")

    def process(self, result: PredictionResult):
        meta, _ = result.example
        if isinstance(result.inference, RecordError):
            err = result.inference
            yield beam.pvalue.TaggedOutput("errors", (meta, err.kind, err.message))
        else:
            self._predicted.inc()
            yield outputs.result_row(meta, result.inference)


class FormatError(beam.DoFn):
    def __init__(self) -> None:
        self._failed = Metrics.counter(METRICS_NAMESPACE, "failed")

    def process(self, error: tuple[dict[str, Any], str, str]):
        meta, kind, message = error
        self._failed.inc()
        Metrics.counter(METRICS_NAMESPACE, f"failed_{kind}").inc()
        yield outputs.error_row(meta, kind, message)


def _spread(config: JobConfig) -> beam.PTransform:
    if config.reshuffle:
        return "SpreadRecords" >> beam.Reshuffle()
    return "SpreadRecords" >> beam.Map(lambda record: record)


def _nonblank(line: bytes) -> bool:
    return bool(line.strip())


def build_pipeline(pipeline: beam.Pipeline, config: JobConfig, info: SignatureInfo) -> None:
    """Add the whole job to ``pipeline`` (nothing runs until the pipeline does)."""
    if config.data_format == JSON:
        reads = [
            pipeline
            | f"ReadJsonLines{i}"
            >> beam.io.ReadFromText(pattern, coder=coders.BytesCoder(), validate=False)
            for i, pattern in enumerate(config.input_paths)
        ]
        lines = reads | "MergeInputs" >> beam.Flatten() if len(reads) > 1 else reads[0]
        records = lines | "DropBlankLines" >> beam.Filter(_nonblank) | _spread(config)
        decoded = records | "DecodeJson" >> beam.ParDo(
            DecodeJson(info, config.key_field)
        ).with_outputs("errors", main="ok")
        read_errors = []
    else:
        files = (
            pipeline
            | "InputPatterns" >> beam.Create(list(config.input_paths))
            | "MatchFiles" >> fileio.MatchAll()
            | "OpenFiles" >> fileio.ReadMatches()
            | "ReadTFRecords"
            >> beam.ParDo(ReadTFRecordFile(_COMPRESSION[config.data_format])).with_outputs(
                "errors", main="records"
            )
        )
        records = files.records | _spread(config)
        decoded = records | "DecodeExamples" >> beam.ParDo(
            DecodeExample(info, config.key_field)
        ).with_outputs("errors", main="ok")
        read_errors = [files.errors]

    handler = SavedModelHandler(info.export_path, info.signature_name, config.batch_size)
    formatted = (
        decoded.ok
        | "RunInference" >> RunInference(handler)
        | "FormatResults" >> beam.ParDo(FormatPrediction()).with_outputs("errors", main="rows")
    )
    errors = [*read_errors, decoded.errors, formatted.errors] | "AllErrors" >> beam.Flatten()

    _ = formatted.rows | "WriteResults" >> WriteShards(
        output_prefix(config.output_path, outputs.RESULTS_PREFIX)
    )
    _ = (
        errors
        | "FormatErrors" >> beam.ParDo(FormatError())
        | "WriteErrors" >> WriteShards(output_prefix(config.output_path, outputs.ERRORS_PREFIX))
    )

    read_counts = [records | "CountRead" >> beam.Map(lambda _: ("read", 1))]
    read_counts += [
        e | f"CountUnreadable{i}" >> beam.Map(lambda _: ("read", 1))
        for i, e in enumerate(read_errors)
    ]
    counts = [
        *read_counts,
        formatted.rows | "CountPredicted" >> beam.Map(lambda _: ("ok", 1)),
        errors | "CountErrors" >> beam.Map(lambda e: ("error:" + e[1], 1)),
    ]
    _ = (
        counts
        | "MergeCounts" >> beam.Flatten()
        | "Stats" >> beam.CombineGlobally(outputs.CountsFn())
        | "StatsJson" >> beam.Map(lambda stats: outputs.orjson.dumps(stats))
        | "WriteStats" >> WriteShards(output_prefix(config.output_path, outputs.STATS_PREFIX))
    )
