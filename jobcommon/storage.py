"""The project's storage layer: local paths, ``/gcs/...`` FUSE paths and ``gs://`` URIs.

The trainer's data staging, checkpoints and exports, the batch job's model download and
result and error files (:mod:`batch.sink`), the executor's notebooks and outputs and the
gsutil-like CLI all go through here. Two kinds of Cloud Storage traffic do not, and get
neither these retries nor this timeout: the batch pipeline's *input* files are matched and
read by Beam's own ``gs://`` filesystem (``ReadFromText``, ``fileio``; Beam's own client and
retries), and a Dataflow launch uploads its staging and temp files through Beam as well.

It is built on fsspec/gcsfs, whose retries cover single requests (408, 429, 5xx, dropped
connections, with capped exponential backoff); on top of that, whole operations are retried
a few times with tenacity, so a transfer that ran out of request retries gets another
chance, while permanent failures (not found, forbidden, no credentials) fail at once with a
named error. A request that receives nothing for :func:`request_timeout` seconds (60 by
default) is dropped and retried like a dropped connection; one that keeps receiving bytes is
never cut, however long the transfer.

Writes are never half-visible under the final name: a GCS object only appears when its
upload is finalized (a single request, or the last chunk of a resumable upload, which gcsfs
cancels on failure), and a local file is written beside its target and renamed into place.

TensorFlow and Keras never see a ``gs://`` path here: TF's own GCS filesystem ignores the
emulator settings, so components stage inputs to local disk and outputs back through this
module.

Example:
    >>> from jobcommon import storage
    >>> storage.write_text("gs://bucket/run/config.json", "{}")  # doctest: +SKIP
    >>> storage.glob("gs://bucket/data/train-*.tfrecord")  # doctest: +SKIP
    ['gs://bucket/data/train-00000.tfrecord', 'gs://bucket/data/train-00001.tfrecord']
"""

from __future__ import annotations

import glob as _glob
import logging
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TypeVar

# gcsfs probes each bucket's layout over gRPC before writes unless told not to; against an
# emulator every probe waits out a 60 s timeout. The variable must be set before import.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

from jobcommon.errors import (  # noqa: E402
    InvalidURIError,
    NoCredentialsError,
    NotFoundError,
    PermissionDeniedError,
    StorageError,
    UsageError,
    first_line,
)
from jobcommon.retry import call_with_retries  # noqa: E402

log = logging.getLogger(__name__)

GCS_PREFIX = "gs://"
# Buckets: 3-63 chars of lowercase letters, digits, dashes, underscores and dots.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")
# Chunk size of resumable uploads: a multiple of 256 KiB, as the GCS JSON API requires.
UPLOAD_CHUNK_BYTES = 8 * 2**20
OPERATION_ATTEMPTS = 3
# Seconds a request may receive nothing before it is dropped and retried (gcsfs would wait
# up to aiohttp's 5-minute default); long enough for GCS to finalize a large upload.
DEFAULT_REQUEST_TIMEOUT = 60.0
PARALLEL_TRANSFERS = 16

T = TypeVar("T")


def is_gcs(path: str) -> bool:
    """True for ``gs://`` URIs; ``/gcs/bucket/...`` FUSE paths are local files."""
    return str(path).startswith(GCS_PREFIX)


