"""The Compute Engine metadata server, as a VM sees it: the run's attributes, who and where
the VM is, its service account's token, and whether Compute Engine is preempting it.

``GCE_METADATA_HOST`` (as google-auth reads it) points the client at another metadata
server, for tests.
"""

from __future__ import annotations

import json
import os
import urllib.parse

import requests

from jobcommon.errors import MetadataError
from jobcommon.retry import call_with_retries

DEFAULT_HOST = "metadata.google.internal"
HEADERS = {"Metadata-Flavor": "Google"}


def metadata_root() -> str:
    host = os.environ.get("GCE_METADATA_HOST") or DEFAULT_HOST
    if "://" not in host:
        host = "http://" + host
    return host.rstrip("/") + "/computeMetadata/v1"


class _Transient(Exception):
    pass


class MetadataClient:
    """Read instance metadata; missing keys are None, connection errors and 5xx are retried.

    Example:
        >>> md = MetadataClient()
        >>> md.attribute("input_notebook_path")  # doctest: +SKIP
        'gs://my-bucket/input.ipynb'
    """

    def __init__(self, root: str | None = None, attempts: int = 5) -> None:
        self.root = root or metadata_root()
        self.attempts = attempts
        self.session = requests.Session()

    def get(self, path: str, attempts: int | None = None) -> str | None:
        url = f"{self.root}/{path.lstrip('/')}"

        def once() -> str | None:
            try:
                resp = self.session.get(url, headers=HEADERS, timeout=10)
            except requests.RequestException as exc:
                raise _Transient(f"did not answer ({exc})") from exc
            if resp.status_code == 404:
                return None
            if resp.status_code == 200:
                return resp.text
            if resp.status_code >= 500:
                raise _Transient(f"answered HTTP {resp.status_code}")
            raise MetadataError(f"metadata {url}: HTTP {resp.status_code}")

        try:
            return call_with_retries(
                once,
                what=f"metadata {path}",
                is_transient=lambda e: isinstance(e, _Transient),
                attempts=attempts or self.attempts,
                max_wait=5.0,
            )
        except _Transient as exc:
            raise MetadataError(
                f"the metadata server at {url} {exc}; vm-run must run on a Compute Engine VM "
                "(or set GCE_METADATA_HOST)"
            ) from exc

    def attribute(self, key: str) -> str | None:
        return self.get(f"instance/attributes/{urllib.parse.quote(key)}")

    def token(self) -> str:
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

    def preempted(self) -> bool:
        """Whether Compute Engine is preempting this (Spot) VM: ``instance/preempted`` is
        ``TRUE`` from the moment the preemption notice is sent. Asked once, quickly, since
        it is asked during a shutdown; an unreadable answer counts as not preempted."""
        try:
            return (self.get("instance/preempted", attempts=2) or "").strip().upper() == "TRUE"
        except MetadataError:
            return False
