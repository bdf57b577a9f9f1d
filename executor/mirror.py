"""Mirror a notebook that papermill keeps rewriting locally to its final place, rate-limited.

Papermill saves the output notebook at every cell start and end; sent straight to GCS that
is 2+ writes per cell to one object, beyond the about-one-write-per-second an object takes.
The mirror instead checks the local file every ``interval`` seconds and uploads it only when
it changed and parses as JSON (papermill rewrites the file in place, so a read can catch it
half-written).

After the run every upload (the mirror's write in flight, the final notebook, the HTML,
the status) shares one :class:`Deadline`: :func:`bounded` gives up on a call once it has
passed, even when the call itself would hang on a storage server that no longer answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from jobcommon import storage
from jobcommon.errors import JobError
from jobcommon.retry import call_with_retries

log = logging.getLogger(__name__)

T = TypeVar("T")
MIN_INTERVAL = 1.0


class UploadFailed(Exception):
    """An upload after the run did not succeed before the upload deadline."""


class Deadline:
    """A point in time, ``seconds`` from now.

    >>> Deadline(5).remaining() > 4
    True
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())


def bounded(fn: Callable[[], T], deadline: Deadline, what: str) -> T:
    """``fn()``, but raise UploadFailed once ``deadline`` passes while it still runs.

    The call goes on in a daemon thread that is left behind: a storage client waiting on
    a dead connection cannot be interrupted, and must not hold the run's exit hostage.

    >>> bounded(lambda: 42, Deadline(5), "answer")
    42
    """
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"bounded {what}", daemon=True)
    thread.start()
    thread.join(deadline.remaining())
    if thread.is_alive():
        raise UploadFailed(
            f"{what}: no answer within the upload deadline of {deadline.seconds:g} s"
        )
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


class Mirror:
    """Upload ``local`` to ``remote`` at most once per ``interval`` s while running.

    Example:
        >>> mirror = Mirror("/tmp/run/out.ipynb", "gs://bkt/out.ipynb", interval=10).start()
        >>> ...  # papermill writes /tmp/run/out.ipynb  # doctest: +SKIP
        >>> mirror.final_upload(Deadline(300))  # doctest: +SKIP
    """

    def __init__(self, local: str, remote: str, interval: float = 10.0) -> None:
        self.local = local
        self.remote = remote
        self.interval = max(MIN_INTERVAL, float(interval))
        self.uploads = 0
        self.last_valid: bytes | None = None
        self._sent_digest: str | None = None
        self._last_upload = 0.0
        # One write at a time, so an older mirror copy never lands after the final one.
        self._sending = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="notebook-mirror", daemon=True)

    def start(self) -> Mirror:
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop mirroring; wait for a write in flight at most ``timeout`` seconds."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _read_valid(self, attempts: int = 5) -> bytes | None:
        for _ in range(attempts):
            try:
                with open(self.local, "rb") as f:
                    data = f.read()
                json.loads(data)
            except FileNotFoundError:
                return None
            except (ValueError, OSError):
                time.sleep(0.1)  # caught papermill mid-write: the next read sees it whole
                continue
            self.last_valid = data
            return data
        return None

    def _send(self, data: bytes) -> None:
        # Never two writes to one object within MIN_INTERVAL, also for the final upload.
        wait = self._last_upload + MIN_INTERVAL - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last_upload = time.monotonic()
        storage.write_bytes(self.remote, data)
        self.uploads += 1
        self._sent_digest = hashlib.sha256(data).hexdigest()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            data = self._read_valid()
            if data is None or hashlib.sha256(data).hexdigest() == self._sent_digest:
                continue
            with self._sending:
                if self._stop.is_set():
                    return
                try:
                    self._send(data)
                except JobError as exc:
                    # A missed mirror is harmless: the final upload carries everything.
                    log.warning("could not mirror the notebook to %s: %s", self.remote, exc)

    def _send_final(self, data: bytes, deadline: Deadline) -> None:
        if not self._sending.acquire(timeout=deadline.remaining()):
            raise UploadFailed(
                f"the final notebook could not be uploaded to {self.remote}: the mirror's "
                f"last upload did not finish within {deadline.seconds:g} s"
            )
        try:
            self._send(data)
        finally:
            self._sending.release()

    def final_upload(self, deadline: Deadline, data: bytes | None = None) -> int:
        """Upload the finished notebook, retrying until it lands or ``deadline`` passes.

        Returns the number of uploads made in all (mirror + final).
        """
        self._stop.set()
        if data is None:
            data = self._read_valid() or self.last_valid
        if data is None:
            raise UploadFailed(f"no notebook was written at {self.local}")

        def attempt() -> None:
            bounded(lambda: self._send_final(data, deadline), deadline, "the final notebook")

        try:
            call_with_retries(
                attempt,
                what=f"the final upload to {self.remote}",
                is_transient=lambda exc: isinstance(exc, JobError) and deadline.remaining() > 0,
                attempts=None,
                deadline_seconds=deadline.remaining(),
                first_wait=1.0,
                max_wait=max(0.1, min(30.0, deadline.seconds / 4)),
            )
        except (JobError, UploadFailed) as exc:
            raise UploadFailed(
                f"the final notebook could not be uploaded to {self.remote} within "
                f"{deadline.seconds:g} s: {exc}"
            ) from exc
        self.stop(0)
        return self.uploads