def split_gcs(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``("bucket", "a/b")``, raising InvalidURIError when malformed."""
    if not is_gcs(uri):
        raise InvalidURIError(uri, "expected gs://BUCKET/PATH")
    rest = uri[len(GCS_PREFIX) :]
    bucket, _, key = rest.partition("/")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise InvalidURIError(
            uri, "the bucket name must be 3-63 lowercase letters, digits, '-', '_' or '.'"
        )
    if "\n" in key or "\r" in key:
        raise InvalidURIError(uri, "object names cannot contain line breaks")
    return bucket, key


def validate(path: str) -> str:
    """Check a path or URI and return it; catches typos such as ``gs:/b`` or ``gcs://b``."""
    path = os.fspath(path)
    if not path:
        raise InvalidURIError(path, "empty path")
    if is_gcs(path):
        split_gcs(path)
    elif "://" in path or path.startswith("gs:"):
        raise InvalidURIError(path, "only local paths and gs://BUCKET/PATH URIs are supported")
    return path


def join(base: str, *parts: str) -> str:
    """Join path parts with ``/`` for URIs and ``os.path.join`` for local paths."""
    if is_gcs(base):
        out = base.rstrip("/")
        for part in parts:
            out += "/" + part.strip("/")
        return out
    return os.path.join(base, *parts)


def emulator_host() -> str | None:
    """The GCS emulator endpoint (``STORAGE_EMULATOR_HOST``), or None for real GCS."""
    host = os.environ.get("STORAGE_EMULATOR_HOST")
    if not host:
        return None
    return host if "://" in host else f"http://{host}"


def request_timeout() -> float:
    """Seconds one GCS request may go without receiving a byte (``STORAGE_REQUEST_TIMEOUT``,
    default :data:`DEFAULT_REQUEST_TIMEOUT`): connecting, waiting for the answer, or between
    two reads of it. A stalled request is then dropped and retried.

    Example:
        >>> os.environ["STORAGE_REQUEST_TIMEOUT"] = "15"
        >>> request_timeout()
        15.0
        >>> del os.environ["STORAGE_REQUEST_TIMEOUT"]
        >>> request_timeout()
        60.0
    """
    value = os.environ.get("STORAGE_REQUEST_TIMEOUT", "").strip()
    if not value:
        return DEFAULT_REQUEST_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise UsageError(
            f"STORAGE_REQUEST_TIMEOUT={value!r} must be a positive number of seconds"
        ) from None
    return seconds


def _client_timeout(seconds: float):
    """The aiohttp timeout for one request: bounded silence, unbounded duration.

    aiohttp's default (and a bare number) is a limit on the whole request, which would cut a
    large download that is still moving; ``sock_read`` restarts at every byte received.
    """
    import aiohttp

    return aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)


_fs_cache: dict[tuple[str | None, int, float], object] = {}
_fs_lock = threading.Lock()


def _gcsfs(uri: str):
    """A GCSFileSystem for the current endpoint; built once per endpoint and process."""
    endpoint = emulator_host()
    timeout = request_timeout()
    key = (endpoint, os.getpid(), timeout)
    with _fs_lock:
        if key in _fs_cache:
            return _fs_cache[key]
        import gcsfs

        # gcsfs logs every failed request with a traceback; the named error we raise is
        # the one line a user should see.
        logging.getLogger("gcsfs").setLevel(logging.CRITICAL)
        options = {
            "skip_instance_cache": True,
            "requests_timeout": _client_timeout(timeout),
            # Compare the MD5 GCS reports with what was sent/received: a replayed or cut
            # transfer then fails (and is retried) instead of landing silently wrong.
            "consistency": "md5",
        }
        if endpoint:
            fs = gcsfs.GCSFileSystem(endpoint_url=endpoint, token="anon", **options)
        else:
            import google.auth
            import google.auth.exceptions

            try:
                credentials, project = google.auth.default(
                    scopes=["https://www.googleapis.com/auth/devstorage.read_write"]
                )
            except google.auth.exceptions.DefaultCredentialsError as exc:
                raise NoCredentialsError(uri) from exc
            fs = gcsfs.GCSFileSystem(token=credentials, project=project, **options)
        _fs_cache[key] = fs
        return fs


def _strip(uri: str) -> str:
    return uri[len(GCS_PREFIX) :]


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, FileNotFoundError | PermissionError | NotFoundError):
        return False
    from gcsfs.retry import ChecksumError, HttpError, is_retriable

    if isinstance(exc, ChecksumError):
        return True
    if isinstance(exc, HttpError):
        return is_retriable(exc)
    if isinstance(exc, OSError) and "Forbidden" in str(exc):
        return False
    import aiohttp
    import requests

    return isinstance(
        exc,
        ConnectionError | TimeoutError | aiohttp.ClientError | requests.RequestException,
    )


