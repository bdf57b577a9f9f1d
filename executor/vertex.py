"""Vertex AI CustomJobs for sweeps: one job per run, the executor image, ``executor run`` args.

The body is ``projects.locations.customJobs.create``'s: ``displayName``, ``jobSpec`` with one
worker pool (``machineSpec``, ``replicaCount: 1``, ``containerSpec`` with the image, the
command ``python -m executor`` and the run's args) and ``baseOutputDirectory``. Jobs are then
read with ``customJobs.get`` until they reach a final state.

``--api-endpoint`` (default ``https://REGION-aiplatform.googleapis.com``) points the calls
at another server; tests use a loopback one.

Example:
    >>> body = custom_job_body("sweep-run-000", "us-docker.pkg.dev/p/r/executor:1",
    ...                        ["run", "gs://b/in.ipynb", "gs://b/s/run-000/output.ipynb"],
    ...                        "gs://b/s/run-000", machine_type="n1-standard-4")
    >>> body["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["command"]
    ['python', '-m', 'executor']
    >>> body["jobSpec"]["baseOutputDirectory"]
    {'outputUriPrefix': 'gs://b/s/run-000'}
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from executor import exitcodes
from jobcommon.errors import NotFoundError, UsageError

log = logging.getLogger(__name__)

SUCCEEDED = "JOB_STATE_SUCCEEDED"
FINAL_STATES = frozenset(
    {SUCCEEDED, "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}
)
COMMAND = ["python", "-m", "executor"]
# Vertex AI's GPU accelerator types (its AcceleratorType enum).
ACCELERATOR_TYPES = (
    "NVIDIA_TESLA_T4", "NVIDIA_TESLA_V100", "NVIDIA_TESLA_P100", "NVIDIA_TESLA_P4",
    "NVIDIA_L4", "NVIDIA_TESLA_A100", "NVIDIA_A100_80GB", "NVIDIA_H100_80GB",
    "NVIDIA_H100_MEGA_80GB", "NVIDIA_H200_141GB", "NVIDIA_B200",
)  # fmt: skip


def custom_job_body(
    display_name: str,
    image_uri: str,
    args: list[str],
    base_output_dir: str,
    *,
    machine_type: str,
    accelerator_type: str | None = None,
    accelerator_count: int = 1,
    service_account: str | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The ``CustomJob`` body for one run."""
    machine: dict[str, Any] = {"machineType": machine_type}
    if accelerator_type:
        machine |= {"acceleratorType": accelerator_type, "acceleratorCount": accelerator_count}
    spec: dict[str, Any] = {
        "workerPoolSpecs": [{
            "machineSpec": machine,
            "replicaCount": "1",
            "containerSpec": {"imageUri": image_uri, "command": COMMAND, "args": args},
        }],
        "baseOutputDirectory": {"outputUriPrefix": base_output_dir},
    }  # fmt: skip
    if service_account:
        spec["serviceAccount"] = service_account
    body: dict[str, Any] = {"displayName": display_name[:128], "jobSpec": spec}
    if labels:
        body["labels"] = labels
    return body


def default_endpoint(region: str) -> str:
    return f"https://{region}-aiplatform.googleapis.com"


def collection_url(project: str, region: str, endpoint: str | None = None) -> str:
    """The ``customJobs`` collection of a project and region.

    Example:
        >>> collection_url("p", "europe-west4")
        'https://europe-west4-aiplatform.googleapis.com/v1/projects/p/locations/europe-west4/customJobs'
    """
    return (
        f"{(endpoint or default_endpoint(region)).rstrip('/')}/v1/projects/"
        f"{urllib.parse.quote(project)}/locations/{urllib.parse.quote(region)}/customJobs"
    )


