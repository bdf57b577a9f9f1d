"""Build (and optionally send) the Vertex AI request that runs the trainer image.

Prints the request JSON and sends nothing by default (or with ``--dry-run``, to say so in a
script); ``--submit`` POSTs it to the Vertex AI
REST API (``/v1/projects/P/locations/L/customJobs`` or ``…/hyperparameterTuningJobs`` with
``--tune-service``). Arguments after ``--`` go to the trainer as container args.

Example::

    python -m trainer.vertex_submit --project my-proj --region us-central1 \\
        --image-uri us-docker.pkg.dev/my-proj/jobs/trainer:latest \\
        --base-output-dir gs://my-bucket/runs/digits-1 \\
        --machine-type n1-standard-8 --accelerator-type NVIDIA_TESLA_T4 --accelerator-count 1 \\
        --submit -- --train-files 'gs://my-bucket/digits/train-*' --epochs 20

    python -m trainer.vertex_submit ... --tune-service --max-trial-count 8 \\
        --parallel-trial-count 2 \\
        --metric val_accuracy --param learning_rate=double:0.0001:0.01:log \\
        --param hidden_units=categorical:128,256,512 -- --train-files ...

Parameters (``--param NAME=KIND:…``): ``double:MIN:MAX[:log]``, ``int:MIN:MAX[:log]``,
``categorical:A,B,C``, ``discrete:1,2,4``. Credentials for ``--submit``: ``--access-token``
(or ``VERTEX_ACCESS_TOKEN``), else Application Default Credentials.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys

from jobcommon import cli, storage
from jobcommon.errors import UsageError
from jobcommon.gcp_auth import access_token
from jobcommon.logs import add_logging_flags, setup_logging

log = logging.getLogger("trainer.vertex_submit")

_NAME_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")


def parse_param(text: str) -> dict:
    """``learning_rate=double:0.0001:0.01:log`` -> a Vertex ``ParameterSpec``."""
    name, _, spec = text.partition("=")
    kind, _, rest = spec.partition(":")
    parts = rest.split(":") if rest else []
    if not _NAME_RE.match(name) or not rest:
        raise UsageError(f"--param {text!r}: write NAME=KIND:VALUES, e.g. lr=double:0.0001:0.1:log")
    out: dict = {"parameterId": name}
    try:
        if kind in ("double", "int") and len(parts) in (2, 3):
            lo, hi = (
                (float(p) for p in parts[:2]) if kind == "double" else (int(p) for p in parts[:2])
            )
            if lo >= hi:
                raise ValueError("MIN must be below MAX")
            key = "doubleValueSpec" if kind == "double" else "integerValueSpec"
            out[key] = (
                {"minValue": lo, "maxValue": hi}
                if kind == "double"
                else {"minValue": str(lo), "maxValue": str(hi)}
            )
            scale = parts[2] if len(parts) == 3 else "linear"
            scales = {"linear": "UNIT_LINEAR_SCALE", "log": "UNIT_LOG_SCALE"}
            if scale not in scales:
                raise ValueError("the scale must be linear or log")
            out["scaleType"] = scales[scale]
        elif kind == "categorical":
            out["categoricalValueSpec"] = {"values": rest.split(",")}
        elif kind == "discrete":
            out["discreteValueSpec"] = {"values": [float(v) for v in rest.split(",")]}
            out["scaleType"] = "UNIT_LINEAR_SCALE"
        else:
            raise ValueError(
                "KIND must be double:MIN:MAX[:log], int:MIN:MAX[:log], "
                "categorical:A,B or discrete:1,2"
            )
    except ValueError as exc:
        raise UsageError(f"--param {text!r}: {exc}") from exc
    return out


def _pool(args, replicas: int, container_args: list[str]) -> dict:
    machine: dict = {"machineType": args.machine_type}
    if args.accelerator_type:
        machine["acceleratorType"] = args.accelerator_type
        machine["acceleratorCount"] = args.accelerator_count
    container: dict = {"imageUri": args.image_uri, "args": container_args}
    if args.env:
        container["env"] = [
            dict(zip(("name", "value"), e.split("=", 1), strict=True)) for e in args.env
        ]
    return {
        "machineSpec": machine,
        "replicaCount": str(replicas),
        "diskSpec": {"bootDiskType": "pd-ssd", "bootDiskSizeGb": args.boot_disk_gb},
        "containerSpec": container,
    }


def job_spec(args, container_args: list[str]) -> dict:
    """The ``CustomJobSpec``: a primary pool, optional worker pool, base output directory."""
    pools = [_pool(args, 1, container_args)]
    if args.worker_count:
        pools.append(_pool(args, args.worker_count, container_args))
    spec: dict = {"workerPoolSpecs": pools}
    if args.base_output_dir:
        storage.validate(args.base_output_dir)
        if not storage.is_gcs(args.base_output_dir):
            raise UsageError("--base-output-dir must be a gs:// URI")
        spec["baseOutputDirectory"] = {"outputUriPrefix": args.base_output_dir}
    if args.service_account:
        spec["serviceAccount"] = args.service_account
    if args.timeout_hours:
        spec["scheduling"] = {
            "timeout": f"{int(args.timeout_hours * 3600)}s",
            "restartJobOnWorkerRestart": False,
        }
    return spec


def build_request(args, container_args: list[str]) -> tuple[str, dict]:
    """(collection, body): ``customJobs`` or ``hyperparameterTuningJobs`` and its JSON body."""
    spec = job_spec(args, container_args)
    labels = dict(kv.split("=", 1) for kv in args.label)
    if not args.tune_service:
        body = {"displayName": args.display_name, "jobSpec": spec}
        if labels:
            body["labels"] = labels
        return "customJobs", body
    if not args.param:
        raise UsageError("--tune-service needs at least one --param NAME=KIND:VALUES")
    goal = args.goal or ("MINIMIZE" if "loss" in args.metric else "MAXIMIZE")
    body = {
        "displayName": args.display_name,
        "maxTrialCount": args.max_trial_count,
        "parallelTrialCount": args.parallel_trial_count,
        "maxFailedTrialCount": args.max_failed_trial_count,
        "studySpec": {
            "metrics": [{"metricId": args.metric, "goal": goal}],
            "parameters": [parse_param(p) for p in args.param],
            "algorithm": args.algorithm,
        },
        "trialJobSpec": spec,
    }
    if labels:
        body["labels"] = labels
    return "hyperparameterTuningJobs", body


def send(args, collection: str, body: dict, token: str) -> dict:
    """POST the request with ``token``; returns the created job (its ``name`` identifies it).

    Sent once: a create that timed out may still have created the job, and a second one
    would start it twice.
    """
    from jobcommon.rest import call_json

    endpoint = (args.api_endpoint or f"https://{args.region}-aiplatform.googleapis.com").rstrip("/")
    url = f"{endpoint}/v1/projects/{args.project}/locations/{args.region}/{collection}"
    return call_json(
        "POST", url, token=token, body=body, attempts=1,
        what=f"creating the Vertex AI {collection[:-1]} {body.get('displayName', '')}".rstrip(),
        denied_hint=f"the caller needs roles/aiplatform.user on project {args.project}, "
        "or pass a valid --access-token",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m trainer.vertex_submit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--project", required=True, help="Google Cloud project id")
    p.add_argument("--region", default="us-central1", help="default: %(default)s")
    p.add_argument("--display-name", default="trainer", help="job name shown in the console")
    p.add_argument("--image-uri", required=True, help="the trainer image")
    p.add_argument("--machine-type", default="n1-standard-4", help="default: %(default)s")
    p.add_argument("--accelerator-type", help="e.g. NVIDIA_TESLA_T4, NVIDIA_L4")
    p.add_argument("--accelerator-count", type=int, default=1, help="GPUs per replica")
    p.add_argument(
        "--worker-count",
        type=int,
        default=0,
        help="extra workers (worker pool 1) for multi-worker training",
    )
    p.add_argument("--boot-disk-gb", type=int, default=100, help="default: %(default)s")
    p.add_argument("--base-output-dir", help="gs:// base; Vertex sets AIP_MODEL_DIR etc. below it")
    p.add_argument("--service-account", help="run the job as this service account")
    p.add_argument("--timeout-hours", type=float, help="stop the job after this long")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for the container")
    p.add_argument("--label", action="append", default=[], help="KEY=VALUE job label")
    tune = p.add_argument_group("tuning service (--tune-service)")
    tune.add_argument(
        "--tune-service",
        action="store_true",
        help="create a HyperparameterTuningJob instead of a CustomJob",
    )
    tune.add_argument("--param", action="append", default=[], help="NAME=KIND:VALUES")
    tune.add_argument("--metric", default="val_accuracy", help="the trainer's hypertune metric")
    tune.add_argument("--goal", choices=["MAXIMIZE", "MINIMIZE"], help="default: by metric name")
    tune.add_argument("--max-trial-count", type=int, default=8)
    tune.add_argument("--parallel-trial-count", type=int, default=2)
    tune.add_argument("--max-failed-trial-count", type=int, default=0)
    tune.add_argument(
        "--algorithm",
        default="ALGORITHM_UNSPECIFIED",
        choices=["ALGORITHM_UNSPECIFIED", "GRID_SEARCH", "RANDOM_SEARCH"],
    )
    send_group = p.add_mutually_exclusive_group()
    send_group.add_argument(
        "--dry-run", action="store_true", help="print the request and send nothing (the default)"
    )
    send_group.add_argument("--submit", action="store_true", help="send the request")
    p.add_argument("--api-endpoint", help="default: https://REGION-aiplatform.googleapis.com")
    p.add_argument("--access-token", help="OAuth token (default: VERTEX_ACCESS_TOKEN or ADC)")
    add_logging_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    container_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, container_args = argv[:cut], argv[cut + 1 :]
    args = build_parser().parse_args(argv)
    setup_logging("trainer.vertex_submit", args.log_level, args.log_format)
    for kv in args.env + args.label:
        if "=" not in kv:
            raise UsageError(f"{kv!r}: --env and --label take KEY=VALUE")
    collection, body = build_request(args, container_args)
    if args.dry_run or not args.submit:
        print(json.dumps(body, indent=2))
        return 0
    explicit = args.access_token or os.environ.get("VERTEX_ACCESS_TOKEN")
    token = access_token(f"projects/{args.project}", explicit)
    job = send(args, collection, body, token)
    log.info("created %s", job.get("name"))
    print(json.dumps(job), flush=True)  # one line: easy to pick out after the log lines
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
