"""JSON calls to Google Cloud REST APIs (Vertex AI, Compute Engine), one way for every job.

Cloud Storage does not come through here: gcsfs and Beam have their own clients.
"""

from __future__ import annotations

from typing import Any

from jobcommon.errors import JobError
from jobcommon.retry import call_with_retries


class _Transient(Exception):
    """A 429/5xx answer or a dropped connection: worth another try."""


def error_message(resp: Any) -> str:
    """The ``error.message`` of a Google API error body, else the start of the body.

    Example:
        >>> class Resp:
        ...     text = '{"error": {"code": 403, "message": "Permission denied"}}'
        ...     def json(self):
        ...         import json
        ...         return json.loads(self.text)
        >>> error_message(Resp())
        'Permission denied'
    """
    try:
        return resp.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return resp.text[:300]


def call_json(
    method: str,
    url: str,
    *,
    token: str,
    what: str,
    denied_hint: str,
    body: dict | None = None,
    attempts: int = 5,
    session: Any = None,
) -> dict:
    """Send one REST request with a bearer token and return the decoded JSON answer.

    429/5xx answers and dropped connections are retried up to ``attempts`` calls in all
    (pass 1 for a request that must not be sent twice). Every failure is one
    :class:`~jobcommon.errors.JobError` naming ``what``; a 401/403 adds ``denied_hint`` (the
    role the caller needs).
    """
    import requests  # here, not at import time: `--help` of every job needs none of it

    sender = session or requests

    def once() -> Any:
        headers = {"Authorization": f"Bearer {token}"}
        try:
            resp = sender.request(method, url, json=body, headers=headers, timeout=60)
        except requests.RequestException as exc:
            raise _Transient(f"{url} did not answer: {exc}") from exc
        if resp.status_code == 429 or resp.status_code >= 500:
            raise _Transient(f"HTTP {resp.status_code}: {error_message(resp)}")
        return resp

    try:
        resp = call_with_retries(
            once, what=what, is_transient=lambda e: isinstance(e, _Transient), attempts=attempts
        )
    except _Transient as exc:
        tries = "after retries " if attempts > 1 else ""
        raise JobError(f"{what} failed {tries}({url}): {exc}") from exc
    if resp.status_code in (401, 403):
        raise JobError(
            f"{what}: the request was denied (HTTP {resp.status_code}: {error_message(resp)}); "
            f"{denied_hint}"
        )
    if resp.status_code >= 400:
        raise JobError(f"{what} failed: HTTP {resp.status_code}: {error_message(resp)}")
    return resp.json() if resp.content else {}
