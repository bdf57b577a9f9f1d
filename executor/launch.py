"""``python -m executor launch``: create a run-once GPU VM that executes a notebook.

The request is Compute Engine's ``instances.insert``: a Deep Learning VM image (or
Container-Optimized OS with ``--os cos``), GPUs as ``guestAccelerators`` (which require
``onHostMaintenance: TERMINATE``), the default service account with the
``cloud-platform`` scope, and metadata items holding the run plus a fixed startup script.
The script takes every value from the metadata server, never from its own text, installs
the GPU driver if ``nvidia-smi`` fails, and starts the executor image, whose default command
(``python -m executor vm-run``) runs the notebook and then deletes the VM. Nothing here
deletes the VM.

Example::

    python -m executor launch gs://bkt/in.ipynb gs://bkt/out/{run_id}.ipynb -p epochs 40 \\
        --zone us-central1-b --gpu-type t4 --image-uri us-docker.pkg.dev/p/r/executor:1 --dry-run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import sys
from typing import Any

from executor import outputs
from executor.options import RunOptions
from jobcommon import storage
from jobcommon.errors import JobError, UsageError

log = logging.getLogger(__name__)

GPU_TYPES = {
    "t4": "nvidia-tesla-t4",
    "v100": "nvidia-tesla-v100",
    "p100": "nvidia-tesla-p100",
    "p4": "nvidia-tesla-p4",
    "k80": "nvidia-tesla-k80",
    "a100": "nvidia-tesla-a100",
    "a100-80gb": "nvidia-a100-80gb",
    "l4": "nvidia-l4",
}
IMAGES = {
    "dlvm": "projects/deeplearning-platform-release/global/images/family/common-cu123-debian-11",
    "cos": "projects/cos-cloud/global/images/family/cos-stable",
}
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
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
docker run --rm --network host "${GPU_ARGS[@]}" -e IMAGE_URI="$IMAGE" "$IMAGE" \
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


def add_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("VM")
    g.add_argument("--zone", required=True, help="e.g. us-central1-b")
    g.add_argument(
        "--project",
        default=None,
        help="project id (default: GOOGLE_CLOUD_PROJECT or the credentials')",
    )
    g.add_argument(
        "--image-uri",
        required=True,
        help="the executor image, e.g. us-docker.pkg.dev/PROJECT/REPO/executor:TAG",
    )
    g.add_argument("--machine-type", default="n1-standard-8")
    g.add_argument("--gpu-type", default="t4", choices=sorted(GPU_TYPES))
    g.add_argument("--gpu-count", type=int, default=1, help="0 for a CPU-only VM")
    g.add_argument(
        "--os",
        dest="os_image",
        choices=sorted(IMAGES),
        default="dlvm",
        help="Deep Learning VM image (default) or Container-Optimized OS",
    )
    g.add_argument("--boot-disk-gb", type=int, default=100)
    g.add_argument("--name", default=None, help="VM name (default: notebook-<run id>)")
    g.add_argument("--service-account", default="default")
    g.add_argument("--network", default="global/networks/default")
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


def build_request(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """(project, the ``instances.insert`` body) for these arguments."""
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
    # Every run option travels in the metadata; vm-run reads them back with from_metadata.
    options = RunOptions.from_args(args)
    run_id = options.run_id or outputs.new_run_id()
    options = dataclasses.replace(options, run_id=run_id)
    name = args.name or "notebook-" + re.sub(r"[^a-z0-9-]", "-", run_id.lower())[:50]
    if not _NAME_RE.match(name):
        raise UsageError(f"VM name {name!r}: use 1-63 lowercase letters, digits and '-'")
    zone = args.zone
    items = {
        "input_notebook_path": args.input,
        "output_notebook_path": args.output.replace("{run_id}", run_id),
        **options.to_metadata(),
        "stay_alive": "true" if args.stay_alive else "false",
        "executor_image": args.image_uri,
        "executor_gpu_count": str(args.gpu_count),
        "startup-script": STARTUP_SCRIPT,
    }
    body: dict[str, Any] = {
        "name": name,
        "machineType": f"zones/{zone}/machineTypes/{args.machine_type}",
        "disks": [{
            "boot": True,
            "autoDelete": True,
            "initializeParams": {
                "sourceImage": IMAGES[args.os_image],
                "diskSizeGb": str(args.boot_disk_gb),
            },
        }],
        "networkInterfaces": [{
            "network": args.network,
            "accessConfigs": [{"type": "ONE_TO_ONE_NAT", "name": "External NAT"}],
        }],
        "serviceAccounts": [{"email": args.service_account, "scopes": [CLOUD_PLATFORM_SCOPE]}],
        "scheduling": {"onHostMaintenance": "TERMINATE", "automaticRestart": False},
        "labels": {"app": "notebook-executor", "run-id": name[:63]},
        "metadata": {"items": [{"key": k, "value": v} for k, v in items.items()]},
    }  # fmt: skip
    if args.gpu_count > 0:
        body["guestAccelerators"] = [{
            "acceleratorType": f"zones/{zone}/acceleratorTypes/{GPU_TYPES[args.gpu_type]}",
            "acceleratorCount": args.gpu_count,
        }]  # fmt: skip
        if args.os_image == "dlvm":
            items_list = body["metadata"]["items"]
            items_list.append({"key": "install-nvidia-driver", "value": "True"})
    return project, body


def _token(args: argparse.Namespace) -> str:
    if args.access_token:
        return args.access_token
    import google.auth
    import google.auth.transport.requests

    try:
        credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
        credentials.refresh(google.auth.transport.requests.Request())
    except Exception as exc:
        raise JobError(
            f"no Google Cloud credentials to create the VM ({exc}): run `gcloud auth "
            "application-default login` or pass --access-token"
        ) from exc
    return credentials.token


def main(args: argparse.Namespace) -> int:
    import requests

    from executor import metadata

    project, body = build_request(args)
    url = metadata.instance_url(project, args.zone)
    if args.dry_run:
        json.dump({"method": "POST", "url": url, "body": body}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    resp = requests.post(
        url, json=body, headers={"Authorization": f"Bearer {_token(args)}"}, timeout=60
    )
    if resp.status_code not in (200, 201, 202):
        raise JobError(
            f"creating VM {body['name']} failed: HTTP {resp.status_code}: {resp.text[:300]}"
        )
    operation = resp.json()
    log.info(
        "creating VM %s in %s/%s (operation %s); it deletes itself after the run",
        body["name"],
        project,
        args.zone,
        operation.get("name"),
    )
    print(
        json.dumps(
            {
                "instance": body["name"],
                "operation": operation.get("name"),
                "output": dict((i["key"], i["value"]) for i in body["metadata"]["items"])[
                    "output_notebook_path"
                ],
            }
        )
    )
    return 0
