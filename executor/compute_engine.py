"""Compute Engine REST API: the ``instances.insert`` body of a run-once GPU VM, and the calls.

Which GPU fits which machine type lives here, in one table: T4, V100, P100 and P4 attach to
N1 machine types (as ``guestAccelerators``, in the counts each allows, with a vCPU ceiling
per count); L4 comes with G2, A100 with A2 and H100 with A3 machine types, whose name fixes
the GPU count (those GPUs come with the machine type, so no ``guestAccelerators`` are sent).

``COMPUTE_API_ENDPOINT`` points the calls at another server (tests use a loopback one).

Example:
    >>> check_accelerator("n1-standard-8", "t4", 2)
    [{'acceleratorType': 'nvidia-tesla-t4', 'acceleratorCount': 2}]
    >>> check_accelerator("g2-standard-24", "l4", 2)
    []
    >>> check_accelerator("n1-standard-8", "l4", 1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    jobcommon.errors.UsageError: --gpu-type l4 needs a machine type of the G2 series (...), ...
"""

from __future__ import annotations

import logging
import os
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from jobcommon.errors import UsageError

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://compute.googleapis.com"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"

# A current Deep Learning VM family (CUDA 12.8, NVIDIA driver 570, Ubuntu 22.04): the
# driver comes preinstalled, and docker with the NVIDIA runtime. Not verified live here.
DEFAULT_IMAGE_PROJECT = "deeplearning-platform-release"
DEFAULT_IMAGE_FAMILY = "common-cu128-ubuntu-2204-nvidia-570"
COS_IMAGE_PROJECT = "cos-cloud"
COS_IMAGE_FAMILY = "cos-stable"


@dataclass(frozen=True)
class Gpu:
    """One GPU model: its Compute Engine accelerator type and the machine series it needs."""

    accelerator_type: str
    series: str
    # N1 only: GPU count -> the most vCPUs a machine type may have with that many.
    max_vcpus: dict[int, int] | None = None


GPUS: dict[str, Gpu] = {
    "t4": Gpu("nvidia-tesla-t4", "n1", {1: 48, 2: 48, 4: 96}),
    "v100": Gpu("nvidia-tesla-v100", "n1", {1: 12, 2: 24, 4: 48, 8: 96}),
    "p100": Gpu("nvidia-tesla-p100", "n1", {1: 16, 2: 32, 4: 96}),
    "p4": Gpu("nvidia-tesla-p4", "n1", {1: 24, 2: 48, 4: 96}),
    "l4": Gpu("nvidia-l4", "g2"),
    "a100": Gpu("nvidia-tesla-a100", "a2"),
    "a100-80gb": Gpu("nvidia-a100-80gb", "a2"),
    "h100": Gpu("nvidia-h100-80gb", "a3"),
    "h100-mega": Gpu("nvidia-h100-mega-80gb", "a3"),
}

# Accelerator-optimized machine types: the GPU model and count come with the type.
MACHINE_GPUS: dict[str, tuple[str, int]] = {
    **{f"g2-standard-{v}": ("l4", 1) for v in (4, 8, 12, 16, 32)},
    "g2-standard-24": ("l4", 2),
    "g2-standard-48": ("l4", 4),
    "g2-standard-96": ("l4", 8),
    **{f"a2-highgpu-{n}g": ("a100", n) for n in (1, 2, 4, 8)},
    "a2-megagpu-16g": ("a100", 16),
    **{f"a2-ultragpu-{n}g": ("a100-80gb", n) for n in (1, 2, 4, 8)},
    **{f"a3-highgpu-{n}g": ("h100", n) for n in (1, 2, 4, 8)},
    "a3-edgegpu-8g": ("h100", 8),
    "a3-megagpu-8g": ("h100-mega", 8),
}

_N1_RE = re.compile(r"^(?:n1-(?:standard|highmem|highcpu)-(\d+)|(?:n1-)?custom-(\d+)-\d+)$")
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")