def _translate(exc: BaseException, uri: str) -> BaseException:
    """Map a client exception to one of our named errors."""
    from gcsfs.retry import HttpError

    if isinstance(exc, NotFoundError | PermissionDeniedError | NoCredentialsError):
        return exc
    if isinstance(exc, FileNotFoundError):
        hint = ""
        if is_gcs(uri):
            hint = f"check the object path and that bucket gs://{split_gcs(uri)[0]} exists"
        return NotFoundError(uri, hint)
    code = getattr(exc, "code", None)
    if isinstance(exc, HttpError) and code == 404:
        return NotFoundError(uri, f"bucket gs://{split_gcs(uri)[0]} does not exist")
    if isinstance(exc, PermissionError) or code == 403 or "Forbidden" in str(exc):
        return PermissionDeniedError(uri)
    if code == 401:
        return NoCredentialsError(uri)
    if isinstance(exc, IsADirectoryError):
        return StorageError(f"{uri} is a directory, not a file")
    return StorageError(f"storage operation on {uri} failed: {first_line(exc)}")


def _call(uri: str, fn: Callable[[], T]) -> T:
    """Run one operation with whole-operation retries and error translation."""
    try:
        return call_with_retries(
            fn, what=uri, is_transient=_is_transient, attempts=OPERATION_ATTEMPTS
        )
    except Exception as exc:
        raise _translate(exc, uri) from exc


# ---------------------------------------------------------------- single objects


def exists(path: str) -> bool:
    """True if a file or object (or a non-empty prefix) exists at ``path``."""
    path = validate(path)
    if not is_gcs(path):
        return os.path.exists(path)
    fs = _gcsfs(path)
    return _call(path, lambda: fs.exists(_strip(path)))


def read_bytes(path: str) -> bytes:
    """Read a whole file or object."""
    path = validate(path)
    if not is_gcs(path):
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise _translate(exc, path) from exc
    fs = _gcsfs(path)
    return _call(path, lambda: fs.cat_file(_strip(path)))


def read_text(path: str, encoding: str = "utf-8") -> str:
    return read_bytes(path).decode(encoding)


def write_bytes(path: str, data: bytes) -> None:
    """Write a whole file or object; readers see the old content or the new, never a part."""
    path = validate(path)
    if not is_gcs(path):
        with _local_atomic(path) as tmp, open(tmp, "wb") as f:
            f.write(data)
        return
    if len(data) >= UPLOAD_CHUNK_BYTES:
        # Large payloads go through a file so that the upload is resumable and chunked.
        with tempfile.NamedTemporaryFile(delete=False) as tmp:
            tmp.write(data)
        try:
            upload_file(tmp.name, path)
        finally:
            os.unlink(tmp.name)
        return
    fs = _gcsfs(path)
    _call(path, lambda: fs.pipe_file(_strip(path), data))


def write_text(path: str, text: str, encoding: str = "utf-8") -> None:
    write_bytes(path, text.encode(encoding))


def delete(path: str, recursive: bool = False) -> None:
    """Remove a file or object (or a whole tree with ``recursive``); missing is fine."""
    path = validate(path)
    if not is_gcs(path):
        if os.path.isdir(path) and recursive:
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.unlink(path)
        return
    fs = _gcsfs(path)
    with suppress(NotFoundError):
        _call(path, lambda: fs.rm(_strip(path), recursive=recursive))


