"""What a finished run left behind: where it stopped, glued values, HTML, the status record."""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
from datetime import datetime
from typing import Any

from executor import exitcodes

log = logging.getLogger(__name__)

BANNER_TAG = "executor-status"


def stopped_cell(nb, unfinished: bool = False) -> tuple[int, dict] | None:
    """Where execution stopped, if it did: the cell's number as Jupyter users count it
    (from 1, in the output notebook, banner cells included) and the cell.

    With ``unfinished`` (a run papermill did not end itself: timeout, dead kernel), the
    last cell that started counts too, since papermill marks it completed on the way out.

    >>> import nbformat
    >>> nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1"),
    ...     nbformat.v4.new_code_cell("1/0", metadata={"papermill": {"exception": True}})])
    >>> stopped_cell(nb)[0]
    2
    """
    last_started = None
    for number, cell in enumerate(nb.cells, start=1):
        meta = cell.get("metadata", {}).get("papermill", {})
        if meta.get("exception") or meta.get("status") in ("failed", "running"):
            return number, cell
        if meta.get("start_time"):
            last_started = number, cell
    return last_started if unfinished else None


def mark_stopped(nb, state: str, reason: str) -> int | None:
    """For a run papermill did not finish itself (timeout, dead kernel), label the stopped
    cell as failed and put a banner on top pointing at it, as papermill does for errors.
    Returns the stopped cell's number (from 1, counting the banner)."""
    import nbformat

    found = stopped_cell(nb, unfinished=True)
    number = None
    if found is not None:
        number, cell = found
        cell.metadata.setdefault("papermill", {})
        cell.metadata.papermill["status"] = "failed"
        cell.metadata.papermill["exception"] = True
        number += 1  # the banner goes above it
    where = f" at cell {number}" if number is not None else ""
    banner = nbformat.v4.new_markdown_cell(
        f'<span style="color:red; font-size:2em;">{state}{where}: {reason}</span>',
        metadata={"tags": [BANNER_TAG], "papermill": {"status": "completed"}},
    )
    nb.cells.insert(0, banner)
    return number


def glued_values(path: str) -> dict[str, Any]:
    """Values the notebook recorded with ``scrapbook.glue``, as JSON-safe data."""
    try:
        import scrapbook as sb

        scraps = sb.read_notebook(path).scraps
    except Exception as exc:  # a broken notebook must not hide the run's state
        log.warning("could not read glued values from %s: %s", path, exc)
        return {}
    out = {}
    for name, scrap in scraps.items():
        if scrap.data is None:
            continue  # display-only scraps carry no value
        out[name] = json.loads(json.dumps(scrap.data, default=str))
    return out


def render_html(nb) -> str:
    import warnings

    from nbconvert import HTMLExporter

    with warnings.catch_warnings():
        # scrapbook's glue outputs have no HTML form; nbconvert warns once per output.
        warnings.simplefilter("ignore", UserWarning)
        body, _ = HTMLExporter().from_notebook_node(nb)
    return body


def image_info() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    def ver(pkg: str) -> str:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "unknown"

    return {
        "image_uri": os.environ.get("IMAGE_URI", ""),
        "executor_version": ver("cloud-ml-jobs"),
        "papermill_version": ver("papermill"),
        "python_version": platform.python_version(),
        "host": socket.gethostname(),
    }


def build_status(
    *,
    state: str,
    run_id: str,
    input_path: str,
    output_path: str,
    html: str,
    parameters: dict[str, Any],
    kernel: str,
    started: datetime,
    ended: datetime | None,
    error: dict | None = None,
    stopped_at: dict | None = None,
    timeout: dict | None = None,
    glued: dict | None = None,
) -> dict[str, Any]:
    """The ``<output>.status.json`` record."""
    return {
        "state": state,
        "exit_code": exitcodes.EXIT_CODE_BY_STATE.get(state),
        "run_id": run_id,
        "input": input_path,
        "output": output_path,
        "html": html,
        "kernel": kernel,
        "parameters": json.loads(json.dumps(parameters, default=str)),
        "started_at": started.isoformat(),
        "ended_at": ended.isoformat() if ended else None,
        "duration_seconds": round((ended - started).total_seconds(), 3) if ended else None,
        "failed_cell": stopped_at,
        "error": error,
        "timeout": timeout,
        "glued": glued or {},
        **image_info(),
    }
