"""Dataflow (and local runner) glue: Beam pipeline options with the job's defaults, job names.

Example:
    >>> dataflow_job_name("Digits_batch_2026")
    'digits-batch-2026'
    >>> default_image("demo", "europe-west4")
    'europe-docker.pkg.dev/demo/cloud-ml-jobs/batch:latest'
"""

from __future__ import annotations

import logging
import re
from typing import Any

from batch.options import BatchOptions
from jobcommon.errors import UsageError

log = logging.getLogger("batch.dataflow")

LOCAL_RUNNERS = ("DirectRunner", "FnApiRunner")
DATAFLOW_RUNNER = "DataflowRunner"
# The worker image for Dataflow: built from docker/batch and pushed to Artifact Registry in
# the job's project, in the multi-region that holds the job's region.
DEFAULT_IMAGE_TEMPLATE = "{location}-docker.pkg.dev/{project}/cloud-ml-jobs/batch:latest"
DEFAULT_REGION = "us-central1"


def dataflow_job_name(job_id: str) -> str:
    """A job id or display name (letters, digits, underscores...) as a Dataflow job name."""
    name = re.sub(r"[^a-z0-9-]+", "-", job_id.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = "batch-" + name
    return name[:63].rstrip("-")


def default_image(project: str, region: str | None) -> str:
    location = (region or DEFAULT_REGION).split("-")[0]
    location = location if location in ("us", "europe", "asia") else "us"
    return DEFAULT_IMAGE_TEMPLATE.format(location=location, project=project)


def pipeline_options(opts: BatchOptions, beam_args: list[str]) -> Any:
    """Beam PipelineOptions for the runner chosen, with the job's defaults filled in."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    options = PipelineOptions(beam_args)
    options.view_as(StandardOptions).runner = opts.runner
    if opts.runner != DATAFLOW_RUNNER:
        if opts.region:
            log.warning(
                "job spec region %s ignored: it only applies to DataflowRunner", opts.region
            )
        if opts.accelerator:
            log.warning("--accelerator ignored: it only applies to DataflowRunner")
    if opts.runner in LOCAL_RUNNERS:
        _local(options, beam_args)
    elif opts.runner == DATAFLOW_RUNNER:
        _dataflow(options, opts)
    return options


def _local(options: Any, beam_args: list[str]) -> None:
    from apache_beam.options.pipeline_options import DirectOptions

    direct = options.view_as(DirectOptions)
    # One in-process worker by default: each extra worker process imports TF and Beam and
    # loads the model again (about 14 s measured on 2 cores, more than a local job of 100k
    # records takes in all, see bench/), and TF already spreads each batch over the cores.
    # --direct_num_workers=N with --direct_running_mode=multi_processing gives one model
    # per worker process.
    if not any(a.startswith("--direct_num_workers") for a in beam_args):
        direct.direct_num_workers = 1
    if not any(a.startswith("--direct_running_mode") for a in beam_args):
        direct.direct_running_mode = (
            "multi_processing" if direct.direct_num_workers != 1 else "in_memory"
        )


def _dataflow(options: Any, opts: BatchOptions) -> None:
    from apache_beam.options.pipeline_options import (
        GoogleCloudOptions,
        SetupOptions,
        WorkerOptions,
    )

    from jobcommon import storage

    gcp = options.view_as(GoogleCloudOptions)
    workers = options.view_as(WorkerOptions)
    if not gcp.project:
        raise UsageError("--runner DataflowRunner needs --project PROJECT_ID")
    for path in (*opts.input_paths, opts.output_path, opts.model_dir):
        if not storage.is_gcs(path):
            raise UsageError(f"{path}: Dataflow workers can only read and write gs:// paths")
    if not gcp.region:
        gcp.region = opts.region or DEFAULT_REGION
    elif opts.region and opts.region != gcp.region:
        log.warning("job spec region %s overridden by --region %s", opts.region, gcp.region)
    bucket, _ = storage.split_gcs(opts.output_path)
    if not gcp.temp_location:
        gcp.temp_location = f"gs://{bucket}/tmp/batch-predict"
    if not gcp.staging_location:
        gcp.staging_location = f"{gcp.temp_location}/staging"
    if not gcp.job_name and opts.job_name:
        gcp.job_name = dataflow_job_name(opts.job_name)
    if not workers.max_num_workers:
        workers.max_num_workers = opts.max_workers
    if not workers.sdk_container_image:
        workers.sdk_container_image = default_image(gcp.project, gcp.region)
    setup = options.view_as(SetupOptions)
    if not setup.sdk_location or setup.sdk_location == "default":
        setup.sdk_location = "container"  # Beam is already inside the image
    if opts.accelerator:
        kind, _, count = opts.accelerator.partition(":")
        if not kind or not (count or "1").isdigit():
            raise UsageError(f"--accelerator {opts.accelerator!r}: use TYPE:COUNT")
        service = list(gcp.dataflow_service_options or [])
        service.append(f"worker_accelerator=type:{kind};count:{count or 1};install-nvidia-driver")
        gcp.dataflow_service_options = service


def is_local(runner: str) -> bool:
    return runner in LOCAL_RUNNERS


def make_runner(runner: str) -> Any:
    """Beam's DirectRunner would first try the Prism runner, which downloads a binary at run
    time; the local runner here is the FnApiRunner it would otherwise fall back to."""
    if runner in LOCAL_RUNNERS:
        from apache_beam.runners.portability.fn_api_runner import fn_runner

        return fn_runner.FnApiRunner()
    return runner