@contextmanager
def _local_atomic(path: str) -> Iterator[str]:
    """Yield a temporary name beside ``path``; rename it into place only on success."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def upload_file(local_path: str, uri: str) -> None:
    """Copy one local file to ``uri`` (resumable in chunks when large)."""
    uri = validate(uri)
    if not os.path.isfile(local_path):
        raise NotFoundError(local_path, "the local file to upload does not exist")
    if not is_gcs(uri):
        with _local_atomic(uri) as tmp:
            shutil.copyfile(local_path, tmp)
        return
    fs = _gcsfs(uri)
    _call(uri, lambda: fs.put_file(local_path, _strip(uri), chunksize=UPLOAD_CHUNK_BYTES))


def download_file(uri: str, local_path: str) -> None:
    """Copy one file or object to a local path, renamed into place when complete."""
    uri = validate(uri)
    with _local_atomic(local_path) as tmp:
        if is_gcs(uri):
            fs = _gcsfs(uri)
            _call(uri, lambda: fs.get_file(_strip(uri), tmp))
        else:
            try:
                shutil.copyfile(uri, tmp)
            except OSError as exc:
                raise _translate(exc, uri) from exc


def copy(src: str, dst: str) -> None:
    """Copy one file between any two locations (local or gs://)."""
    src, dst = validate(src), validate(dst)
    if is_gcs(src) and is_gcs(dst):
        fs = _gcsfs(src)
        _call(src, lambda: fs.copy(_strip(src), _strip(dst)))
    elif is_gcs(src):
        download_file(src, dst)
    else:
        upload_file(src, dst)


# ---------------------------------------------------------------- listings and trees


def glob(pattern: str) -> list[str]:
    """Sorted paths matching a pattern (``*``, ``?``, ``**``), as full ``gs://`` URIs."""
    pattern = validate(pattern)
    if not is_gcs(pattern):
        return sorted(p for p in _glob.glob(pattern, recursive=True) if os.path.isfile(p))
    fs = _gcsfs(pattern)
    bucket, _ = split_gcs(pattern)
    if not _call(f"gs://{bucket}", lambda: fs.exists(bucket)):
        raise NotFoundError(pattern, f"bucket gs://{bucket} does not exist")
    found = _call(pattern, lambda: fs.glob(_strip(pattern), detail=True))
    return sorted(GCS_PREFIX + p for p, info in found.items() if info.get("type") == "file")


def list_files(path: str) -> list[str]:
    """Every file below a directory or prefix, recursively, as full paths."""
    path = validate(path).rstrip("/")
    if not is_gcs(path):
        out = []
        for root, _, files in os.walk(path):
            out.extend(os.path.join(root, f) for f in files)
        return sorted(out)
    fs = _gcsfs(path)
    found = _call(path, lambda: fs.find(_strip(path)))
    return sorted(GCS_PREFIX + p for p in found)


def list_dir(path: str) -> list[str]:
    """Immediate children (files and sub-directories) of a directory or prefix."""
    path = validate(path).rstrip("/")
    if not is_gcs(path):
        if not os.path.isdir(path):
            return []
        return sorted(os.path.join(path, name) for name in os.listdir(path))
    fs = _gcsfs(path)
    try:
        found = _call(path, lambda: fs.ls(_strip(path), detail=False, refresh=True))
    except NotFoundError:
        return []
    return sorted(GCS_PREFIX + p.rstrip("/") for p in found if p.rstrip("/") != _strip(path))


def copy_tree(src: str, dst: str) -> list[str]:
    """Copy every file below ``src`` to the same relative place below ``dst``, in parallel.

    Works in every direction (local/gs:// to local/gs://). Each file lands atomically;
    returns the destination paths written.
    """
    src, dst = validate(src).rstrip("/"), validate(dst).rstrip("/")
    files = list_files(src)
    if not files and not (os.path.isdir(src) if not is_gcs(src) else False):
        raise NotFoundError(src, "nothing to copy: the directory or prefix is empty or missing")
    rel = [f[len(src) + 1 :] for f in files]
    targets = [join(dst, *r.split("/")) if is_gcs(dst) else os.path.join(dst, r) for r in rel]
    if not is_gcs(src) and not is_gcs(dst):
        for f, t in zip(files, targets, strict=True):
            with _local_atomic(t) as tmp:
                shutil.copyfile(f, tmp)
    elif not is_gcs(src):
        fs = _gcsfs(dst)
        _call(
            dst,
            lambda: fs.put(
                files,
                [_strip(t) for t in targets],
                chunksize=UPLOAD_CHUNK_BYTES,
                batch_size=PARALLEL_TRANSFERS,
            ),
        )
    elif not is_gcs(dst):
        fs = _gcsfs(src)
        partials = [f"{t}.{uuid.uuid4().hex[:8]}.partial" for t in targets]
        for p in partials:
            os.makedirs(os.path.dirname(p) or ".", exist_ok=True)
        try:
            _call(
                src,
                lambda: fs.get([_strip(f) for f in files], partials, batch_size=PARALLEL_TRANSFERS),
            )
            for p, t in zip(partials, targets, strict=True):
                os.replace(p, t)
        finally:
            for p in partials:
                if os.path.exists(p):
                    os.unlink(p)
    else:
        fs = _gcsfs(src)
        _call(src, lambda: fs.copy([_strip(f) for f in files], [_strip(t) for t in targets]))
    return targets
