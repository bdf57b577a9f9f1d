"""Helpers for tests that kill a job midway, as a preempted or crashed machine would."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable


def sigkill_when(
    proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 180, poll: float = 0.05
) -> None:
    """Wait until ``ready()`` is true (or ``proc`` ends, or ``timeout`` passes), then SIGKILL
    ``proc`` and reap it. A process that already ended keeps its own exit code, so the caller's
    ``proc.returncode == -signal.SIGKILL`` check tells whether the kill landed midway.

    Example:
        >>> import sys
        >>> proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        >>> sigkill_when(proc, lambda: True)
        >>> proc.returncode == -signal.SIGKILL
        True
    """
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if ready():
                break
            time.sleep(poll)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
