"""Shared pieces of the trainer tests: digits data in the fake GCS and running the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)


def write_digits(output_dir: str, num_shards: int = 4, gzip: bool = False):
    """Digits as TFRecord shards (80/20 train/eval split) plus schema.json."""
    from trainer.data import write_dataset

    x, y = digits()
    return write_dataset(
        {"pixels": x}, y, output_dir, num_shards=num_shards, eval_fraction=0.2, gzip=gzip
    )


def new_bucket(gcs) -> str:
    name = f"trainer-{uuid.uuid4().hex[:10]}"
    gcs.create_bucket(name)
    return f"gs://{name}"


def child_env(base: dict[str, str], **extra: str) -> dict[str, str]:
    """Environment for a ``python -m trainer.*`` child: small thread pools, JSON logs."""
    env = dict(base)
    env.update(
        PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""),
        TF_NUM_INTRAOP_THREADS="1",
        TF_NUM_INTEROP_THREADS="2",
        TF_CPP_MIN_LOG_LEVEL="2",
        LOG_FORMAT="json",
    )
    env.update(extra)
    return env


def task_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "trainer.task", *args]


def run_task(args: list[str], env: dict[str, str], timeout: float = 300):
    return subprocess.run(
        task_cmd(*args), env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def log_records(stdout: str) -> list[dict]:
    """The structured log lines a run printed (non-JSON lines are skipped)."""
    out = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def epoch_records(stdout: str) -> list[dict]:
    """The one-per-epoch log records of a run."""
    return [
        r
        for r in log_records(stdout)
        if r.get("logging.googleapis.com/labels", {}).get("python_logger") == "trainer.epochs"
    ]


def read_text(path) -> str:
    with open(path) as f:
        return f.read()


@pytest.fixture(autouse=True)
def restore_logging():
    """CLI mains set up the root logger; put it back so other tests see pytest's set-up."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
