"""Read an AI Platform batch prediction job body (``projects.jobs.create``) into flags.

The body a user already builds for the retired managed service runs unchanged::

    {"jobId": "mnist_batch_20260101_120000",
     "predictionInput": {"dataFormat": "JSON", "inputPaths": ["gs://b/in/*.json"],
                         "outputPath": "gs://b/out", "uri": "gs://b/job/keras_export",
                         "maxWorkerCount": "10", "batchSize": "64", "region": "us-central1"}}

Fields only the managed service could use (``modelName``, ``versionName``,
``runtimeVersion``, ...) are returned as ``ignored`` with the reason, so the caller logs
them instead of dropping them silently.

Example:
    >>> spec = parse_job_body({"jobId": "j", "predictionInput": {"dataFormat": "JSON",
    ...     "inputPaths": ["gs://b/a.json"], "outputPath": "gs://b/o", "uri": "gs://b/m"}})
    >>> spec.values["input_paths"], spec.values["model_dir"]
    (['gs://b/a.json'], 'gs://b/m')
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from jobcommon import storage
from jobcommon.errors import UsageError

# predictionInput field -> (our setting, how to convert the value)
_FIELDS = {
    "dataFormat": ("data_format", str),
    "inputPaths": ("input_paths", list),
    "outputPath": ("output_path", str),
    "uri": ("model_dir", str),
    "maxWorkerCount": ("max_workers", int),
    "batchSize": ("batch_size", int),
    "signatureName": ("signature_name", str),
    "region": ("region", str),
}
_MANAGED_ONLY = {
    "modelName": "a model deployed on AI Platform cannot be served here; pass --model-dir "
    "(or 'uri') with the SavedModel's gs:// directory",
    "versionName": "a deployed model version cannot be served here; pass --model-dir (or "
    "'uri') with the version's deploymentUri",
    "runtimeVersion": "the batch image fixes the TensorFlow version",
    "accelerator": "pass GPUs with --accelerator type:count (Dataflow worker_accelerator)",
}


@dataclass
class JobSpec:
    """Settings found in a job body, the job id, and fields reported as ignored."""

    values: dict[str, Any]
    job_id: str | None = None
    ignored: dict[str, str] = field(default_factory=dict)


def parse_job_body(body: dict[str, Any], source: str = "job spec") -> JobSpec:
    """Map a ``projects.jobs.create`` body (or just its ``predictionInput``) to settings."""
    if not isinstance(body, dict):
        raise UsageError(f"{source} must be a JSON object with 'predictionInput'")
    job_id = body.get("jobId")
    spec_input = body.get("predictionInput", body if "jobId" not in body else None)
    if not isinstance(spec_input, dict):
        raise UsageError(f"{source} has no 'predictionInput' object")
    values: dict[str, Any] = {}
    ignored: dict[str, str] = {}
    for name, raw in spec_input.items():
        if name in _FIELDS:
            key, convert = _FIELDS[name]
            try:
                values[key] = [str(p) for p in raw] if convert is list else convert(raw)
            except (TypeError, ValueError):
                raise UsageError(
                    f"{source}: predictionInput.{name} = {raw!r} is not a valid {convert.__name__}"
                ) from None
            if convert is list and not isinstance(raw, list):
                raise UsageError(f"{source}: predictionInput.{name} must be a list of paths")
        elif name == "outputDataFormat":
            if str(raw).upper() != "JSON":
                raise UsageError(f"{source}: outputDataFormat {raw!r} is not supported; use JSON")
        elif name in _MANAGED_ONLY:
            ignored[name] = _MANAGED_ONLY[name]
        else:
            ignored[name] = "not a batch prediction setting this job knows"
    for name in body:
        if name not in ("jobId", "predictionInput") and "predictionInput" in body:
            ignored[name] = "only jobId and predictionInput are read from the job body"
    if values.get("data_format", "").upper() == "TEXT":
        values["data_format"] = "JSON"  # AI Platform's TEXT: one JSON instance per line
    return JobSpec(values=values, job_id=job_id, ignored=ignored)


def load_job_spec(path: str) -> JobSpec:
    """Read a job body from a local file or ``gs://`` object."""
    text = storage.read_text(path)
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--job-spec {path} is not valid JSON: {exc}") from None
    return parse_job_body(body, source=f"--job-spec {path}")
