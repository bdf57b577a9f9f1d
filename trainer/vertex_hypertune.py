"""Report the tuning objective to the Vertex AI / AI Platform tuning service.

The service reads the file named by ``CLOUD_ML_HP_METRIC_FILE`` (default
``/tmp/hypertune/output.metrics``): JSON lines, rewritten whole at each report, at most 100
kept, keys sorted, values as strings except ``timestamp`` (a float)::

    {"checkpoint_path": "", "global_step": "3", "timestamp": 1700000000.1, "trial": "2",
     "val_accuracy": "0.97"}

This is the format of the ``cloudml-hypertune`` package. We write it ourselves because that
package has had no release since 2019, is published only as an sdist, and is a few lines.

The trainer writes it only in a tuning-service trial (``CLOUD_ML_TRIAL_ID`` set); the
file name and the trial id come from :class:`trainer.options.VertexEnv`.

Example:
    >>> writer = HypertuneWriter("/tmp/hypertune/output.metrics", trial="2")  # doctest: +SKIP
    >>> model.fit(..., callbacks=[HypertuneReporter("val_accuracy", writer)])  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections import deque

import keras

log = logging.getLogger(__name__)

MAX_REPORTS = 100


class HypertuneWriter:
    """Keeps the last :data:`MAX_REPORTS` reports and rewrites the metric file at each one."""

    def __init__(self, path: str, trial: str) -> None:
        self.path = path
        self.trial = trial
        self.reports: deque[dict] = deque(maxlen=MAX_REPORTS)

    def report(self, tag: str, value: float, global_step: int, checkpoint_path: str = "") -> None:
        """Record ``tag=value`` at ``global_step`` (e.g. the epoch number)."""
        self.reports.append(
            {
                "checkpoint_path": checkpoint_path,
                "global_step": str(int(global_step)),
                tag: str(float(value)),
                "timestamp": time.time(),
                "trial": str(self.trial),
            }
        )
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        # Rename into place so the service never reads a half-written file.
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".metrics-")
        with os.fdopen(fd, "w") as f:
            for rec in self.reports:
                f.write(json.dumps(rec, sort_keys=True) + "\n")
        os.replace(tmp, self.path)


class HypertuneReporter(keras.callbacks.Callback):
    """Reports ``metric`` from the epoch logs after every epoch (global_step = epoch + 1)."""

    def __init__(self, metric: str, writer: HypertuneWriter) -> None:
        super().__init__()
        self.metric = metric
        self.writer = writer
        self._warned = False

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.metric)
        if value is None or not math.isfinite(float(value)):
            if not self._warned:
                log.warning(
                    "hypertune metric %r is not in the epoch results %s; pass "
                    "--hypertune-metric with one of them",
                    self.metric,
                    sorted(logs or {}),
                )
                self._warned = True
            return
        self.writer.report(self.metric, float(value), epoch + 1)
