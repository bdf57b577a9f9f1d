"""The one logging set-up for every entry point.

Off a terminal (a Vertex job, a Dataflow worker, a VM) each record is one JSON object per
line on stdout in Cloud Logging's structured format, written by google-cloud-logging's
``StructuredLogHandler``: ``severity``, ``message`` and ``logging.googleapis.com/labels``.
Errors go to stdout too, since Vertex shows every stderr line as ERROR. On a terminal the
records are plain readable lines on stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping

LOG_FORMATS = ("auto", "json", "text")
_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def default_labels(component: str) -> dict[str, str]:
    """Labels that identify a run in Cloud Logging: component, job id and trial id."""
    labels = {"component": component}
    for env, key in (("CLOUD_ML_JOB_ID", "job_id"), ("CLOUD_ML_TRIAL_ID", "trial_id")):
        if os.environ.get(env):
            labels[key] = os.environ[env]
    return labels


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
        import google.cloud.logging_v2
        from google.cloud.logging.handlers import StructuredLogHandler

        # The handler's first record would otherwise be a message-less "instrumentation" entry,
        # printed twice (it propagates to root); it tells Google which library wrote the logs.
        google.cloud.logging_v2._instrumentation_emitted = True

        all_labels = default_labels(component) | dict(labels or {})
        handler: logging.Handler = StructuredLogHandler(
            labels=all_labels, stream=sys.stdout, project_id=os.environ.get("CLOUD_ML_PROJECT_ID")
        )
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