def _series_examples(series: str) -> str:
    names = [m for m, (gpu, _) in MACHINE_GPUS.items() if GPUS[gpu].series == series]
    return ", ".join(names[:1]) + ", ..."


def default_gpus(machine_type: str, gpu: str | None, count: int | None) -> tuple[str, int]:
    """The GPU model and count when not given: what an accelerator-optimized machine type
    comes with, else one T4.

    Example:
        >>> default_gpus("a2-highgpu-4g", None, None), default_gpus("n1-standard-8", None, 2)
        (('a100', 4), ('t4', 2))
    """
    fixed_gpu, fixed_count = MACHINE_GPUS.get(machine_type, ("t4", 1))
    return gpu or fixed_gpu, fixed_count if count is None else count


def check_accelerator(machine_type: str, gpu: str, count: int) -> list[dict[str, Any]]:
    """Check that ``count`` GPUs of model ``gpu`` fit ``machine_type``; returns the
    ``guestAccelerators`` entries to send (zone-relative types are filled in by the body).

    ``count`` 0 asks for a CPU-only VM, which an accelerator-optimized type cannot be.
    """
    if gpu not in GPUS:
        raise UsageError(f"--gpu-type {gpu!r}: choose one of {', '.join(sorted(GPUS))}")
    spec = GPUS[gpu]
    fixed = MACHINE_GPUS.get(machine_type)
    if fixed is not None:
        fixed_gpu, fixed_count = fixed
        if count == 0:
            raise UsageError(
                f"--machine-type {machine_type} always comes with {fixed_count} {fixed_gpu} "
                "GPU(s): pick an N1 or E2 machine type for a CPU-only VM"
            )
        if fixed_gpu != gpu or fixed_count != count:
            raise UsageError(
                f"--machine-type {machine_type} comes with {fixed_count} x {fixed_gpu}, not "
                f"{count} x {gpu}: pass --gpu-type {fixed_gpu} --gpu-count {fixed_count}, or "
                "the machine type that has the GPUs you want"
            )
        return []
    if count == 0:
        return []
    if spec.series != "n1":
        raise UsageError(
            f"--gpu-type {gpu} needs a machine type of the {spec.series.upper()} series "
            f"({_series_examples(spec.series)}), not {machine_type}"
        )
    match = _N1_RE.match(machine_type)
    if not match:
        raise UsageError(
            f"--gpu-type {gpu} attaches only to N1 machine types (n1-standard-8, "
            f"n1-highmem-16, ...), not {machine_type}"
        )
    assert spec.max_vcpus is not None
    if count not in spec.max_vcpus:
        raise UsageError(
            f"--gpu-count {count}: a VM takes {', '.join(map(str, spec.max_vcpus))} {gpu} GPUs"
        )
    vcpus = int(match.group(1) or match.group(2))
    if vcpus > spec.max_vcpus[count]:
        raise UsageError(
            f"--machine-type {machine_type} has {vcpus} vCPUs; with {count} {gpu} GPU(s) the "
            f"most is {spec.max_vcpus[count]}: use a smaller machine type or more GPUs"
        )
    return [{"acceleratorType": spec.accelerator_type, "acceleratorCount": count}]


def check_vm_name(name: str) -> str:
    """A VM name Compute Engine accepts (RFC 1035: lowercase, digits, '-', 1-63)."""
    if not _NAME_RE.match(name):
        raise UsageError(f"VM name {name!r}: use 1-63 lowercase letters, digits and '-'")
    return name


def parse_labels(pairs: list[str]) -> dict[str, str]:
    """``["team=ml", "cost-center=42"]`` -> labels, checked against Compute Engine's rules.

    Example:
        >>> parse_labels(["team=ml", "cost-center=42"])
        {'team': 'ml', 'cost-center': '42'}
    """
    labels: dict[str, str] = {}
    for pair in pairs:
        for item in pair.split(","):
            key, sep, value = item.partition("=")
            if not sep or not _LABEL_KEY_RE.match(key) or not _LABEL_VALUE_RE.match(value):
                raise UsageError(
                    f"--labels {item!r}: write KEY=VALUE with lowercase letters, digits, '_' "
                    "and '-' (a key starts with a letter; each at most 63 characters)"
                )
            labels[key] = value
    return labels