class VertexClient:
    """``customJobs.create`` and ``customJobs.get`` over REST, with retries for 429/5xx."""

    def __init__(self, project: str, region: str, token: str, endpoint: str | None = None):
        self.project = project
        self.region = region
        import requests  # here, not at import time: `batch --help` needs none of it

        self.endpoint = (endpoint or default_endpoint(region)).rstrip("/")
        self.token = token
        self.session = requests.Session()  # one connection pool for the create/get polling

    def _call(self, method: str, url: str, what: str, body: dict | None = None) -> dict:
        from jobcommon.rest import call_json

        return call_json(
            method, url, token=self.token, what=what, body=body, session=self.session,
            denied_hint=f"the caller needs roles/aiplatform.user on project {self.project}",
        )  # fmt: skip

    def create(self, body: dict[str, Any]) -> dict:
        """Create a CustomJob; returns it (``name`` identifies it from then on)."""
        return self._call(
            "POST",
            collection_url(self.project, self.region, self.endpoint),
            f"creating CustomJob {body['displayName']}",
            body,
        )

    def get(self, name: str) -> dict:
        """Read a CustomJob by its resource name (``projects/P/locations/R/customJobs/ID``)."""
        return self._call("GET", f"{self.endpoint}/v1/{name}", f"reading CustomJob {name}")

    def wait(
        self,
        names: list[str],
        interval: float = 30.0,
        on_final: Callable[[dict], None] | None = None,
    ) -> dict[str, dict]:
        """Poll every job until each is in a final state; returns name -> the final job."""
        pending = list(names)
        done: dict[str, dict] = {}
        while pending:
            for name in list(pending):
                job = self.get(name)
                if job.get("state") in FINAL_STATES:
                    done[name] = job
                    pending.remove(name)
                    if on_final:
                        on_final(job)
            if pending:
                time.sleep(interval)
        return done


# ---------------------------------------------------------------- a sweep on Vertex AI


def parameter_args(parameters: dict[str, Any]) -> list[str]:
    """``executor run`` options that give the remote run exactly these (already typed)
    values: numbers, booleans and None as ``-p`` (papermill's conversion reads them back),
    strings as ``-r`` (kept as text), lists and mappings as ``-y`` YAML.

    Example:
        >>> parameter_args({"epochs": 3, "lr": 1e-05, "name": "007", "ok": True, "xs": [1]})
        ['-p', 'epochs', '3', '-p', 'lr', '1e-05', '-r', 'name', '007', '-p', 'ok', 'True', \
'-y', '{xs: [1]}']
    """
    import yaml

    args: list[str] = []
    for name, value in parameters.items():
        if (
            value is None
            or isinstance(value, bool | int)
            or (isinstance(value, float) and math.isfinite(value))
        ):
            args += ["-p", name, repr(value)]
        elif isinstance(value, str):
            args += ["-r", name, value]
        else:
            text = yaml.safe_dump({name: value}, default_flow_style=True, width=2**20)
            args += ["-y", text.strip()]
    return args


# RunOptions fields that are not flags of the remote `executor run`: the parameter sources
# (the run's typed values go as -p/-r/-y instead) and the run id (given on its own).
_NOT_PASSED = frozenset({
    "parameters", "parameters_raw", "parameters_file", "parameters_yaml", "parameters_base64",
    "run_id",
})  # fmt: skip


def option_args(options: Any) -> list[str]:
    """``executor run`` flags for every run option that is not its default.

    Example:
        >>> from executor.options import RunOptions
        >>> option_args(RunOptions(job_timeout=60.0, log_output=True, progress_bar=False))
        ['--job-timeout', '60.0', '--log-output', '--no-progress-bar']
    """
    import dataclasses

    args: list[str] = []
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if f.name in _NOT_PASSED or value == f.default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is False:
            args.append("--no-" + flag[2:])
        else:
            args += [flag, str(value)]
    return args


def sweep_run(req: Any) -> SweepRun:
    """The CustomJob side of a prepared (checked) run of the sweep."""
    injected = {
        "PAPERMILL_INPUT_PATH": req.options.injects_input_path and req.input,
        "PAPERMILL_OUTPUT_PATH": req.options.injects_output_path and req.output,
    }
    # The remote run injects these itself.
    parameters = {k: v for k, v in req.parameters.items() if injected.get(k) != v}
    return SweepRun(req.run_id, req.input, req.output, parameters, option_args(req.options))


