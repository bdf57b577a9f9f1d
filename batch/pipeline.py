"""The batch prediction pipeline: read, decode, RunInference, write results and errors.

::

    input patterns -> match files -> read each file in batches of --batch-size records
        (JSON/CSV/file-list lines: batch.lines; TFRecords: batch.tfrecords)
        -> reshuffle
        -> decode + check each record of a batch (bad ones leave as error rows; tf.Examples
           are checked only if the model fails on their batch, see batch.isolation)
        -> RunInference(SavedModelHandler: each batch sent on arrival to the model, which
           runs in a process of its own, see batch.model_process; its results lines made
           as one piece of text)
        -> results files            (one row per good record)
        -> errors files             (one row per bad record, from any step)
        -> stats                    (counts; predictions + errors == records read)
        -> done: the running marker removed (see batch.outputs)

Records are grouped into batches as they are read and travel as batches from there on:
Beam's cost per element is then paid once per batch instead of once per record (see
:mod:`batch.batches`). The reshuffle after reading spreads batches over all workers:
Beam's local runner only runs stages after a shuffle in parallel, and on Dataflow it stops
one large file from pinning its records to the worker that read it.

Files are matched and opened with Beam's ``fileio`` (Beam's GCS client, see
:mod:`batch.beam_gcs`) and framed here, one file per element: lines in time linear in
their length, and a corrupt TFRecord fails only itself (``ReadFromText`` is quadratic in a
line's length, ``ReadFromTFRecord`` fails the job on the first bad checksum). Every line is
a record: blank ones are counted as ``blank_line`` errors.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import PredictionResult, RunInference

from batch import batches, beam_gcs, instances, outputs
from batch.instances import RecordError, Shaping
from batch.lines import LongLine, iter_line_batches
from batch.model import SignatureInfo
from batch.model_handler import METRICS_NAMESPACE, SavedModelHandler
from batch.options import (
    CSV,
    FILE_LIST,
    JSON,
    TF_RECORD,
    TF_RECORD_FORMATS,
    TF_RECORD_GZIP,
    VERTEX,
    BatchOptions,
)
from batch.sink import WriteShards
from batch.tfrecords import CorruptRecord, iter_batches
from jobcommon import storage

_COMPRESSION = {TF_RECORD: CompressionTypes.UNCOMPRESSED, TF_RECORD_GZIP: CompressionTypes.GZIP}


def shaping(opts: BatchOptions) -> Shaping:
    return Shaping(
        key_field=opts.key_field,
        included_fields=opts.included_fields,
        excluded_fields=opts.excluded_fields,
        instance_type=opts.instance_type,
        key_as_string=opts.layout == VERTEX,
    )


class ReadFile(beam.DoFn):
    """A matched file -> batches of up to ``batch_size`` records (lines, or TFRecords); for
    CSV, ``(header, lines)``. What cannot be a record (a damaged TFRecord span, a record
    over ``max_bytes``) goes to ``errors`` and counts as read."""

    def __init__(self, data_format: str, batch_size: int, max_bytes: int) -> None:
        self._format = data_format
        self._batch_size = batch_size
        self._max_bytes = max_bytes
        self._read = Metrics.counter(METRICS_NAMESPACE, "records_read")

    def setup(self) -> None:
        beam_gcs.configure()

    def process(self, readable: fileio.ReadableFile):
        path = readable.metadata.path
        if self._format in TF_RECORD_FORMATS:
            with readable.open(compression_type=_COMPRESSION[self._format]) as stream:
                items = iter_batches(stream, path, self._batch_size, max_bytes=self._max_bytes)
                yield from self._records(items)
            return
        with readable.open(compression_type=CompressionTypes.UNCOMPRESSED) as stream:
            items = iter_line_batches(stream, path, self._batch_size, self._max_bytes)
            if self._format != CSV:
                yield from self._records(items)
                return
            header = None
            for item in self._records(items):
                if isinstance(item, list) and header is None:
                    header = _csv_header(item[0])
                    item = item[1:]
                    if not item:
                        continue
                yield (header, item) if isinstance(item, list) else item

    def _records(self, items: Iterable[Any]):
        for item in items:
            if isinstance(item, list):
                yield item
                continue
            self._read.inc()
            yield beam.pvalue.TaggedOutput("errors", _unreadable(item, self._max_bytes))


def _csv_header(line: bytes) -> tuple[str, ...]:
    import csv

    text = line.decode("utf-8", "replace").lstrip("\ufeff").rstrip("\r")
    return tuple(next(csv.reader([text]), []))


def _unreadable(item: CorruptRecord | LongLine, max_bytes: int) -> batches.ErrorTuple:
    if isinstance(item, LongLine):
        message = (
            f"{item.path} line {item.line}: a line of {item.size} bytes is longer than "
            f"--max-instance-bytes {max_bytes}"
        )
        return instances.raw_record(item.prefix), instances.TOO_LARGE, message
    kind = instances.TOO_LARGE if item.too_large else instances.CORRUPT_RECORD
    message = instances.echo_note(f"{item.path} at byte {item.offset}: {item.reason}", item.length)
    return instances.raw_record(item.data), kind, message


class Decode(beam.DoFn):
    """A batch of records -> a Batch of the good ones; bad records go to ``errors``."""

    def __init__(self, opts: BatchOptions, info: SignatureInfo) -> None:
        self._format = opts.data_format
        self._shaping = shaping(opts)
        self._max_bytes = opts.max_instance_bytes
        self._specs = info.input_specs
        self._input = next(iter(info.input_specs))
        self._features = info.schema.feature_names if info.schema else None
        self._read = Metrics.counter(METRICS_NAMESPACE, "records_read")

    def setup(self) -> None:
        beam_gcs.configure()

    def process(self, element):
        if self._format == JSON:
            records, errors = batches.decode_json_batch(element, self._specs, self._shaping)
        elif self._format == CSV:
            header, lines = element
            records, errors = batches.decode_csv_batch(header, lines, self._specs, self._shaping)
        elif self._format == FILE_LIST:
            records, errors = batches.decode_file_list_batch(
                element, self._input, _read_file, self._max_bytes
            )
        else:
            records, errors = batches.decode_example_batch(
                element, self._input, self._features, self._shaping.key_field, self._shaping
            )
        read = len(records) + len(errors)
        self._read.inc(read)
        yield beam.pvalue.TaggedOutput("counts", ("read", read))
        for error in errors:
            yield beam.pvalue.TaggedOutput("errors", error)
        if len(records):
            yield records


def _read_file(path: str, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of a file, through Beam's filesystems."""
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read(limit + 1)


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
    def __init__(self, layout: outputs.Layout) -> None:
        self._layout = layout
        self._failed = Metrics.counter(METRICS_NAMESPACE, "failed")

    def process(self, error: batches.ErrorTuple):
        meta, kind, message = error
        self._failed.inc()
        Metrics.counter(METRICS_NAMESPACE, f"failed_{kind}").inc()
        yield self._layout.error_row(meta, kind, message)


