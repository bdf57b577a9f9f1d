"""The batch job's settings: its flags, their defaults and checks, in one place.

A job is described by flags, by a job body (``--job-spec``: an AI Platform
``predictionInput`` or a Vertex AI ``BatchPredictionJob``, see :mod:`batch.jobspec`), or by
both, flags winning. :func:`resolve` merges them into one :class:`BatchOptions`, checked
once. Nothing here imports Beam or TensorFlow, so ``--help`` and flag errors come back at
once.

Example:
    >>> parser = build_parser()
    >>> args, beam_args = parser.parse_known_args(["--input-paths", "gs://bkt/in/*.jsonl",
    ...     "--data-format", "jsonl", "--output-path", "gs://bkt/out", "--model-dir",
    ...     "gs://bkt/m", "--direct_num_workers=2"])
    >>> opts = resolve(args)
    >>> opts.data_format, opts.batch_size, opts.layout, beam_args
    ('JSON', 64, 'legacy', ['--direct_num_workers=2'])
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from jobcommon.errors import UsageError
from jobcommon.logs import add_logging_flags

log = logging.getLogger("batch.options")

# Data formats, by their canonical (AI Platform) names.
JSON = "JSON"
CSV = "CSV"
TF_RECORD = "TF_RECORD"
TF_RECORD_GZIP = "TF_RECORD_GZIP"
FILE_LIST = "FILE_LIST"
DATA_FORMATS = (JSON, CSV, TF_RECORD, TF_RECORD_GZIP, FILE_LIST)
TF_RECORD_FORMATS = (TF_RECORD, TF_RECORD_GZIP)
LINE_FORMATS = (JSON, CSV, FILE_LIST)
# Every spelling accepted -> canonical name: AI Platform's dataFormat and Vertex AI's
# instancesFormat (TEXT is AI Platform's name for one JSON instance per line).
FORMAT_SPELLINGS = {
    "JSON": JSON,
    "TEXT": JSON,
    "JSONL": JSON,
    "CSV": CSV,
    "TF_RECORD": TF_RECORD,
    "TF-RECORD": TF_RECORD,
    "TF_RECORD_GZIP": TF_RECORD_GZIP,
    "TF-RECORD-GZIP": TF_RECORD_GZIP,
    "FILE_LIST": FILE_LIST,
    "FILE-LIST": FILE_LIST,
}
# Output layouts: AI Platform's prediction.results-* files, or Vertex AI's
# prediction-<name>-<time>/predictions_*.jsonl directory.
LEGACY = "legacy"
VERTEX = "vertex"
LAYOUTS = (LEGACY, VERTEX)
INSTANCE_TYPES = ("object", "array")

DEFAULT_SIGNATURE = "serving_default"
DEFAULT_BATCH_SIZE = 64
DEFAULT_MAX_WORKERS = 10
# Long enough for real images and documents; a longer record is an error row, not a job
# that runs out of memory.
DEFAULT_MAX_INSTANCE_BYTES = 64 * 2**20
DEFAULT_RUNNER = "DirectRunner"
DEFAULT_DISPLAY_NAME = "batch-prediction"


@dataclass(frozen=True)
class BatchOptions:
    """Everything a batch job needs, resolved from flags and/or a job body and checked.

    ``signature_name`` None means "the default for the data format", chosen once the model
    is loaded (see :func:`batch.predict.load_signature`).
    """

    input_paths: tuple[str, ...]
    data_format: str
    output_path: str
    model_dir: str
    signature_name: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    max_workers: int = DEFAULT_MAX_WORKERS
    max_instance_bytes: int = DEFAULT_MAX_INSTANCE_BYTES
    key_field: str | None = None
    instance_type: str | None = None
    included_fields: tuple[str, ...] = ()
    excluded_fields: tuple[str, ...] = ()
    layout: str = LEGACY
    display_name: str | None = None
    job_name: str | None = None
    region: str | None = None
    runner: str = DEFAULT_RUNNER
    accelerator: str | None = None
    no_wait: bool = False
    # Shuffle batches after reading so all workers share them; pointless with one worker.
    reshuffle: bool = True
    # Where this run writes (for the Vertex layout, its prediction-<name>-<time> directory
    # under output_path); set by batch.predict when the job starts.
    run_dir: str | None = field(default=None, compare=False)

    @property
    def out_dir(self) -> str:
        return self.run_dir or self.output_path

    def with_run_dir(self, run_dir: str) -> BatchOptions:
        return replace(self, run_dir=run_dir)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _fields(text: str) -> list[str]:
    return [name for name in text.split(",") if name]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m batch.predict",
        description="Batch prediction with a SavedModel on Beam (local runner or Dataflow). "
        "Unknown flags are passed to Beam as pipeline options.",
    )
    add = parser.add_argument
    add(
        "--job-spec",
        help="a job body (JSON, local or gs://): AI Platform {jobId, predictionInput: {...}} "
        "or a Vertex AI BatchPredictionJob {displayName, inputConfig, outputConfig, ...}; "
        "flags given as well override its values",
    )
    add(
        "--input-paths",
        nargs="+",
        help="files or glob patterns (gs:// or local) to score; commas also separate paths",
    )
    add(
        "--data-format",
        help="JSON (or jsonl, TEXT), CSV, TF_RECORD (tf-record), TF_RECORD_GZIP "
        "(tf-record-gzip) or FILE_LIST (file-list)",
    )
    add("--output-path", help="directory (gs:// or local) for the outputs")
    add(
        "--model-dir",
        help="a SavedModel directory, or a parent of timestamped exports (the newest "
        "complete one is used), e.g. gs://b/job/keras_export",
    )
    add(
        "--signature-name",
        help=f"signature to call (default: {DEFAULT_SIGNATURE}; for TFRecords the model's "
        "tf.Example signature when it has one)",
    )
    add(
        "--batch-size",
        type=_positive,
        help=f"records per model call (default {DEFAULT_BATCH_SIZE})",
    )
    add(
        "--max-workers",
        type=_positive,
        help=f"Dataflow max_num_workers (default {DEFAULT_MAX_WORKERS})",
    )
    add(
        "--max-instance-bytes",
        type=_positive,
        help="a longer record (line, TFRecord, listed file) is an error row "
        f"(default {DEFAULT_MAX_INSTANCE_BYTES}, 64 MiB)",
    )
    add(
        "--key-field",
        help="instance field passed through as 'key' in each output row instead of the "
        "instance, and not sent to the model (for TFRecords, a tf.Example feature)",
    )
    add("--instance-type", choices=INSTANCE_TYPES, help="send each instance as an object or array")
    add(
        "--included-fields",
        type=_fields,
        help="comma-separated fields sent to the model (their order for --instance-type array)",
    )
    add("--excluded-fields", type=_fields, help="comma-separated fields not sent to the model")
    add(
        "--output-layout",
        choices=LAYOUTS,
        help="legacy: prediction.results-* in --output-path (default for flags and AI "
        "Platform bodies); vertex: prediction-<display-name>-<time>/predictions_*.jsonl "
        "(default for Vertex AI bodies)",
    )
    add(
        "--display-name",
        help=f"the job's name in the vertex layout (default {DEFAULT_DISPLAY_NAME})",
    )
    add("--runner", help=f"Beam runner (default: {DEFAULT_RUNNER})")
    add(
        "--accelerator",
        help="GPUs per Dataflow worker as TYPE:COUNT, e.g. nvidia-tesla-t4:1 (sets "
        "worker_accelerator with driver installation)",
    )
    add(
        "--no-wait",
        action="store_true",
        help="submit the job (Dataflow) and return without waiting for it to finish",
    )
    add_logging_flags(parser)
    return parser


# Flag dest -> BatchOptions field, for the settings a job body can also give.
_SETTINGS = (
    "data_format",
    "output_path",
    "model_dir",
    "signature_name",
    "batch_size",
    "max_workers",
    "max_instance_bytes",
    "key_field",
    "instance_type",
    "included_fields",
    "excluded_fields",
    "display_name",
    "runner",
    "accelerator",
)


def resolve(args: argparse.Namespace) -> BatchOptions:
    """Merge flags over the job body (if any) and check the result once."""
    values: dict[str, Any] = {}
    layout = LEGACY
    if args.job_spec:
        from batch import jobspec

        spec = jobspec.load_job_spec(args.job_spec)
        values.update(spec.values)
        layout = spec.layout
        for name, why in sorted(spec.ignored.items()):
            log.warning("job spec field %s ignored: %s", name, why)
    for key in _SETTINGS:
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    if args.input_paths:
        values["input_paths"] = [p for arg in args.input_paths for p in arg.split(",") if p]
    if args.output_layout:
        layout = args.output_layout
    model_resource = values.pop("model_resource", None)
    if model_resource and values.get("model_dir"):
        log.warning(
            "job spec field model ignored: the SavedModel at %s is served instead",
            values["model_dir"],
        )
    elif model_resource:
        raise UsageError(
            f"job spec model {model_resource!r} is a Vertex AI Model resource, which cannot be "
            "resolved here: pass --model-dir with the model's SavedModel gs:// directory "
            "(its artifactUri)"
        )
    missing = [
        "--" + k.replace("_", "-")
        for k in ("input_paths", "data_format", "output_path", "model_dir")
        if not values.get(k)
    ]
    if missing:
        raise UsageError(f"missing {', '.join(missing)} (give them as flags or in --job-spec)")
    return check(values, layout, bool(getattr(args, "no_wait", False)))


def data_format(text: str) -> str:
    """Any accepted spelling -> the canonical format name.

    >>> data_format("tf-record-gzip"), data_format("jsonl"), data_format("TEXT")
    ('TF_RECORD_GZIP', 'JSON', 'JSON')
    """
    name = FORMAT_SPELLINGS.get(str(text).strip().upper())
    if name is None:
        if str(text).strip().lower() == "bigquery":
            raise UsageError(
                "data format bigquery is not supported here: export the table to Cloud "
                "Storage as jsonl or csv and pass those files"
            )
        raise UsageError(
            f"--data-format {text!r} is not supported; use one of jsonl, csv, tf-record, "
            "tf-record-gzip, file-list (or JSON, TEXT, TF_RECORD, TF_RECORD_GZIP)"
        )
    return name


def _number(values: dict[str, Any], name: str, default: int) -> int:
    raw = values.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise UsageError(f"--{name.replace('_', '-')} {raw!r} must be a positive whole number")
    return value


def check(values: dict[str, Any], layout: str = LEGACY, no_wait: bool = False) -> BatchOptions:
    """Settings (flag names, canonical or not) -> checked BatchOptions."""
    from jobcommon import storage  # not at the top: --help must not wait for it

    fmt = data_format(values["data_format"])
    included = tuple(values.get("included_fields") or ())
    excluded = tuple(values.get("excluded_fields") or ())
    if included and excluded:
        raise UsageError("give --included-fields or --excluded-fields, not both")
    instance_type = values.get("instance_type")
    if instance_type is not None and instance_type not in INSTANCE_TYPES:
        raise UsageError(f"instanceType {instance_type!r}: use object or array")
    record_formats = (*TF_RECORD_FORMATS, FILE_LIST)
    if fmt in record_formats and (included or excluded or instance_type):
        raise UsageError(
            "instanceType, includedFields and excludedFields apply to jsonl and csv input, "
            f"not {fmt}"
        )
    if layout not in LAYOUTS:
        raise UsageError(f"--output-layout {layout!r}: use one of {list(LAYOUTS)}")
    return BatchOptions(
        input_paths=tuple(storage.validate(p) for p in values["input_paths"]),
        data_format=fmt,
        output_path=storage.validate(values["output_path"]).rstrip("/"),
        model_dir=storage.validate(values["model_dir"]),
        signature_name=values.get("signature_name") or None,
        batch_size=_number(values, "batch_size", DEFAULT_BATCH_SIZE),
        max_workers=_number(values, "max_workers", DEFAULT_MAX_WORKERS),
        max_instance_bytes=_number(values, "max_instance_bytes", DEFAULT_MAX_INSTANCE_BYTES),
        key_field=values.get("key_field") or None,
        instance_type=instance_type,
        included_fields=included,
        excluded_fields=excluded,
        layout=layout,
        display_name=values.get("display_name") or None,
        job_name=values.get("job_id") or values.get("display_name") or None,
        region=values.get("region") or None,
        runner=values.get("runner") or DEFAULT_RUNNER,
        accelerator=values.get("accelerator") or None,
        no_wait=no_wait,
    )