@dataclass
class SweepRun:
    """One run of a sweep, already checked locally: what its CustomJob will execute."""

    run_id: str
    input: str
    output: str
    parameters: dict[str, Any]
    run_options: list[str] = field(default_factory=list)

    def args(self) -> list[str]:
        """The container's args: ``run INPUT OUTPUT --run-id ID`` + parameters + options."""
        return [
            "run", self.input, self.output, "--run-id", self.run_id,
            *parameter_args(self.parameters), *self.run_options,
        ]  # fmt: skip


@dataclass
class VertexSettings:
    """Where and on what the sweep's CustomJobs run."""

    project: str
    region: str
    image_uri: str
    machine_type: str = "n1-standard-4"
    accelerator_type: str | None = None
    accelerator_count: int = 1
    display_name: str = "executor-sweep"
    service_account: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    api_endpoint: str | None = None
    poll_interval: float = 30.0

    def check(self, input_path: str, output_prefix: str) -> None:
        """Everything the jobs need that can be checked before anything is read or sent."""
        from jobcommon import storage

        if not self.project:
            raise UsageError("--backend vertex needs --project (or GOOGLE_CLOUD_PROJECT)")
        if not self.region or not self.image_uri:
            raise UsageError("--backend vertex needs --region and --image-uri")
        if self.accelerator_type and self.accelerator_type not in ACCELERATOR_TYPES:
            raise UsageError(
                f"--accelerator {self.accelerator_type!r}: use one of Vertex AI's types "
                f"{', '.join(ACCELERATOR_TYPES)}"
            )
        if self.accelerator_count < 1:
            raise UsageError("--accelerator-count must be 1 or more")
        for path in (input_path, output_prefix):
            if not storage.is_gcs(path):
                raise UsageError(
                    f"{path!r}: a Vertex AI job can only read and write gs:// paths; "
                    "give gs:// INPUT and OUTPUT_PREFIX"
                )


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The sweep's ``--backend`` and what the Vertex AI backend needs."""
    g = parser.add_argument_group("Vertex AI backend (--backend vertex)")
    g.add_argument(
        "--backend",
        choices=("local", "vertex"),
        default="local",
        help="local: kernels on this machine (default); vertex: one Vertex AI CustomJob per run",
    )
    g.add_argument("--project", default=None, help="project id (default: GOOGLE_CLOUD_PROJECT)")
    g.add_argument("--region", default="us-central1", help="default: %(default)s")
    g.add_argument("--image-uri", default=None, help="the executor image")
    g.add_argument("--machine-type", default="n1-standard-4", help="default: %(default)s")
    g.add_argument(
        "--accelerator",
        default=None,
        metavar="TYPE",
        help=f"GPU type, one of {', '.join(ACCELERATOR_TYPES)} (default: none)",
    )
    g.add_argument("--accelerator-count", type=int, default=1, help="GPUs per job (default: 1)")
    g.add_argument(
        "--display-name",
        default="executor-sweep",
        help="jobs are named DISPLAY_NAME-run-NNN (default: %(default)s)",
    )
    g.add_argument("--service-account", default=None, help="run the jobs as this account")
    g.add_argument(
        "--labels", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
        help="job labels (repeatable)",
    )  # fmt: skip
    g.add_argument(
        "--poll-interval",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds between customJobs.get calls (default: %(default)s)",
    )
    g.add_argument(
        "--api-endpoint", default=None, help="default: https://REGION-aiplatform.googleapis.com"
    )
    g.add_argument(
        "--access-token",
        default=os.environ.get("CLOUDSDK_AUTH_ACCESS_TOKEN"),
        help="OAuth token (default: CLOUDSDK_AUTH_ACCESS_TOKEN, else the application "
        "default credentials)",
    )
    g.add_argument("--dry-run", action="store_true", help="print the create requests, send nothing")


def settings_from_args(args: argparse.Namespace) -> VertexSettings:
    from executor.compute_engine import parse_labels

    if args.poll_interval <= 0:
        raise UsageError("--poll-interval must be more than 0 seconds")
    return VertexSettings(
        project=args.project or os.environ.get("GOOGLE_CLOUD_PROJECT") or "",
        region=args.region,
        image_uri=args.image_uri or "",
        machine_type=args.machine_type,
        accelerator_type=args.accelerator,
        accelerator_count=args.accelerator_count,
        display_name=args.display_name,
        service_account=args.service_account,
        labels=parse_labels(args.labels),
        api_endpoint=args.api_endpoint,
        poll_interval=args.poll_interval,
    )


