"""Named errors with messages that say which input failed and what to do about it.

Every command catches :class:`JobError` at its edge (see :func:`jobcommon.cli.run`) and
prints the message as one line, exiting with :attr:`JobError.exit_code`, so users see
"what went wrong and what to do" instead of a traceback.
"""

from __future__ import annotations


class JobError(Exception):
    """Base of every error a user is meant to read and act on."""

    exit_code = 1


class UsageError(JobError):
    """The command line or a config value is wrong."""

    exit_code = 2


class InvalidURIError(UsageError):
    """A path or URI that cannot be parsed."""

    def __init__(self, uri: str, why: str) -> None:
        super().__init__(f"invalid path {uri!r}: {why}")
        self.uri = uri


class NotFoundError(JobError):
    """An object, bucket or file that does not exist."""

    exit_code = 3

    def __init__(self, uri: str, hint: str = "") -> None:
        hint = hint or "check the path (gs://bucket/path) and that the bucket exists"
        super().__init__(f"not found: {uri} ({hint})")
        self.uri = uri


class PermissionDeniedError(JobError):
    """The caller may not read or write a location."""

    exit_code = 4

    def __init__(self, uri: str) -> None:
        super().__init__(
            f"permission denied: {uri} (grant the job's service account "
            "roles/storage.objectAdmin on the bucket, or use a bucket you own)"
        )
        self.uri = uri


class NoCredentialsError(JobError):
    """No Google credentials could be found for a ``gs://`` URI."""

    exit_code = 5

    def __init__(self, uri: str) -> None:
        super().__init__(
            f"no Google Cloud credentials to access {uri}: run "
            "`gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS "
            "to a service-account key file (or STORAGE_EMULATOR_HOST for a local emulator)"
        )
        self.uri = uri


class StorageError(JobError):
    """A storage operation that kept failing after retries."""

    exit_code = 6


class BadInputError(JobError):
    """Input data that cannot be used (empty, malformed, not matching a schema)."""

    exit_code = 7


class MetadataError(JobError):
    """The Compute Engine metadata server did not answer or lacked a value."""

    exit_code = 8


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (its type name if it has none).

    Library errors often carry whole stack dumps in their message; one line is what a log
    line or an error row can hold.

    Example:
        >>> first_line(ValueError("bad value\\n  at line 3"))
        'bad value'
        >>> first_line(KeyError())
        'KeyError'
    """
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