def instance_body(
    *,
    name: str,
    zone: str,
    machine_type: str,
    accelerators: list[dict[str, Any]],
    image_project: str,
    image_family: str,
    boot_disk_gb: int,
    metadata: dict[str, str],
    network: str | None = None,
    subnet: str | None = None,
    external_ip: bool = True,
    service_account: str = "default",
    labels: dict[str, str] | None = None,
    spot: bool = False,
) -> dict[str, Any]:
    """The ``instances.insert`` body: boot disk from an image family, the network interface,
    the service account with the cloud-platform scope, scheduling, labels and metadata.

    GPUs need ``onHostMaintenance: TERMINATE``; a Spot VM has ``provisioningModel: SPOT``
    and is deleted (``instanceTerminationAction: DELETE``) when Compute Engine preempts it.
    """
    interface: dict[str, Any] = {}
    if network:
        interface["network"] = network if "/" in network else f"global/networks/{network}"
    if subnet:
        region = zone.rsplit("-", 1)[0]
        interface["subnetwork"] = (
            subnet if "/" in subnet else f"regions/{region}/subnetworks/{subnet}"
        )
    if not interface:
        interface["network"] = "global/networks/default"
    if external_ip:
        interface["accessConfigs"] = [{"type": "ONE_TO_ONE_NAT", "name": "External NAT"}]
    scheduling: dict[str, Any] = {"onHostMaintenance": "TERMINATE", "automaticRestart": False}
    if spot:
        scheduling |= {"provisioningModel": "SPOT", "instanceTerminationAction": "DELETE"}
    body: dict[str, Any] = {
        "name": name,
        "machineType": f"zones/{zone}/machineTypes/{machine_type}",
        "disks": [{
            "boot": True,
            "autoDelete": True,
            "initializeParams": {
                "sourceImage": f"projects/{image_project}/global/images/family/{image_family}",
                "diskSizeGb": str(boot_disk_gb),
            },
        }],
        "networkInterfaces": [interface],
        "serviceAccounts": [{"email": service_account, "scopes": [CLOUD_PLATFORM_SCOPE]}],
        "scheduling": scheduling,
        "labels": {"app": "notebook-executor", **(labels or {})},
        "metadata": {"items": [{"key": k, "value": v} for k, v in metadata.items()]},
    }  # fmt: skip
    if accelerators:
        body["guestAccelerators"] = [
            {**a, "acceleratorType": f"zones/{zone}/acceleratorTypes/{a['acceleratorType']}"}
            for a in accelerators
        ]
    return body


def endpoint() -> str:
    return (os.environ.get("COMPUTE_API_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def instances_url(project: str, zone: str, name: str = "") -> str:
    base = (
        f"{endpoint()}/compute/v1/projects/{urllib.parse.quote(project)}"
        f"/zones/{urllib.parse.quote(zone)}/instances"
    )
    return f"{base}/{urllib.parse.quote(name)}" if name else base


_DENIED_HINT = (
    "the caller needs roles/compute.instanceAdmin.v1 (and roles/iam.serviceAccountUser on the "
    "VM's service account)"
)


def _call(method: str, url: str, token: str, what: str, body: dict | None = None) -> dict:
    from jobcommon.rest import call_json

    return call_json(method, url, token=token, what=what, denied_hint=_DENIED_HINT, body=body)


def insert_instance(project: str, zone: str, body: dict[str, Any], token: str) -> dict:
    """``POST .../zones/ZONE/instances``; returns the zone operation."""
    return _call("POST", instances_url(project, zone), token, f"creating VM {body['name']}", body)


def delete_instance(project: str, zone: str, name: str, token: str) -> dict:
    """``DELETE .../zones/ZONE/instances/NAME``; returns the zone operation."""
    return _call(
        "DELETE", instances_url(project, zone, name), token, f"deleting VM {project}/{zone}/{name}"
    )