class CountsFn(beam.CombineFn):
    """Sums ``(name, n)`` pairs into one dict of counts; empty input gives zeros."""

    def create_accumulator(self) -> Counter:
        return Counter()

    def add_input(self, acc: Counter, element: tuple[str, int]) -> Counter:
        acc[element[0]] += element[1]
        return acc

    def merge_accumulators(self, accumulators: Iterable[Counter]) -> Counter:
        total: Counter = Counter()
        for acc in accumulators:
            total.update(acc)
        return total

    def extract_output(self, acc: Counter) -> dict[str, Any]:
        return outputs.stats_from_counts(acc)


def _write_stats(stats: dict[str, Any], path: str) -> list[str]:
    storage.write_bytes(path, outputs.orjson.dumps(stats))
    return [path]


def _finish(_impulse: bytes, _written: list, marker: str) -> None:
    """The last step: every output is in place, so the run is no longer interrupted."""
    storage.delete(marker)


def _spread(opts: BatchOptions) -> beam.PTransform:
    if opts.reshuffle:
        return "SpreadRecords" >> beam.Reshuffle()
    return "SpreadRecords" >> beam.Map(lambda batch: batch)


def build_pipeline(pipeline: beam.Pipeline, opts: BatchOptions, info: SignatureInfo) -> None:
    """Add the whole job to ``pipeline`` (nothing runs until the pipeline does)."""
    layout = outputs.Layout(opts.layout)
    out_dir = opts.out_dir
    files = (
        pipeline
        | "InputPatterns" >> beam.Create(list(opts.input_paths))
        | "MatchFiles" >> fileio.MatchAll()
        | "OpenFiles" >> fileio.ReadMatches()
        | "ReadRecords"
        >> beam.ParDo(
            ReadFile(opts.data_format, opts.batch_size, opts.max_instance_bytes)
        ).with_outputs("errors", main="records")
    )
    decoded = (
        files.records
        | _spread(opts)
        | "DecodeRecords"
        >> beam.ParDo(Decode(opts, info)).with_outputs("errors", "counts", main="ok")
    )
    handler = SavedModelHandler(info.export_path, info.signature_name)
    formatted = (
        decoded.ok
        | "RunInference" >> RunInference(handler)
        | "FormatResults"
        >> beam.ParDo(FormatPrediction()).with_outputs("errors", "counts", main="rows")
    )
    errors = [files.errors, decoded.errors, formatted.errors] | "AllErrors" >> beam.Flatten()

    written_results = formatted.rows | "WriteResults" >> WriteShards(out_dir, layout.results)
    written_errors = (
        errors
        | "FormatErrors" >> beam.ParDo(FormatError(layout))
        | "WriteErrors" >> WriteShards(out_dir, layout.errors)
    )
    # What the reader could not frame never reaches a decoder: it is counted as read here.
    counts = [
        decoded.counts,
        files.errors | "CountUnreadable" >> beam.Map(lambda _: ("read", 1)),
        formatted.counts,
        errors | "CountErrors" >> beam.Map(lambda e: ("error:" + e[1], 1)),
    ]
    written_stats = (
        counts
        | "MergeCounts" >> beam.Flatten()
        | "Stats" >> beam.CombineGlobally(CountsFn())
        | "WriteStats" >> beam.Map(_write_stats, layout.stats_path(out_dir))
    )
    written = [written_results, written_errors, written_stats] | "AllWritten" >> beam.Flatten()
    # Once every output is written (a side input is ready only when its input is done).
    _ = (
        pipeline
        | "Once" >> beam.Impulse()
        | "Done"
        >> beam.Map(
            _finish, beam.pvalue.AsList(written), storage.join(out_dir, outputs.RUNNING_MARKER)
        )
    )
