"""The batch prediction pipeline: read, decode, RunInference, write results and errors.

::

    read (JSON lines | TFRecord files) -> batches of --batch-size -> reshuffle
        -> decode + check each record of a batch (bad ones leave as error rows; tf.Examples
           are checked only if the model fails on their batch, see batch.model_handler)
        -> RunInference(SavedModelHandler: each batch started on a model thread on arrival,
           its results lines made there as one piece of text)
        -> prediction.results-*        (one row per good record)
        -> prediction.errors-*         (one row per bad record, from any step)
        -> prediction.errors_stats-*   (counts; predictions + errors == records read)

Records are grouped into batches right after reading and travel as batches from there on:
Beam's cost per element is then paid once per batch instead of once per record (see
:mod:`batch.batches`). The reshuffle after batching spreads batches over all workers:
Beam's local runner only runs stages after a shuffle in parallel, and on Dataflow it stops
one large file from pinning its records to the worker that read it.

JSON lines are read with Beam's ``ReadFromText`` (as bytes, so a line that is not UTF-8
becomes an error row, not a failed job). TFRecords are matched and opened with Beam's
``fileio`` and framed by :mod:`batch.tfrecords`, so a corrupt record fails only itself;
``ReadFromTFRecord`` would fail the job on the first bad checksum.
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam
from apache_beam.coders import coders
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import PredictionResult, RunInference

from batch import batches, instances, outputs
from batch.instances import CORRUPT_RECORD, RecordError
from batch.model import SignatureInfo
from batch.model_handler import METRICS_NAMESPACE, SavedModelHandler
from batch.sink import WriteShards
from batch.tfrecords import CorruptRecord, iter_batches
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
    """A batch of JSON lines -> a Batch of the good ones; bad lines go to ``errors``."""

    def __init__(self, info: SignatureInfo, key_field: str | None) -> None:
        self._specs = info.input_specs
        self._key_field = key_field
        self._read = Metrics.counter(METRICS_NAMESPACE, "records_read")

    def process(self, lines: list[bytes]):
        records, errors = batches.decode_json_batch(lines, self._specs, self._key_field)
        read = len(records) + len(errors)
        self._read.inc(read)
        yield beam.pvalue.TaggedOutput("counts", ("read", read))
        for error in errors:
            yield beam.pvalue.TaggedOutput("errors", error)
        if len(records):
            yield records


class DecodeExample(beam.DoFn):
    """A batch of serialized tf.Examples -> a Batch; bad records go to ``errors``."""

    def __init__(self, info: SignatureInfo, key_field: str | None) -> None:
        self._input = next(iter(info.input_specs)) if info.takes_examples else "examples"
        self._features = info.schema.feature_names if info.schema else None
        self._key_field = key_field
        self._read = Metrics.counter(METRICS_NAMESPACE, "records_read")

    def process(self, records: list[bytes]):
        good, errors = batches.decode_example_batch(
            records, self._input, self._features, self._key_field
        )
        self._read.inc(len(records))
        yield beam.pvalue.TaggedOutput("counts", ("read", len(records)))
        for error in errors:
            yield beam.pvalue.TaggedOutput("errors", error)
        if len(good):
            yield good


class ReadTFRecordFile(beam.DoFn):
    """A matched file -> lists of up to ``batch_size`` records; damaged parts go to
    ``errors`` (and count as read)."""

    def __init__(self, compression: str, batch_size: int) -> None:
        self._compression = compression
        self._batch_size = batch_size
        self._corrupt = Metrics.counter(METRICS_NAMESPACE, "records_read")

    def process(self, readable: fileio.ReadableFile):
        path = readable.metadata.path
        with readable.open(compression_type=self._compression) as stream:
            for chunk in iter_batches(stream, path, self._batch_size):
                if isinstance(chunk, CorruptRecord):
                    self._corrupt.inc()
                    message = f"{chunk.path} at byte {chunk.offset}: {chunk.reason}"
                    yield beam.pvalue.TaggedOutput(
                        "errors", (instances.raw_record(chunk.data), CORRUPT_RECORD, message)
                    )
                else:
                    yield chunk


class FormatPrediction(beam.DoFn):
    """PredictionResult of one Batch -> its results lines joined into one element (the sink
    writes it as lines), and an ``errors`` tuple per record the model failed on."""

    def __init__(self) -> None:
        self._predicted = Metrics.counter(METRICS_NAMESPACE, "predicted")

    def process(self, result: PredictionResult):
        records, inference = result.example, result.inference
        if isinstance(inference, bytes):
            if len(records):
                self._predicted.inc(len(records))
                yield beam.pvalue.TaggedOutput("counts", ("ok", len(records)))
                yield inference
            return
        lines = []
        for head, output in zip(records.row_heads(), inference, strict=True):
            if isinstance(output, RecordError):
                yield beam.pvalue.TaggedOutput("errors", (head, output.kind, output.message))
            else:
                lines.append(batches.result_line(head, output))
        if lines:
            self._predicted.inc(len(lines))
            yield beam.pvalue.TaggedOutput("counts", ("ok", len(lines)))
            yield b"\n".join(lines)


class FormatError(beam.DoFn):
    def __init__(self) -> None:
        self._failed = Metrics.counter(METRICS_NAMESPACE, "failed")

    def process(self, error: batches.ErrorTuple):
        meta, kind, message = error
        self._failed.inc()
        Metrics.counter(METRICS_NAMESPACE, f"failed_{kind}").inc()
        yield outputs.error_row(meta, kind, message)


def _spread(config: JobConfig) -> beam.PTransform:
    if config.reshuffle:
        return "SpreadRecords" >> beam.Reshuffle()
    return "SpreadRecords" >> beam.Map(lambda batch: batch)


def build_pipeline(pipeline: beam.Pipeline, config: JobConfig, info: SignatureInfo) -> None:
    """Add the whole job to ``pipeline`` (nothing runs until the pipeline does)."""
    size = config.batch_size
    if config.data_format == JSON:
        reads = [
            pipeline
            | f"ReadJsonLines{i}"
            >> beam.io.ReadFromText(pattern, coder=coders.BytesCoder(), validate=False)
            for i, pattern in enumerate(config.input_paths)
        ]
        lines = reads | "MergeInputs" >> beam.Flatten() if len(reads) > 1 else reads[0]
        line_batches = (
            lines
            | "BatchLines" >> beam.BatchElements(min_batch_size=size, max_batch_size=size)
            | _spread(config)
        )
        decoded = line_batches | "DecodeJson" >> beam.ParDo(
            DecodeJson(info, config.key_field)
        ).with_outputs("errors", "counts", main="ok")
        read_errors = []
    else:
        files = (
            pipeline
            | "InputPatterns" >> beam.Create(list(config.input_paths))
            | "MatchFiles" >> fileio.MatchAll()
            | "OpenFiles" >> fileio.ReadMatches()
            | "ReadTFRecords"
            >> beam.ParDo(ReadTFRecordFile(_COMPRESSION[config.data_format], size)).with_outputs(
                "errors", main="records"
            )
        )
        record_batches = files.records | _spread(config)
        decoded = record_batches | "DecodeExamples" >> beam.ParDo(
            DecodeExample(info, config.key_field)
        ).with_outputs("errors", "counts", main="ok")
        read_errors = [files.errors]

    handler = SavedModelHandler(info.export_path, info.signature_name)
    formatted = (
        decoded.ok
        | "RunInference" >> RunInference(handler)
        | "FormatResults"
        >> beam.ParDo(FormatPrediction()).with_outputs("errors", "counts", main="rows")
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

    # Unreadable TFRecord parts never reach a decoder: they are counted as read here.
    unreadable = [
        e | f"CountUnreadable{i}" >> beam.Map(lambda _: ("read", 1))
        for i, e in enumerate(read_errors)
    ]
    counts = [
        decoded.counts,
        *unreadable,
        formatted.counts,
        errors | "CountErrors" >> beam.Map(lambda e: ("error:" + e[1], 1)),
    ]
    _ = (
        counts
        | "MergeCounts" >> beam.Flatten()
        | "Stats" >> beam.CombineGlobally(outputs.CountsFn())
        | "StatsJson" >> beam.Map(lambda stats: outputs.orjson.dumps(stats))
        | "WriteStats" >> WriteShards(output_prefix(config.output_path, outputs.STATS_PREFIX))
    )
