"""The one logging set-up for every entry point.

Off a terminal (a Vertex job, a Dataflow worker, a VM) each record is one JSON object per
line on stdout in Cloud Logging's structured format: ``severity``, ``message``, ``time``,
``logging.googleapis.com/labels`` and ``logging.googleapis.com/sourceLocation``, plus a
record's ``extra={"json_fields": {...}}`` at the top level. Errors go to stdout too, since
Vertex shows every stderr line as ERROR. On a terminal the records are plain readable lines
on stderr.

The JSON lines are written by :class:`CloudLoggingFormatter` rather than google-cloud-logging's
``StructuredLogHandler``: that handler only formats a dict, but importing it loads the whole
Logging API client (0.3 s at every job's start, measured after TensorFlow was imported).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime

LOG_FORMATS = ("auto", "json", "text")
_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def default_labels(component: str) -> dict[str, str]:
    """Labels that identify a run in Cloud Logging: component, job id and trial id."""
    labels = {"component": component}
    for env, key in (("CLOUD_ML_JOB_ID", "job_id"), ("CLOUD_ML_TRIAL_ID", "trial_id")):
        if os.environ.get(env):
            labels[key] = os.environ[env]
    return labels


class CloudLoggingFormatter(logging.Formatter):
    """One Cloud Logging structured entry (a JSON object) per record.

    Example:
        >>> record = logging.LogRecord("t", logging.INFO, "task.py", 7, "epoch %d", (3,), None)
        >>> entry = json.loads(CloudLoggingFormatter({"component": "trainer"}).format(record))
        >>> entry["severity"], entry["message"], entry["logging.googleapis.com/labels"]
        ('INFO', 'epoch 3', {'python_logger': 't', 'component': 'trainer'})
    """

    def __init__(self, labels: Mapping[str, str]) -> None:
        super().__init__()
        self.labels = dict(labels)

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            message += "\n" + self.formatStack(record.stack_info)
        entry = {
            "message": message,
            "severity": record.levelname,
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logging.googleapis.com/labels": {"python_logger": record.name, **self.labels},
            "logging.googleapis.com/sourceLocation": {
                "file": record.pathname,
                "line": record.lineno,
                "function": record.funcName,
            },
        }
        entry.update(getattr(record, "json_fields", None) or {})
        return json.dumps(entry, default=str)


def resolve_format(log_format: str, stream=None) -> str:
    """``auto`` means text on a terminal and JSON anywhere else."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"--log-format must be one of {LOG_FORMATS}, not {log_format!r}")
    if log_format != "auto":
        return log_format
    stream = stream or sys.stderr
    return "text" if hasattr(stream, "isatty") and stream.isatty() else "json"


def setup_logging(
    component: str,
    level: str | int = "INFO",
    log_format: str = "auto",
    labels: Mapping[str, str] | None = None,
) -> str:
    """Configure the root logger once for a command; returns the format chosen.

    Example:
        >>> setup_logging("trainer", "INFO", "json", {"model": "mlp"})  # doctest: +SKIP
        'json'
    """
    fmt = resolve_format(log_format)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if fmt == "json":
        handler: logging.Handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(CloudLoggingFormatter(default_labels(component) | dict(labels or {})))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT, datefmt="%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    # Client libraries are chatty at INFO; users want our records, not theirs.
    for noisy in ("urllib3", "google", "gcsfs", "fsspec", "absl", "tensorflow", "asyncio"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))
    # Off GCE, google-auth warns on each metadata-server probe; the outcome (credentials or a
    # NoCredentialsError naming what to do) is what matters.
    logging.getLogger("google.auth").setLevel(max(root.level, logging.ERROR))
    return fmt


def add_logging_flags(parser: argparse.ArgumentParser) -> None:
    """``--log-format`` and ``--log-level``, the same on every command."""
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=os.environ.get("LOG_FORMAT", "auto"),
        help="json (Cloud Logging structured lines on stdout), text, or auto: text on a "
        "terminal, json elsewhere (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("LOG_LEVEL", "INFO"),
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="lowest severity logged (default: %(default)s)",
    )
