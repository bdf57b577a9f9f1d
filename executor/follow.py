"""``executor status RUN_OUTPUT`` and ``executor wait RUN_OUTPUT``: follow a run from its
status file (``RUN_OUTPUT.status.json``, written at the start and at the end of every run).

``wait`` polls until the state is final and exits with the run's own exit code, so a script
can launch a VM and block on the result::

    python -m executor launch gs://b/in.ipynb gs://b/out/r1.ipynb --run-id r1 ...
    python -m executor wait gs://b/out/r1.ipynb --timeout 7200 && echo done
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

from executor import exitcodes
from jobcommon.errors import BadInputError, JobError, NotFoundError

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 15.0


class WaitTimedOut(JobError):
    """``executor wait --timeout`` passed before the run reached a final state."""

    exit_code = exitcodes.EXIT_WAIT_TIMED_OUT


def status_file(run_output: str) -> str:
    """The status file of a run, given its output notebook (or the status file itself).

    Example:
        >>> status_file("gs://b/out/r1.ipynb")
        'gs://b/out/r1.ipynb.status.json'
        >>> status_file("gs://b/out/r1.ipynb.status.json")
        'gs://b/out/r1.ipynb.status.json'
    """
    from executor import outputs

    if run_output.endswith(".status.json"):
        return run_output
    return outputs.status_path(run_output)


def read_status(run_output: str) -> dict[str, Any]:
    """The run's status record; NotFoundError when no run has written one there yet."""
    from jobcommon import storage

    path = status_file(run_output)
    try:
        text = storage.read_text(path)
    except NotFoundError as exc:
        raise NotFoundError(
            path,
            "no run has written a status there yet: check the output path, or the run has "
            "not started (a VM takes a few minutes to boot)",
        ) from exc
    try:
        record = json.loads(text)
        record["state"]  # noqa: B018 - a record without a state is not a status file
    except (ValueError, KeyError, TypeError) as exc:
        raise BadInputError(f"{path} is not an executor status file ({exc})") from exc
    return record


def summary(record: dict[str, Any]) -> str:
    """One line: run id, state, exit code, time, and where it stopped when it failed.

    Example:
        >>> summary({"run_id": "r1", "state": "FAILED", "exit_code": 10,
        ...          "duration_seconds": 3.5, "failed_cell": {"index": 4},
        ...          "error": {"name": "ValueError", "message": "bad"}, "output": "o.ipynb"})
        'r1 FAILED (exit code 10) after 3.5 s at cell 4: ValueError: bad; output o.ipynb'
    """
    parts = [f"{record.get('run_id')} {record['state']}"]
    if record.get("exit_code") is not None and record["state"] != exitcodes.RUNNING:
        parts.append(f" (exit code {record['exit_code']})")
    if record.get("duration_seconds") is not None:
        parts.append(f" after {record['duration_seconds']} s")
    elif record.get("started_at"):
        parts.append(f" since {record['started_at']}")
    cell = record.get("failed_cell")
    if cell and cell.get("index") is not None:
        parts.append(f" at cell {cell['index']}")
    error = record.get("error")
    if error and record["state"] != exitcodes.SUCCEEDED:
        parts.append(f": {error.get('name')}: {error.get('message')}")
    parts.append(f"; output {record.get('output')}")
    return "".join(parts)


def is_final(record: dict[str, Any]) -> bool:
    return record["state"] in exitcodes.FINAL_STATES


def wait(
    run_output: str, timeout: float | None = None, interval: float = DEFAULT_INTERVAL
) -> dict[str, Any]:
    """Poll the status file until the run's state is final; returns the final record.

    A missing status file is waited for too (the VM may still be booting). Raises
    :class:`WaitTimedOut` after ``timeout`` seconds.
    """
    path = status_file(run_output)
    deadline = None if timeout is None else time.monotonic() + timeout
    last_state = None
    while True:
        try:
            record: dict[str, Any] | None = read_status(run_output)
        except NotFoundError:
            record = None
        if record is not None:
            if record["state"] != last_state:
                log.info("%s", summary(record))
                last_state = record["state"]
            if is_final(record):
                return record
        if deadline is not None and time.monotonic() >= deadline:
            seen = f"still {record['state']}" if record else "no status file yet"
            raise WaitTimedOut(
                f"{path}: {seen} after --timeout {timeout:g} s; the run goes on (run "
                "`executor wait` again, or `executor status` to look)"
            )
        pause = interval if deadline is None else min(interval, deadline - time.monotonic())
        time.sleep(max(0.0, pause))


def add_status_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_output", metavar="RUN_OUTPUT",
        help="the run's output notebook (or its .status.json), local or gs://",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the whole status record")


def add_wait_flags(parser: argparse.ArgumentParser) -> None:
    from executor.options import positive_seconds

    parser.add_argument(
        "run_output", metavar="RUN_OUTPUT",
        help="the run's output notebook (or its .status.json), local or gs://",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=positive_seconds, default=None, metavar="S",
        help=f"give up after S seconds with exit code {exitcodes.EXIT_WAIT_TIMED_OUT} "
        "(default: wait as long as it takes)",
    )  # fmt: skip
    parser.add_argument(
        "--interval", type=positive_seconds, default=DEFAULT_INTERVAL, metavar="S",
        help="seconds between reads of the status file (default: %(default)s)",
    )  # fmt: skip


def status_main(args: argparse.Namespace) -> int:
    """``executor status``: print the run's state; exit 0 when a status file was read."""
    record = read_status(args.run_output)
    print(json.dumps(record, indent=2) if args.json else summary(record))
    return exitcodes.EXIT_OK


def wait_main(args: argparse.Namespace) -> int:
    """``executor wait``: block until the run is final; exit with the run's exit code."""
    record = wait(args.run_output, args.timeout, args.interval)
    print(summary(record))
    code = record.get("exit_code")
    return code if isinstance(code, int) else exitcodes.EXIT_FAILED