def check_args(args: argparse.Namespace) -> VertexSettings:
    """The backend's settings, checked (call it before the runs are prepared)."""
    settings = settings_from_args(args)
    settings.check(args.input, args.output_prefix)
    return settings


def job_body(run: SweepRun, settings: VertexSettings) -> dict[str, Any]:
    output_dir = run.output.rsplit("/", 1)[0]
    return custom_job_body(
        f"{settings.display_name}-{run.run_id}",
        settings.image_uri,
        run.args(),
        output_dir,
        machine_type=settings.machine_type,
        accelerator_type=settings.accelerator_type,
        accelerator_count=settings.accelerator_count,
        service_account=settings.service_account,
        labels=settings.labels,
    )


def print_requests(runs: list[SweepRun], settings: VertexSettings) -> None:
    """``--dry-run``: the create requests as JSON on stdout; nothing is sent."""
    url = collection_url(settings.project, settings.region, settings.api_endpoint)
    requests_ = [{"method": "POST", "url": url, "body": job_body(run, settings)} for run in runs]
    json.dump(requests_, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _status_or_failure(run: SweepRun, job: dict) -> dict[str, Any]:
    """The run's own status record, or, when its job never wrote one (it did not start,
    or died before the run began), a FAILED record carrying Vertex's reason."""
    from executor import outputs
    from jobcommon import storage

    try:
        record = json.loads(storage.read_text(outputs.status_path(run.output)))
    except (NotFoundError, ValueError):
        record = None
    if record is not None and record.get("state") in exitcodes.FINAL_STATES:
        return record
    reason = (job.get("error") or {}).get("message") or f"the job ended {job.get('state')}"
    return {
        "state": exitcodes.FAILED,
        "exit_code": exitcodes.EXIT_FAILED,
        "run_id": run.run_id,
        "output": run.output,
        "parameters": run.parameters,
        "duration_seconds": None,
        "glued": {},
        "error": {"name": "VertexJobError", "message": f"{job.get('name')}: {reason}"},
    }


def run_backend(args: argparse.Namespace, prepared: list[Any]) -> list[dict] | None:
    """``batch --backend vertex`` after the runs are checked: create the jobs, wait, and
    return the runs' status records; None for ``--dry-run`` (printed, nothing sent)."""
    import shutil

    settings = check_args(args)
    runs = [sweep_run(req) for req in prepared]
    for req in prepared:  # the local copies were only needed for the checks
        shutil.rmtree(req.workdir, ignore_errors=True)
    if args.dry_run:
        print_requests(runs, settings)
        return None
    from jobcommon.gcp_auth import access_token

    token = access_token(f"projects/{settings.project}", explicit=args.access_token)
    return run_sweep(runs, settings, token)


def run_sweep(runs: list[SweepRun], settings: VertexSettings, token: str) -> list[dict]:
    """Create one CustomJob per run, wait for every one, and return the runs' status
    records (in run order) for the sweep's metrics table."""
    client = VertexClient(settings.project, settings.region, token, settings.api_endpoint)
    names: dict[str, SweepRun] = {}
    for run in runs:
        job = client.create(job_body(run, settings))
        names[job["name"]] = run
        log.info("run %s: created CustomJob %s", run.run_id, job["name"])

    def report(job: dict) -> None:
        level = logging.INFO if job["state"] == SUCCEEDED else logging.ERROR
        reason = (job.get("error") or {}).get("message", "")
        log.log(level, "CustomJob %s %s %s", job["name"], job["state"], reason)

    try:
        done = client.wait(list(names), settings.poll_interval, on_final=report)
    except KeyboardInterrupt:
        log.error(
            "stopped waiting; the CustomJobs keep running (cancel them with `gcloud ai "
            "custom-jobs cancel`): %s", ", ".join(names),
        )  # fmt: skip
        raise
    return [_status_or_failure(run, done[name]) for name, run in names.items()]
