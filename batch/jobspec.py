"""Read a batch prediction job body into settings: AI Platform's or Vertex AI's.

Both bodies a user already builds for the managed services run unchanged:

- AI Platform ``projects.jobs.create`` (retired)::

    {"jobId": "mnist_batch_20260101_120000",
     "predictionInput": {"dataFormat": "JSON", "inputPaths": ["gs://b/in/*.json"],
                         "outputPath": "gs://b/out", "uri": "gs://b/job/keras_export",
                         "maxWorkerCount": "10", "batchSize": "64", "region": "us-central1"}}

- Vertex AI ``projects.locations.batchPredictionJobs.create``::

    {"displayName": "mnist-batch",
     "unmanagedContainerModel": {"artifactUri": "gs://b/job/keras_export"},
     "inputConfig": {"instancesFormat": "jsonl",
                     "gcsSource": {"uris": ["gs://b/in/*.jsonl"]}},
     "outputConfig": {"predictionsFormat": "jsonl",
                      "gcsDestination": {"outputUriPrefix": "gs://b/out"}},
     "instanceConfig": {"keyField": "id"},
     "manualBatchTuningParameters": {"batchSize": 64}}

Fields only the managed service could use (``modelName``, ``runtimeVersion``,
``dedicatedResources.machineSpec``, ...) and fields this job does not know are returned in
``ignored`` with the reason, so the caller logs each by name instead of dropping it.

Example:
    >>> spec = parse_job_body({"jobId": "j", "predictionInput": {"dataFormat": "JSON",
    ...     "inputPaths": ["gs://b/a.json"], "outputPath": "gs://b/o", "uri": "gs://b/m"}})
    >>> spec.values["input_paths"], spec.values["model_dir"], spec.layout
    (['gs://b/a.json'], 'gs://b/m', 'legacy')
    >>> spec = parse_job_body({"displayName": "d", "inputConfig": {"instancesFormat": "csv",
    ...     "gcsSource": {"uris": ["gs://b/a.csv"]}}, "labels": {"team": "x"}})
    >>> spec.values["data_format"], spec.layout, sorted(spec.ignored)
    ('CSV', 'vertex', ['labels'])
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from batch.options import LEGACY, VERTEX, data_format
from jobcommon import storage
from jobcommon.errors import UsageError

# predictionInput field -> (our setting, how to convert the value)
_LEGACY_FIELDS = {
    "dataFormat": ("data_format", str),
    "inputPaths": ("input_paths", list),
    "outputPath": ("output_path", str),
    "uri": ("model_dir", str),
    "maxWorkerCount": ("max_workers", int),
    "batchSize": ("batch_size", int),
    "signatureName": ("signature_name", str),
    "region": ("region", str),
}
_LEGACY_MANAGED_ONLY = {
    "modelName": "a model deployed on AI Platform cannot be served here; pass --model-dir "
    "(or 'uri') with the SavedModel's gs:// directory",
    "versionName": "a deployed model version cannot be served here; pass --model-dir (or "
    "'uri') with the version's deploymentUri",
    "runtimeVersion": "the batch image fixes the TensorFlow version",
    "accelerator": "pass GPUs with --accelerator type:count (Dataflow worker_accelerator)",
}
# Vertex AI fields read as settings: JSON path -> (our setting, conversion).
_VERTEX_FIELDS = {
    "displayName": ("display_name", str),
    "unmanagedContainerModel.artifactUri": ("model_dir", str),
    "inputConfig.instancesFormat": ("data_format", str),
    "inputConfig.gcsSource.uris": ("input_paths", list),
    "outputConfig.gcsDestination.outputUriPrefix": ("output_path", str),
    "instanceConfig.instanceType": ("instance_type", str),
    "instanceConfig.keyField": ("key_field", str),
    "instanceConfig.includedFields": ("included_fields", list),
    "instanceConfig.excludedFields": ("excluded_fields", list),
    "manualBatchTuningParameters.batchSize": ("batch_size", int),
    "dedicatedResources.maxReplicaCount": ("max_workers", int),
}
_VERTEX_MANAGED_ONLY = {
    "dedicatedResources.machineSpec": "pass the worker type as Beam's --machine_type and "
    "GPUs with --accelerator type:count",
    "dedicatedResources.startingReplicaCount": "Dataflow scales workers itself",
    "unmanagedContainerModel.containerSpec": "the batch image serves the SavedModel itself",
    "unmanagedContainerModel.predictSchemata": "inputs are checked against the SavedModel's "
    "signature instead",
    "serviceAccount": "pass Beam's --service_account_email",
    "labels": "pass Beam's --labels",
    "encryptionSpec": "pass Beam's --dataflow_kms_key",
    "generateExplanation": "explanations are not computed by this job",
    "explanationSpec": "explanations are not computed by this job",
    "modelParameters": "the SavedModel's signature takes no extra parameters here",
}
# Objects whose members are looked at one by one (anything else there is reported).
_VERTEX_OBJECTS = (
    "unmanagedContainerModel",
    "inputConfig",
    "inputConfig.gcsSource",
    "outputConfig",
    "outputConfig.gcsDestination",
    "instanceConfig",
    "manualBatchTuningParameters",
    "dedicatedResources",
)


@dataclass
class JobSpec:
    """Settings found in a job body, the output layout it implies, and fields ignored."""

    values: dict[str, Any]
    job_id: str | None = None
    ignored: dict[str, str] = field(default_factory=dict)
    layout: str = LEGACY


def is_vertex_body(body: dict[str, Any]) -> bool:
    return any(name in body for name in ("inputConfig", "outputConfig", "displayName"))


def parse_job_body(body: dict[str, Any], source: str = "job spec") -> JobSpec:
    """Map an AI Platform or Vertex AI job body to settings (see the module docstring)."""
    if not isinstance(body, dict):
        raise UsageError(
            f"{source} must be a JSON object: an AI Platform job ({{jobId, predictionInput}}) "
            "or a Vertex AI BatchPredictionJob ({displayName, inputConfig, outputConfig})"
        )
    if is_vertex_body(body):
        return _parse_vertex(body, source)
    return _parse_legacy(body, source)


def _convert(source: str, name: str, raw: Any, convert: type) -> Any:
    if convert is list:
        if not isinstance(raw, list):
            raise UsageError(f"{source}: {name} must be a list")
        return [str(p) for p in raw]
    try:
        return convert(raw)
    except (TypeError, ValueError):
        raise UsageError(f"{source}: {name} = {raw!r} is not a valid {convert.__name__}") from None


def _parse_legacy(body: dict[str, Any], source: str) -> JobSpec:
    job_id = body.get("jobId")
    spec_input = body.get("predictionInput", body if "jobId" not in body else None)
    if not isinstance(spec_input, dict):
        raise UsageError(f"{source} has no 'predictionInput' object")
    values: dict[str, Any] = {}
    ignored: dict[str, str] = {}
    for name, raw in spec_input.items():
        if name in _LEGACY_FIELDS:
            key, convert = _LEGACY_FIELDS[name]
            values[key] = _convert(source, f"predictionInput.{name}", raw, convert)
        elif name == "outputDataFormat":
            if str(raw).upper() != "JSON":
                raise UsageError(f"{source}: outputDataFormat {raw!r} is not supported; use JSON")
        elif name in _LEGACY_MANAGED_ONLY:
            ignored[name] = _LEGACY_MANAGED_ONLY[name]
        else:
            ignored[name] = "not a batch prediction setting this job knows"
    for name in body:
        if name not in ("jobId", "predictionInput") and "predictionInput" in body:
            ignored[name] = "only jobId and predictionInput are read from the job body"
    if job_id:
        values["job_id"] = str(job_id)
    return JobSpec(values=values, job_id=job_id, ignored=ignored, layout=LEGACY)


def _parse_vertex(body: dict[str, Any], source: str) -> JobSpec:
    values: dict[str, Any] = {}
    ignored: dict[str, str] = {}
    flat = _flatten(body, ignored)
    for path, raw in flat.items():
        if path in _VERTEX_FIELDS:
            key, convert = _VERTEX_FIELDS[path]
            values[key] = _convert(source, path, raw, convert)
        elif path == "model":
            values["model_resource"] = str(raw)
        elif path == "inputConfig.bigquerySource" or path.startswith("inputConfig.bigquerySource."):
            raise UsageError(
                f"{source}: inputConfig.bigquerySource is not supported here: export the table "
                "to Cloud Storage as jsonl or csv and list the files in gcsSource.uris"
            )
        elif path.startswith("outputConfig.bigqueryDestination"):
            raise UsageError(
                f"{source}: outputConfig.bigqueryDestination is not supported here: use "
                "gcsDestination.outputUriPrefix"
            )
        elif path == "outputConfig.predictionsFormat":
            if str(raw).lower() != "jsonl":
                raise UsageError(
                    f"{source}: outputConfig.predictionsFormat {raw!r} is not supported; use jsonl"
                )
        else:
            managed = next(
                (why for p, why in _VERTEX_MANAGED_ONLY.items() if _under(path, p)), None
            )
            top = next((p for p in _VERTEX_MANAGED_ONLY if _under(path, p)), path)
            ignored[top] = managed or "not a batch prediction setting this job knows"
    if "data_format" in values:
        values["data_format"] = data_format(values["data_format"])
    return JobSpec(values=values, job_id=values.get("display_name"), ignored=ignored, layout=VERTEX)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


def _flatten(body: dict[str, Any], ignored: dict[str, str], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}, descending only into the objects this job reads."""
    flat: dict[str, Any] = {}
    for name, raw in body.items():
        path = f"{prefix}{name}"
        if path in _VERTEX_OBJECTS and isinstance(raw, dict):
            flat.update(_flatten(raw, ignored, path + "."))
        else:
            flat[path] = raw
    return flat


def load_job_spec(path: str) -> JobSpec:
    """Read a job body from a local file or ``gs://`` object."""
    text = storage.read_text(path)
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--job-spec {path} is not valid JSON: {exc}") from None
    return parse_job_body(body, source=f"--job-spec {path}")
