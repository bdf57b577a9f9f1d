"""``python -m executor launch``: create a run-once GPU VM that executes a notebook.

Before anything is sent, the run is checked as ``executor run`` would check it: the input
notebook is read, the parameters are checked and typed against its parameters cell, and the
OUTPUT template is filled in; the GPU and machine type are checked against each other
(:func:`executor.compute_engine.check_accelerator`). Then Compute Engine's
``instances.insert`` (see :mod:`executor.compute_engine`) creates a VM from a Deep Learning
VM image family (or any ``--image-family``/``--image-project``), optionally Spot, with the
run as instance metadata and a fixed startup script. The script takes every value from the
metadata server, never from its own text, installs the GPU driver if ``nvidia-smi`` fails,
and starts the executor image, whose default command (``python -m executor vm-run``) runs
the notebook and then deletes the VM. Nothing here deletes the VM.

Example::

    python -m executor launch gs://bkt/in.ipynb gs://bkt/out/{run_id}.ipynb -p epochs 40 \\
        --zone us-central1-b --gpu-type t4 --image-uri us-docker.pkg.dev/p/r/executor:1 --spot
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import sys
import tempfile
from typing import Any

from executor import compute_engine, exitcodes
from executor.options import RunOptions
from jobcommon.errors import JobError, UsageError

log = logging.getLogger(__name__)

_IMAGE_RE = re.compile(
    r"^[a-z0-9.-]+(:[0-9]+)?/[A-Za-z0-9._/-]+(:[A-Za-z0-9._-]+|@sha256:[0-9a-f]{64})$"
)

# Fixed text: every value comes from the metadata server at boot, so no value can change
# what the script does.
STARTUP_SCRIPT = r"""#!/bin/bash
# Runs the notebook executor image once; the container deletes this VM when it is done.
set -uo pipefail
MD=http://metadata.google.internal/computeMetadata/v1
md() { curl -sf -H 'Metadata-Flavor: Google' "$MD/instance/attributes/$1"; }
IMAGE="$(md executor_image)"
GPUS="$(md executor_gpu_count || echo 0)"
GPU_ARGS=()
if [ "${GPUS:-0}" != "0" ]; then
  if ! nvidia-smi >/dev/null 2>&1; then
    echo "installing the NVIDIA driver"
    if command -v cos-extensions >/dev/null 2>&1; then
      cos-extensions install gpu
      mount --bind /var/lib/nvidia /var/lib/nvidia
      mount -o remount,exec /var/lib/nvidia
    elif [ -x /opt/deeplearning/install-driver.sh ]; then
      /opt/deeplearning/install-driver.sh
    fi
  fi
  if command -v cos-extensions >/dev/null 2>&1; then
    GPU_ARGS=(--volume /var/lib/nvidia/lib64:/usr/local/nvidia/lib64
              --volume /var/lib/nvidia/bin:/usr/local/nvidia/bin)
    for dev in /dev/nvidia*; do GPU_ARGS+=(--device "$dev:$dev"); done
  else
    GPU_ARGS=(--gpus all)
  fi
fi
REGISTRY="${IMAGE%%/*}"
if command -v docker-credential-gcr >/dev/null 2>&1; then
  export HOME=/var/tmp
  docker-credential-gcr configure-docker --registries="$REGISTRY"
elif command -v gcloud >/dev/null 2>&1; then
  gcloud auth configure-docker "$REGISTRY" --quiet
fi
# --stop-timeout: a Spot VM's shutdown gives about 30 s; the run needs them to save the
# notebook so far (docker stop would give 10).
docker run --rm --network host --stop-timeout 25 "${GPU_ARGS[@]}" -e IMAGE_URI="$IMAGE" "$IMAGE" \
  python -m executor vm-run
code=$?
echo "executor exited with code $code"
if [ "$code" -ge 125 ] && [ "$(md stay_alive || echo false)" != "true" ]; then
  # The container never started, so it cannot delete the VM: do it here.
  TOKEN="$(curl -sf -H 'Metadata-Flavor: Google' "$MD/instance/service-accounts/default/token" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
  ZONE="$(curl -sf -H 'Metadata-Flavor: Google' "$MD/instance/zone")"
  NAME="$(curl -sf -H 'Metadata-Flavor: Google' "$MD/instance/name")"
  PROJECT="$(curl -sf -H 'Metadata-Flavor: Google' "$MD/project/project-id")"
  curl -sf -X DELETE -H "Authorization: Bearer $TOKEN" \
    "https://compute.googleapis.com/compute/v1/projects/$PROJECT/zones/${ZONE##*/}/instances/$NAME"
