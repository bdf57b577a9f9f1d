"""Access tokens for Google Cloud REST APIs (Vertex AI, Compute Engine).

Cloud Storage does not come through here: gcsfs and Beam authenticate themselves.
"""

from __future__ import annotations

from jobcommon.errors import NoCredentialsError

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


def access_token(resource: str, explicit: str | None = None) -> str:
    """A bearer token for ``resource``: ``explicit`` when given, else Application Default
    Credentials.

    Raises :class:`~jobcommon.errors.NoCredentialsError` (exit code 5) naming ``resource``
    when no credentials can be found or refreshed.

    Example:
        >>> access_token("projects/p", explicit="ya29.token")
        'ya29.token'
    """
    if explicit:
        return explicit
    import google.auth
    import google.auth.exceptions
    import google.auth.transport.requests

    try:
        credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
        credentials.refresh(google.auth.transport.requests.Request())
    except google.auth.exceptions.GoogleAuthError as exc:
        raise NoCredentialsError(resource) from exc
    return credentials.token
