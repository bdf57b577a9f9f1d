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

import logging
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import requests

from jobcommon.errors import JobError
from jobcommon.retry import call_with_retries

log = logging.getLogger(__name__)

SUCCEEDED = "JOB_STATE_SUCCEEDED"
FINAL_STATES = frozenset(
    {SUCCEEDED, "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}
)
COMMAND = ["python", "-m", "executor"]
# Vertex's accelerator type names for the GPUs of compute_engine.GPUS.
ACCELERATOR_TYPES = (
    "NVIDIA_TESLA_T4", "NVIDIA_TESLA_V100", "NVIDIA_TESLA_P100", "NVIDIA_TESLA_P4",
    "NVIDIA_L4", "NVIDIA_TESLA_A100", "NVIDIA_A100_80GB", "NVIDIA_H100_80GB",
    "NVIDIA_H100_MEGA_80GB",
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


class _Transient(Exception):
    pass


def _error_message(resp: requests.Response) -> str:
    try:
        return resp.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return resp.text[:300]


class VertexClient:
    """``customJobs.create`` and ``customJobs.get`` over REST, with retries for 429/5xx."""

    def __init__(self, project: str, region: str, token: str, endpoint: str | None = None):
        self.project = project
        self.region = region
        self.endpoint = (endpoint or default_endpoint(region)).rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    @property
    def collection_url(self) -> str:
        return (
            f"{self.endpoint}/v1/projects/{urllib.parse.quote(self.project)}"
            f"/locations/{urllib.parse.quote(self.region)}/customJobs"
        )

    def _call(self, method: str, url: str, what: str, body: dict | None = None) -> dict:
        def once() -> requests.Response:
            try:
                resp = self.session.request(method, url, json=body, timeout=60)
            except requests.RequestException as exc:
                raise _Transient(f"{url} did not answer: {exc}") from exc
            if resp.status_code == 429 or resp.status_code >= 500:
                raise _Transient(f"HTTP {resp.status_code}: {_error_message(resp)}")
            return resp

        try:
            resp = call_with_retries(
                once, what=what, is_transient=lambda e: isinstance(e, _Transient), attempts=5
            )
        except _Transient as exc:
            raise JobError(f"{what} failed after retries: {exc}") from exc
        if resp.status_code in (401, 403):
            raise JobError(
                f"{what}: Vertex AI denied the request (HTTP {resp.status_code}: "
                f"{_error_message(resp)}); the caller needs roles/aiplatform.user on project "
                f"{self.project}"
            )
        if resp.status_code >= 400:
            raise JobError(f"{what}: HTTP {resp.status_code}: {_error_message(resp)}")
        return resp.json()

    def create(self, body: dict[str, Any]) -> dict:
        """Create a CustomJob; returns it (``name`` identifies it from then on)."""
        return self._call(
            "POST", self.collection_url, f"creating CustomJob {body['displayName']}", body
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