fi
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The VM's flags; the run's own (parameters, timeouts, --run-id) are added by
    :mod:`executor.options`."""
    g = parser.add_argument_group("VM")
    g.add_argument("--zone", required=True, help="e.g. us-central1-b")
    g.add_argument(
        "--project",
        default=None,
        help="project id (default: GOOGLE_CLOUD_PROJECT)",
    )
    g.add_argument(
        "--image-uri",
        required=True,
        help="the executor image, e.g. us-docker.pkg.dev/PROJECT/REPO/executor:TAG",
    )
    g.add_argument(
        "--machine-type",
        default="n1-standard-8",
        help="N1 for T4/V100/P100/P4, G2 for L4, A2 for A100, A3 for H100 (default: %(default)s)",
    )
    g.add_argument(
        "--gpu-type",
        default=None,
        choices=sorted(compute_engine.GPUS),
        help="default: what a G2/A2/A3 machine type comes with, else t4",
    )
    g.add_argument(
        "--gpu-count",
        type=_count,
        default=None,
        help="0 for a CPU-only VM (default: what a G2/A2/A3 machine type comes with, else 1)",
    )
    g.add_argument(
        "--image-family",
        default=compute_engine.DEFAULT_IMAGE_FAMILY,
        help="boot image family (default: the Deep Learning VM family %(default)s; "
        "cos-stable with --image-project cos-cloud for Container-Optimized OS)",
    )
    g.add_argument(
        "--image-project",
        default=compute_engine.DEFAULT_IMAGE_PROJECT,
        help="project of the image family (default: %(default)s)",
    )
    g.add_argument("--boot-disk-gb", type=_positive_int, default=100, help="default: 100")
    g.add_argument("--name", default=None, help="VM name (default: notebook-<run id>)")
    g.add_argument(
        "--spot",
        action="store_true",
        help="a Spot VM: cheaper, deleted when Compute Engine preempts it; the notebook so "
        "far is saved, the status says PREEMPTED, and launching the same --run-id again "
        "starts the run again",
    )
    g.add_argument(
        "--service-account",
        default="default",
        help="the VM's service account email (default: the project's default account)",
    )
    g.add_argument("--network", default=None, help="VPC network name or URL (default: default)")
    g.add_argument("--subnet", default=None, help="subnetwork name (in the zone's region) or URL")
    g.add_argument(
        "--no-external-ip",
        dest="external_ip",
        action="store_false",
        help="no external IP address (the subnet then needs Private Google Access, and "
        "Cloud NAT to reach a registry outside Google)",
    )
    g.add_argument(
        "--labels",
        action="append",
        default=[],
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="VM labels (repeatable)",
    )
    g.add_argument(
        "--stay-alive",
        action="store_true",
        help="keep the VM after the run (for debugging; you delete it)",
    )
    g.add_argument("--dry-run", action="store_true", help="print the request, send nothing")
    g.add_argument(
        "--access-token",
        default=os.environ.get("CLOUDSDK_AUTH_ACCESS_TOKEN"),
        help="OAuth token (default: CLOUDSDK_AUTH_ACCESS_TOKEN, else the "
        "application default credentials)",
    )


def _check_run(args: argparse.Namespace, options: RunOptions) -> tuple[str, str]:
    """Check the run as ``executor run`` would, without running it: the input exists and
    is a notebook, the parameters fit its parameters cell, the OUTPUT template fills in.
    Returns (run id, the output path)."""
    from executor import runner

    with tempfile.TemporaryDirectory(prefix="executor-launch-") as workdir:
        req = runner.prepare(args.input, args.output, options, workdir=workdir)
    return req.run_id, req.output


def _note_earlier_run(output: str) -> None:
    """Say so when this run id already ran into this output (e.g. a preempted Spot VM's):
    the new VM starts the run over and overwrites what it left."""
    from executor import follow
    from jobcommon.errors import NotFoundError

    try:
        record = follow.read_status(output)
    except (NotFoundError, JobError):
        return
    if record["state"] == exitcodes.RUNNING:
        log.warning(
            "%s says RUNNING (since %s): if that VM still runs, both write the same outputs",
            follow.status_file(output), record.get("started_at"),
        )  # fmt: skip
    else:
        log.info("starting run %s again; it was %s", record.get("run_id"), follow.summary(record))


def build_request(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """(project, the ``instances.insert`` body) for these arguments, all checked first."""
    from executor import outputs
    from jobcommon import storage

    for path in (args.input, args.output):
        storage.validate(path)
        if not storage.is_gcs(path):
            raise UsageError(f"{path!r}: a VM can only read and write gs:// paths")
    if not _IMAGE_RE.match(args.image_uri):
        raise UsageError(
            f"--image-uri {args.image_uri!r} is not an image reference like "
            "REGISTRY/PATH:TAG or REGISTRY/PATH@sha256:DIGEST"
        )
    project = args.project or os.environ.get("GOOGLE_CLOUD_PROJECT")
    if not project:
        raise UsageError("give --project (or set GOOGLE_CLOUD_PROJECT)")
    gpu, gpu_count = compute_engine.default_gpus(args.machine_type, args.gpu_type, args.gpu_count)
    accelerators = compute_engine.check_accelerator(args.machine_type, gpu, gpu_count)
    labels = compute_engine.parse_labels(args.labels)
    options = RunOptions.from_args(args)
    run_id = options.run_id or outputs.new_run_id()
    name = compute_engine.check_vm_name(
        args.name or "notebook-" + re.sub(r"[^a-z0-9-]", "-", run_id.lower())[:50].rstrip("-")
    )
    run_id, output = _check_run(args, dataclasses.replace(options, run_id=run_id))
    _note_earlier_run(output)
    # vm-run fills the template again: braces from parameter values must stay literal.
    literal_output = output.replace("{", "{{").replace("}", "}}")
    metadata = {
        "input_notebook_path": args.input,
        "output_notebook_path": literal_output,
        **dataclasses.replace(options, run_id=run_id).to_metadata(),
        "stay_alive": "true" if args.stay_alive else "false",
        "executor_image": args.image_uri,
        "executor_gpu_count": str(gpu_count),
        "startup-script": STARTUP_SCRIPT,
    }
    if gpu_count > 0 and args.image_project == compute_engine.DEFAULT_IMAGE_PROJECT:
        metadata["install-nvidia-driver"] = "True"  # the Deep Learning VM's own switch
    body = compute_engine.instance_body(
        name=name,
        zone=args.zone,
        machine_type=args.machine_type,
        accelerators=accelerators,
        image_project=args.image_project,
        image_family=args.image_family,
        boot_disk_gb=args.boot_disk_gb,
        metadata=metadata,
        network=args.network,
        subnet=args.subnet,
        external_ip=args.external_ip,
        service_account=args.service_account,
        labels={"run-id": name[:63], **labels},
        spot=args.spot,
    )
    return project, body


def main(args: argparse.Namespace) -> int:
    from executor import outputs

    project, body = build_request(args)
    items = {i["key"]: i["value"] for i in body["metadata"]["items"]}
    output = items["output_notebook_path"].replace("{{", "{").replace("}}", "}")
    url = compute_engine.instances_url(project, args.zone)
    if args.dry_run:
        json.dump({"method": "POST", "url": url, "body": body}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    from jobcommon.gcp_auth import access_token

    token = access_token(f"projects/{project}", explicit=args.access_token)
    try:
        operation = compute_engine.insert_instance(project, args.zone, body, token)
    except JobError as exc:
        if "already exists" in str(exc):
            raise JobError(
                f"{exc}: a VM named {body['name']} is still there (a preempted Spot VM is "
                "deleted within a minute or two): launch again shortly, or pass --name"
            ) from exc
        raise
    log.info(
        "creating VM %s in %s/%s (operation %s); it deletes itself after the run; follow it "
        "with: python -m executor wait %s",
        body["name"],
        project,
        args.zone,
        operation.get("name"),
        output,
    )
    print(
        json.dumps(
            {
                "instance": body["name"],
                "operation": operation.get("name"),
                "output": output,
                "status": outputs.status_path(output),
            }
        )  # fmt: skip
    )
    return 0
