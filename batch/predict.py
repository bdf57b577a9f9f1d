"""``python -m batch.predict``: score JSON lines or TFRecords with a SavedModel, in batch.

Runs Beam's local runner by default (in this process; one model copy per worker process) or
Dataflow with ``--runner DataflowRunner`` (workers run the project's batch image). Flags
not listed here are passed to Beam as pipeline options (``--project``, ``--region``,
``--temp_location``, ``--machine_type``, ``--direct_num_workers``, ...).

Example::

    python -m batch.predict --input-paths 'gs://b/in/*.jsonl' --data-format JSON \\
        --output-path gs://b/out --model-dir gs://b/job/keras_export
    python -m batch.predict --job-spec job.json            # an AI Platform job body
    python -m batch.predict ... --runner DataflowRunner --project P --region us-central1 \\
        --accelerator nvidia-tesla-t4:1 --machine_type n1-standard-8
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import sys
import time
from typing import Any

from batch import jobspec, outputs
from batch.pipeline import DATA_FORMATS, JSON, JobConfig
from jobcommon import cli, storage
from jobcommon.errors import NotFoundError, UsageError
from jobcommon.exports import TF_EXAMPLE_SIGNATURE
from jobcommon.logs import add_logging_flags, setup_logging

log = logging.getLogger("batch.predict")

DEFAULT_SIGNATURE = "serving_default"
DEFAULT_BATCH_SIZE = 64
DEFAULT_MAX_WORKERS = 10
LOCAL_RUNNERS = ("DirectRunner", "FnApiRunner")
DATAFLOW_RUNNER = "DataflowRunner"
# The worker image for Dataflow: built from docker/batch and pushed to Artifact Registry in
# the job's project, in the multi-region that holds the job's region.
DEFAULT_IMAGE_TEMPLATE = "{location}-docker.pkg.dev/{project}/cloud-ml-jobs/batch:latest"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m batch.predict",
        description="Batch prediction with a SavedModel on Beam (local runner or Dataflow). "
        "Unknown flags are passed to Beam as pipeline options.",
    )
    parser.add_argument(
        "--job-spec",
        help="an AI Platform job body (JSON, local or gs://): {jobId, predictionInput: "
        "{dataFormat, inputPaths, outputPath, uri, maxWorkerCount, batchSize, ...}}; "
        "flags given as well override its values",
    )
    parser.add_argument(
        "--input-paths",
        nargs="+",
        help="files or glob patterns (gs:// or local) to score; commas also separate paths",
    )
    parser.add_argument("--data-format", type=str.upper, help=f"one of {list(DATA_FORMATS)}")
    parser.add_argument("--output-path", help="directory (gs:// or local) for the outputs")
    parser.add_argument(
        "--model-dir",
        help="a SavedModel directory, or a parent of timestamped exports (the newest "
        "complete one is used), e.g. gs://b/job/keras_export",
    )
    parser.add_argument(
        "--signature-name",
        help=f"signature to call (default: {DEFAULT_SIGNATURE} for JSON, "
        f"{TF_EXAMPLE_SIGNATURE} for TFRecords)",
    )
    parser.add_argument("--batch-size", type=int, help=f"default {DEFAULT_BATCH_SIZE}")
    parser.add_argument(
        "--max-workers", type=int, help=f"Dataflow max_num_workers (default {DEFAULT_MAX_WORKERS})"
    )
    parser.add_argument(
        "--key-field",
        help="instance field passed through as 'key' in each output row instead of the "
        "instance (for TFRecords, a tf.Example feature)",
    )
    parser.add_argument(
        "--runner", default="DirectRunner", help="Beam runner (default: %(default)s)"
    )
    parser.add_argument(
        "--accelerator",
        help="GPUs per Dataflow worker as TYPE:COUNT, e.g. nvidia-tesla-t4:1 (sets "
        "worker_accelerator with driver installation)",
    )
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="submit the job (Dataflow) and return without waiting for it to finish",
    )
    add_logging_flags(parser)
    return parser


def resolve_config(args: argparse.Namespace) -> tuple[JobConfig, dict[str, Any]]:
    """Merge flags over the job spec; returns the config and extra settings (region...)."""
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if args.job_spec:
        spec = jobspec.load_job_spec(args.job_spec)
        values.update(spec.values)
        if spec.job_id:
            extra["job_id"] = spec.job_id
        for name, why in sorted(spec.ignored.items()):
            log.warning("job spec field %s ignored: %s", name, why)
    for key in (
        "data_format",
        "output_path",
        "model_dir",
        "signature_name",
        "batch_size",
        "max_workers",
        "key_field",
    ):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    if args.input_paths:
        values["input_paths"] = [p for arg in args.input_paths for p in arg.split(",") if p]
    if "region" in values:
        extra["region"] = values.pop("region")
    missing = [
        "--" + k.replace("_", "-")
        for k in ("input_paths", "data_format", "output_path", "model_dir")
        if not values.get(k)
    ]
    if missing:
        raise UsageError(f"missing {', '.join(missing)} (give them as flags or in --job-spec)")
    data_format = str(values["data_format"]).upper()
    if data_format not in DATA_FORMATS:
        raise UsageError(
            f"--data-format {values['data_format']!r} is not supported; use one of "
            f"{list(DATA_FORMATS)}"
        )
    batch_size = int(values.get("batch_size") or DEFAULT_BATCH_SIZE)
    max_workers = int(values.get("max_workers") or DEFAULT_MAX_WORKERS)
    if batch_size < 1 or max_workers < 1:
        raise UsageError("--batch-size and --max-workers must be positive")
    signature = values.get("signature_name") or (
        DEFAULT_SIGNATURE if data_format == JSON else TF_EXAMPLE_SIGNATURE
    )
    config = JobConfig(
        input_paths=tuple(storage.validate(p) for p in values["input_paths"]),
        data_format=data_format,
        output_path=storage.validate(values["output_path"]).rstrip("/"),
        model_dir=storage.validate(values["model_dir"]),
        signature_name=signature,
        batch_size=batch_size,
        max_workers=max_workers,
        key_field=values.get("key_field"),
        job_name=extra.get("job_id"),
    )
    return config, extra


def check_inputs(config: JobConfig) -> int:
    """Every input pattern must match at least one file; returns how many files in all."""
    total = 0
    for pattern in config.input_paths:
        found = storage.glob(pattern)
        if not found:
            raise NotFoundError(pattern, "no input files match this path or pattern")
        total += len(found)
    return total


def check_output(config: JobConfig) -> None:
    """Refuse to mix this job's results with an earlier job's in the same directory."""
    earlier = storage.glob(storage.join(config.output_path, outputs.RESULTS_PREFIX + "-*"))
    if earlier:
        raise UsageError(
            f"--output-path {config.output_path} already holds prediction results "
            f"({earlier[0]}); choose a new output directory"
        )


def dataflow_job_name(job_id: str) -> str:
    """An AI Platform job id (letters, digits, underscores) as a valid Dataflow job name."""
    name = re.sub(r"[^a-z0-9-]+", "-", job_id.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = "batch-" + name
    return name[:63].rstrip("-")


def default_image(project: str, region: str | None) -> str:
    location = (region or "us-central1").split("-")[0]
    location = location if location in ("us", "europe", "asia") else "us"
    return DEFAULT_IMAGE_TEMPLATE.format(location=location, project=project)


def pipeline_options(
    config: JobConfig, args: argparse.Namespace, beam_args: list[str], extra: dict[str, Any]
):
    """Beam PipelineOptions for the runner chosen, with our defaults filled in."""
    from apache_beam.options.pipeline_options import (
        DirectOptions,
        GoogleCloudOptions,
        PipelineOptions,
        SetupOptions,
        StandardOptions,
        WorkerOptions,
    )

    options = PipelineOptions(beam_args)
    runner = args.runner
    options.view_as(StandardOptions).runner = runner
    if runner != DATAFLOW_RUNNER and extra.get("region"):
        log.warning(
            "job spec region %s ignored: it only applies to DataflowRunner", extra["region"]
        )
    if runner in LOCAL_RUNNERS:
        direct = options.view_as(DirectOptions)
        # One in-process worker by default: each extra worker process imports TF and Beam
        # and loads the model again (about 14 s measured on 2 cores, more than a local job
        # of 100k records takes in all, see bench/), and TF already spreads each batch over
        # the cores. --direct_num_workers=N with --direct_running_mode=multi_processing
        # gives one model per worker process.
        if not any(a.startswith("--direct_num_workers") for a in beam_args):
            direct.direct_num_workers = 1
        if not any(a.startswith("--direct_running_mode") for a in beam_args):
            direct.direct_running_mode = (
                "multi_processing" if direct.direct_num_workers != 1 else "in_memory"
            )
        return options
    if runner == DATAFLOW_RUNNER:
        gcp = options.view_as(GoogleCloudOptions)
        workers = options.view_as(WorkerOptions)
        if not gcp.project:
            raise UsageError("--runner DataflowRunner needs --project PROJECT_ID")
        for path in (*config.input_paths, config.output_path, config.model_dir):
            if not storage.is_gcs(path):
                raise UsageError(f"{path}: Dataflow workers can only read and write gs:// paths")
        if not gcp.region:
            gcp.region = extra.get("region") or "us-central1"
        elif extra.get("region") and extra["region"] != gcp.region:
            log.warning("job spec region %s overridden by --region %s", extra["region"], gcp.region)
        bucket, _ = storage.split_gcs(config.output_path)
        if not gcp.temp_location:
            gcp.temp_location = f"gs://{bucket}/tmp/batch-predict"
        if not gcp.staging_location:
            gcp.staging_location = f"{gcp.temp_location}/staging"
        if not gcp.job_name and config.job_name:
            gcp.job_name = dataflow_job_name(config.job_name)
        if not workers.max_num_workers:
            workers.max_num_workers = config.max_workers
        if not workers.sdk_container_image:
            workers.sdk_container_image = default_image(gcp.project, gcp.region)
        setup = options.view_as(SetupOptions)
        if not setup.sdk_location or setup.sdk_location == "default":
            setup.sdk_location = "container"  # Beam is already inside the image
        if args.accelerator:
            kind, _, count = args.accelerator.partition(":")
            if not kind or not (count or "1").isdigit():
                raise UsageError(f"--accelerator {args.accelerator!r}: use TYPE:COUNT")
            service = list(gcp.dataflow_service_options or [])
            service.append(
                f"worker_accelerator=type:{kind};count:{count or 1};install-nvidia-driver"
            )
            gcp.dataflow_service_options = service
    return options


def _workers(options) -> int | None:
    """Worker processes of the local runner (None: a distributed runner)."""
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    if options.view_as(StandardOptions).runner not in LOCAL_RUNNERS:
        return None
    return options.view_as(DirectOptions).direct_num_workers


def make_runner(runner: str):
    """Beam's DirectRunner would first try the Prism runner, which downloads a binary at run
    time; the local runner here is the FnApiRunner it would otherwise fall back to."""
    if runner in LOCAL_RUNNERS:
        from apache_beam.runners.portability.fn_api_runner import fn_runner

        return fn_runner.FnApiRunner()
    return runner


def read_stats(output_path: str) -> dict[str, Any] | None:
    import orjson

    path = storage.join(output_path, outputs.STATS_PREFIX + "-00000-of-00001")
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    setup_logging("batch", args.log_level, args.log_format)
    quiet_beam(args.log_level)
    config, extra = resolve_config(args)
    if args.accelerator and args.runner != DATAFLOW_RUNNER:
        log.warning("--accelerator ignored: it only applies to DataflowRunner")
    n_files = check_inputs(config)
    check_output(config)

    from batch.model import load_model, resolve_export

    export = resolve_export(config.model_dir)
    # Load once here so that a model that cannot be served fails the job before it starts.
    model = load_model(export, config.signature_name)
    info = model.info
    if config.data_format != JSON and not info.takes_examples:
        raise UsageError(
            f"signature {config.signature_name!r} takes {sorted(info.input_specs)}, not "
            f"serialized tf.Examples; TFRecord input needs a tf.Example signature such as "
            f"{TF_EXAMPLE_SIGNATURE!r} (--signature-name)"
        )
    del model
    log.info(
        "model %s, signature %s, inputs %s; %d input file(s), format %s",
        export,
        config.signature_name,
        ", ".join(s.describe() for s in info.input_specs.values()),
        n_files,
        config.data_format,
    )

    import apache_beam as beam

    from batch.pipeline import build_pipeline

    options = pipeline_options(config, args, beam_args, extra)
    config = dataclasses.replace(config, reshuffle=_workers(options) != 1)
    start = time.perf_counter()
    pipeline = beam.Pipeline(runner=make_runner(args.runner), options=options)
    build_pipeline(pipeline, config, info)
    result = pipeline.run()
    if args.no_wait and args.runner not in LOCAL_RUNNERS:
        log.info("job submitted; outputs will appear in %s", config.output_path)
        return 0
    state = result.wait_until_finish()
    elapsed = time.perf_counter() - start
    log_summary(config, result, elapsed, state)
    return 0


def log_summary(config: JobConfig, result: Any, elapsed: float, state: Any) -> None:
    stats = read_stats(config.output_path) or {}
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
        storage.join(config.output_path, outputs.RESULTS_PREFIX + "-*"),
        storage.join(config.output_path, outputs.ERRORS_PREFIX + "-*"),
        storage.join(config.output_path, outputs.STATS_PREFIX + "-00000-of-00001"),
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


def exit_now(code: int) -> None:
    """End the command without tearing down TensorFlow and Beam.

    Interpreter teardown after a finished job took 2-3 s on 2 cores (TensorFlow's and Beam's
    objects and threads), longer than the job's own start-up target; every output is
    written by then, so only what was logged and printed is flushed.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(cli.run(main))
