"""The GCE metadata server and the one Compute Engine call a VM makes: deleting itself.

``GCE_METADATA_HOST`` (as google-auth reads it) points the client at another metadata
server, and ``COMPUTE_API_ENDPOINT`` at another Compute Engine API, for tests.
"""

from __future__ import annotations

import logging
import os
import urllib.parse

import requests

from jobcommon.errors import JobError, MetadataError
from jobcommon.retry import call_with_retries

log = logging.getLogger(__name__)

DEFAULT_METADATA_HOST = "metadata.google.internal"
DEFAULT_COMPUTE_ENDPOINT = "https://compute.googleapis.com"
HEADERS = {"Metadata-Flavor": "Google"}

__all__ = ["MetadataClient", "MetadataError", "delete_instance", "instance_url"]


class _Retry(Exception):
    """A 429/5xx answer: worth another try."""


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, requests.RequestException | _Retry)


def metadata_root() -> str:
    host = os.environ.get("GCE_METADATA_HOST") or DEFAULT_METADATA_HOST
    if "://" not in host:
        host = "http://" + host
    return host.rstrip("/") + "/computeMetadata/v1"


def compute_endpoint() -> str:
    return (os.environ.get("COMPUTE_API_ENDPOINT") or DEFAULT_COMPUTE_ENDPOINT).rstrip("/")


class MetadataClient:
    """Read instance metadata; missing keys are None, connection errors are retried.

    Example:
        >>> md = MetadataClient()
        >>> md.attribute("input_notebook_path")  # doctest: +SKIP
        'gs://my-bucket/input.ipynb'
    """

    def __init__(self, root: str | None = None, attempts: int = 5) -> None:
        self.root = root or metadata_root()
        self.attempts = attempts
        self.session = requests.Session()

    def get(self, path: str) -> str | None:
        url = f"{self.root}/{path.lstrip('/')}"

        def once() -> requests.Response:
            resp = self.session.get(url, headers=HEADERS, timeout=10)
            if resp.status_code >= 500 or resp.status_code == 429:
                raise _Retry(f"HTTP {resp.status_code}")
            return resp

        try:
            resp = call_with_retries(
                once, what=f"metadata {url}", is_transient=_transient, attempts=self.attempts,
                max_wait=5.0,
            )  # fmt: skip
        except requests.RequestException as exc:
            raise MetadataError(
                f"the metadata server at {url} did not answer ({exc}); vm-run must run "
                "on a Compute Engine VM (or set GCE_METADATA_HOST)"
            ) from exc
        except _Retry as exc:
            raise MetadataError(f"metadata {url}: {exc}") from exc
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise MetadataError(f"metadata {url}: HTTP {resp.status_code}")
        return resp.text

    def attribute(self, key: str) -> str | None:
        return self.get(f"instance/attributes/{urllib.parse.quote(key)}")

    def token(self) -> str:
        import json

        text = self.get("instance/service-accounts/default/token")
        if not text:
            raise MetadataError("the metadata server gave no access token for the VM's account")
        return json.loads(text)["access_token"]

    def instance(self) -> tuple[str, str, str]:
        """(project, zone, name) of this VM."""
        project = self.get("project/project-id")
        zone = (self.get("instance/zone") or "").rsplit("/", 1)[-1]
        name = self.get("instance/name")
        if not (project and zone and name):
            raise MetadataError("the metadata server did not give this VM's project, zone, name")
        return project, zone, name


def instance_url(project: str, zone: str, name: str = "") -> str:
    base = (
        f"{compute_endpoint()}/compute/v1/projects/{urllib.parse.quote(project)}"
        f"/zones/{urllib.parse.quote(zone)}/instances"
    )
    return f"{base}/{urllib.parse.quote(name)}" if name else base


def delete_instance(project: str, zone: str, name: str, token: str, attempts: int = 5) -> dict:
    """``DELETE .../instances/NAME``; returns the operation. Retries 429/5xx and dropped
    connections; raises JobError when it cannot be sent."""
    url = instance_url(project, zone, name)

    def once() -> requests.Response:
        resp = requests.delete(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        if resp.status_code >= 500 or resp.status_code == 429:
            raise _Retry(f"HTTP {resp.status_code}: {resp.text[:200]}")
        return resp

    try:
        resp = call_with_retries(
            once, what=f"deleting {url}", is_transient=_transient, attempts=attempts,
            first_wait=1.0, max_wait=15.0,
        )  # fmt: skip
    except (requests.RequestException, _Retry) as exc:
        raise JobError(f"could not delete instance {project}/{zone}/{name} ({url}): {exc}") from exc
    if resp.status_code in (200, 201, 202, 204):
        return resp.json() if resp.content else {}
    raise JobError(
        f"could not delete instance {project}/{zone}/{name} ({url}): "
        f"HTTP {resp.status_code}: {resp.text[:200]}"
    )
