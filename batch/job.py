"""One batch job once its options are checked: inputs, output directory, model, pipeline.

Example:
    >>> run(options.check({"input_paths": ["gs://b/in/*.jsonl"], "data_format": "jsonl",
    ...     "output_path": "gs://b/out", "model_dir": "gs://b/m"}), [])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from typing import Any

from batch import options as optionslib
from batch.options import BatchOptions
from jobcommon import storage
from jobcommon.errors import NotFoundError, UsageError
from jobcommon.exports import TF_EXAMPLE_SIGNATURE
from jobcommon.imports import without

log = logging.getLogger("batch.predict")


def check_inputs(opts: BatchOptions) -> int:
    """Every input pattern must match at least one file; returns how many files in all."""
    total = 0
    for pattern in opts.input_paths:
        found = storage.glob(pattern)
        if not found:
            raise NotFoundError(pattern, "no input files match this path or pattern")
        total += len(found)
    return total


def check_output(opts: BatchOptions) -> None:
    """Refuse to mix this job's results with an earlier, finished job's (legacy layout:
    the directory is the user's; the Vertex AI layout makes a new one each run)."""
    from batch import outputs

    if opts.layout == optionslib.VERTEX:
        return
    layout = outputs.Layout(opts.layout)
    if storage.exists(storage.join(opts.output_path, outputs.RUNNING_MARKER)):
        return  # an interrupted run of this job: prepare_output replaces its files
    earlier = storage.glob(layout.results.pattern(opts.output_path))
    if earlier:
        raise UsageError(
            f"--output-path {opts.output_path} already holds prediction results "
            f"({earlier[0]}); choose a new output directory"
        )


def vertex_stamp() -> str:
    """The current UTC time as Vertex AI stamps output directories: YYYY-MM-DDThh:mm:ss.sssZ."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def prepare_output(opts: BatchOptions) -> BatchOptions:
    """Pick this run's output directory, clear what an interrupted run of the same job left
    there, and mark the directory as being written (see :mod:`batch.outputs`)."""
    from batch import outputs

    layout = outputs.Layout(opts.layout)
    if opts.layout == optionslib.VERTEX:
        name = opts.display_name or optionslib.DEFAULT_DISPLAY_NAME
        for marker in storage.glob(
            storage.join(opts.output_path, f"prediction-{name}-*", outputs.RUNNING_MARKER)
        ):
            stale = marker.rsplit("/", 1)[0]
            log.warning("removing %s: an earlier run of this job was interrupted there", stale)
            storage.delete(stale, recursive=True)
        run_dir = outputs.vertex_run_dir(opts.output_path, name, vertex_stamp())
    else:
        run_dir = opts.output_path
        if storage.exists(storage.join(run_dir, outputs.RUNNING_MARKER)):
            stale = layout.earlier_outputs(run_dir) + storage.glob(storage.join(run_dir, ".tmp-*"))
            log.warning(
                "an earlier run of this job into %s was interrupted: removing its %d "
                "file(s) before writing",
                run_dir,
                len(stale),
            )
            for path in stale:
                storage.delete(path, recursive=True)
    storage.write_text(storage.join(run_dir, outputs.RUNNING_MARKER), f"started {vertex_stamp()}\n")
    return opts.with_run_dir(run_dir)


def start_model(opts: BatchOptions) -> Any:
    """Start loading the model in a process of its own (:mod:`batch.model_process`), so that
    TensorFlow loads there while this process goes on; returns the ModelProcess. Without
    ``--signature-name``, TFRecords go to the model's tf.Example signature when it has one,
    everything else to serving_default."""
    from batch import model_process
    from batch.model import resolve_export

    export = resolve_export(opts.model_dir)
    names = (opts.signature_name or optionslib.DEFAULT_SIGNATURE,)
    if opts.signature_name is None and opts.data_format in optionslib.TF_RECORD_FORMATS:
        names = (TF_EXAMPLE_SIGNATURE, *names)
    return model_process.shared(export, names)


def load_signature(opts: BatchOptions, model: Any = None) -> Any:
    """Wait for the model (started by :func:`start_model` unless given), so that one that
    cannot be served fails the job before it starts; returns its SignatureInfo."""
    from batch import model_process

    model = model or start_model(opts)
    info = model.info
    model_process.register(model)
    if opts.data_format in (*optionslib.TF_RECORD_FORMATS, optionslib.FILE_LIST):
        specs = list(info.input_specs.values())
        if len(specs) != 1 or not specs[0].is_string:
            raise UsageError(
                f"{opts.data_format} input sends each record as bytes to a signature with one "
                f"string input; signature {info.signature_name!r} takes "
                f"{', '.join(s.describe() for s in specs)}: pass --signature-name"
            )
    return info


def read_stats(opts: BatchOptions) -> dict[str, Any] | None:
    import orjson

    from batch import outputs

    path = outputs.Layout(opts.layout).stats_path(opts.out_dir)
    try:
        text = storage.read_text(path).strip()
    except NotFoundError:
        return None
    return orjson.loads(text) if text else None


def quiet_beam(level: str) -> None:
    """Beam logs every worker start and bundle at INFO; keep our summary readable."""
    from batch.model_handler import silence_memory_warning

    silence_memory_warning()
    if level != "DEBUG":
        logging.getLogger("apache_beam").setLevel(logging.WARNING)
        # The local runner relays each worker's log lines, including a warning per bundle
        # that memory use cannot be measured; worker failures still surface as exceptions.
        logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(
            logging.ERROR
        )


# Optional packages Beam imports eagerly and a batch job never uses (see jobcommon.imports):
# the MongoDB connector's pymongo and bson, and pandas for DataFrame type hints.
BEAM_UNUSED = ("pymongo", "bson", "pandas")


def import_beam() -> None:
    """Import Beam without :data:`BEAM_UNUSED` (0.3 s of the job's start on 2 cores), unless
    this process has imported it already."""
    if "apache_beam" in sys.modules:
        return
    # Its warning that MongoDB IO will not work says nothing about this job.
    logging.getLogger("apache_beam.io.mongodbio").setLevel(logging.ERROR)
    with without(*BEAM_UNUSED):
        import apache_beam  # noqa: F401


def run(opts: BatchOptions, beam_args: list[str], log_level: str = "INFO") -> int:
    """Check inputs, output and model, then run the pipeline (or submit it)."""
    model = start_model(opts)  # loads on the other core while Beam is imported here
    import_beam()
    from batch import beam_gcs, dataflow

    beam_gcs.configure()
    quiet_beam(log_level)
    n_files = check_inputs(opts)
    check_output(opts)
    info = load_signature(opts, model)
    log.info(
        "model %s, signature %s, inputs %s; %d input file(s), format %s",
        info.export_path,
        info.signature_name,
        ", ".join(s.describe() for s in info.input_specs.values()),
        n_files,
        opts.data_format,
    )
    options = dataflow.pipeline_options(opts, beam_args)
    opts = dataclasses.replace(opts, reshuffle=_workers(options) != 1)
    opts = prepare_output(opts)

    import apache_beam as beam

    from batch.pipeline import build_pipeline

    start = time.perf_counter()
    pipeline = beam.Pipeline(runner=dataflow.make_runner(opts.runner), options=options)
    build_pipeline(pipeline, opts, info)
    result = pipeline.run()
    if opts.no_wait and not dataflow.is_local(opts.runner):
        log.info("job submitted; outputs will appear in %s", opts.out_dir)
        return 0
    state = result.wait_until_finish()
    elapsed = time.perf_counter() - start
    log_summary(opts, result, elapsed, state)
    return 0


def _workers(options: Any) -> int | None:
    """Worker processes of the local runner (None: a distributed runner)."""
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    from batch.dataflow import is_local

    if not is_local(options.view_as(StandardOptions).runner):
        return None
    return options.view_as(DirectOptions).direct_num_workers


def log_summary(opts: BatchOptions, result: Any, elapsed: float, state: Any) -> None:
    from batch import outputs

    layout = outputs.Layout(opts.layout)
    stats = read_stats(opts) or {}
    latency = _latency(result)
    read = stats.get(outputs.READ, 0)
    log.info(
        "batch prediction %s: %d records read, %d predictions, %d errors %s in %.1f s "
        "(%.0f records/s%s); results %s, errors %s, stats %s",
        str(state).split(".")[-1].lower(),
        read,
        stats.get(outputs.PREDICTED, 0),
        stats.get(outputs.FAILED, 0),
        stats.get("errors_by_kind", {}),
        elapsed,
        read / elapsed if elapsed else 0.0,
        latency,
        layout.results.pattern(opts.out_dir),
        layout.errors.pattern(opts.out_dir),
        layout.stats_path(opts.out_dir),
        extra={"json_fields": {"stats": stats, "seconds": round(elapsed, 3)}},
    )


def _latency(result: Any) -> str:
    """Mean batch latency from Beam metrics, when the runner reports them."""
    try:
        from apache_beam.metrics.metric import MetricsFilter

        from batch.model_handler import METRICS_NAMESPACE

        found = result.metrics().query(
            MetricsFilter().with_namespace(METRICS_NAMESPACE).with_name("batch_latency_ms")
        )["distributions"]
        if not found:
            return ""
        dist = found[0].committed or found[0].attempted
        if not dist or not dist.count:
            return ""
        return f", {dist.count} batches, mean {dist.sum / dist.count:.1f} ms, max {dist.max} ms"
    except Exception:  # metrics are a nicety; never fail a finished job over them
        return ""
