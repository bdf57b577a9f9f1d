"""The GCE metadata server and the one Compute Engine call a VM makes: deleting itself.

``GCE_METADATA_HOST`` (as google-auth reads it) points the client at another metadata
server, and ``COMPUTE_API_ENDPOINT`` at another Compute Engine API, for tests.
"""

from __future__ import annotations

import logging
import os
import time
import urllib.parse

import requests

from jobcommon.errors import JobError

log = logging.getLogger(__name__)

DEFAULT_METADATA_HOST = "metadata.google.internal"
DEFAULT_COMPUTE_ENDPOINT = "https://compute.googleapis.com"
HEADERS = {"Metadata-Flavor": "Google"}


class MetadataError(JobError):
    """The metadata server could not be read."""

    exit_code = 6


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
        delay = 0.5
        for attempt in range(1, self.attempts + 1):
            try:
                resp = self.session.get(url, headers=HEADERS, timeout=10)
            except requests.RequestException as exc:
                if attempt == self.attempts:
                    raise MetadataError(
                        f"the metadata server at {url} did not answer ({exc}); vm-run must run "
                        "on a Compute Engine VM (or set GCE_METADATA_HOST)"
                    ) from exc
            else:
                if resp.status_code == 404:
                    return None
                if resp.status_code == 200:
                    return resp.text
                if resp.status_code < 500 or attempt == self.attempts:
                    raise MetadataError(f"metadata {url}: HTTP {resp.status_code}")
            time.sleep(delay)
            delay = min(delay * 2, 5)
        return None

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
    delay = 1.0
    last = ""
    for attempt in range(1, attempts + 1):
        try:
            resp = requests.delete(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        except requests.RequestException as exc:
            last = str(exc)
        else:
            if resp.status_code in (200, 201, 202, 204):
                return resp.json() if resp.content else {}
            last = f"HTTP {resp.status_code}: {resp.text[:200]}"
            if resp.status_code not in (429,) and resp.status_code < 500:
                break
        if attempt < attempts:
            time.sleep(delay)
            delay = min(delay * 2, 15)
    raise JobError(f"could not delete instance {project}/{zone}/{name} ({url}): {last}")
