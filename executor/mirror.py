"""Mirror a notebook that papermill keeps rewriting locally to its final place, rate-limited.

Papermill saves the output notebook at every cell start and end; sent straight to GCS that
is 2+ writes per cell to one object, beyond the about-one-write-per-second an object takes.
The mirror instead checks the local file every ``interval`` seconds and uploads it only when
it changed and parses as JSON (papermill rewrites the file in place, so a read can catch it
half-written). The final upload keeps trying until a deadline.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time

from jobcommon import storage
from jobcommon.errors import JobError

log = logging.getLogger(__name__)

MIN_INTERVAL = 1.0


class UploadFailed(Exception):
    """The final upload did not succeed before its deadline."""


class Mirror:
    """Upload ``local`` to ``remote`` at most once per ``interval`` s while running.

    Example:
        >>> mirror = Mirror("/tmp/run/out.ipynb", "gs://bkt/out.ipynb", interval=10).start()
        >>> ...  # papermill writes /tmp/run/out.ipynb  # doctest: +SKIP
        >>> mirror.stop(); mirror.final_upload(deadline_seconds=300)  # doctest: +SKIP
    """

    def __init__(self, local: str, remote: str, interval: float = 10.0) -> None:
        self.local = local
        self.remote = remote
        self.interval = max(MIN_INTERVAL, float(interval))
        self.uploads = 0
        self.last_valid: bytes | None = None
        self._sent_digest: str | None = None
        self._last_upload = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="notebook-mirror", daemon=True)

    def start(self) -> Mirror:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

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
            try:
                self._send(data)
            except JobError as exc:
                # A missed mirror is harmless: the final upload carries everything.
                log.warning("could not mirror the notebook to %s: %s", self.remote, exc)

    def final_upload(self, deadline_seconds: float = 300.0, data: bytes | None = None) -> int:
        """Upload the finished notebook, retrying until it lands or the deadline passes.

        Returns the number of uploads made in all (mirror + final).
        """
        self.stop()
        if data is None:
            data = self._read_valid() or self.last_valid
        if data is None:
            raise UploadFailed(f"no notebook was written at {self.local}")
        deadline = time.monotonic() + deadline_seconds
        delay = 1.0
        while True:
            try:
                self._send(data)
                return self.uploads
            except JobError as exc:
                if time.monotonic() + delay > deadline:
                    raise UploadFailed(
                        f"the final notebook could not be uploaded to {self.remote} within "
                        f"{deadline_seconds:.0f} s: {exc}"
                    ) from exc
                log.warning(
                    "final upload to %s failed (%s); retrying in %.0f s", self.remote, exc, delay
                )
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
