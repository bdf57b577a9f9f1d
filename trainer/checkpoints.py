"""Per-epoch backups kept in a checkpoint directory (local or ``gs://``), and resuming.

Keras's ``BackupAndRestore`` writes ``latest.weights.h5`` (model and optimizer state) and
``training_metadata.json`` (the next epoch) to a LOCAL directory after every epoch. After it,
:class:`CheckpointSync` copies that directory (plus ``history.json``) to
``<checkpoint-dir>/backup/<epoch>/`` and only then rewrites ``<checkpoint-dir>/LATEST`` with
that epoch: a process killed mid-upload leaves ``LATEST`` pointing at the previous complete
backup, so a torn one is never used. :func:`restore` downloads the backup ``LATEST`` names
into the local directory before ``fit()``, and ``BackupAndRestore`` resumes from it.

A finished run writes ``<checkpoint-dir>/DONE.json``; a rerun of the same command sees it
and does not train again.

Example:
    >>> epoch = restore("gs://b/job/checkpoints", "/tmp/backup")  # doctest: +SKIP
    >>> callbacks = [keras.callbacks.BackupAndRestore("/tmp/backup", delete_checkpoint=False),
    ...              CheckpointSync("/tmp/backup", "gs://b/job/checkpoints")]  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time

import keras
import numpy as np

from jobcommon import storage
from jobcommon.errors import NotFoundError

log = logging.getLogger(__name__)

LATEST = "LATEST"
DONE = "DONE.json"
BACKUP = "backup"
HISTORY = "history.json"
KEEP_BACKUPS = 2


def latest_epoch(checkpoint_dir: str) -> int | None:
    """The number of completed epochs of the newest complete backup, or None."""
    try:
        text = storage.read_text(storage.join(checkpoint_dir, LATEST)).strip()
    except NotFoundError:
        return None
    return int(text) if text.isdigit() else None


def restore(checkpoint_dir: str, local_dir: str) -> int | None:
    """Download the newest complete backup into ``local_dir``; returns its epoch count."""
    epoch = latest_epoch(checkpoint_dir)
    if epoch is None:
        return None
    storage.copy_tree(storage.join(checkpoint_dir, BACKUP, f"{epoch:06d}"), local_dir)
    log.info("restored the backup after epoch %d from %s", epoch, checkpoint_dir)
    return epoch


def read_done(checkpoint_dir: str) -> dict | None:
    try:
        return json.loads(storage.read_text(storage.join(checkpoint_dir, DONE)))
    except NotFoundError:
        return None


def write_done(checkpoint_dir: str, record: dict) -> None:
    storage.write_text(storage.join(checkpoint_dir, DONE), json.dumps(record, indent=2))


def weights_digest(model: keras.Model) -> str:
    """A short hash of the model's weights, to show which state an epoch started from."""
    h = hashlib.sha256()
    for w in model.weights:
        h.update(np.ascontiguousarray(w.numpy()).tobytes())
    return h.hexdigest()[:16]


class CheckpointSync(keras.callbacks.Callback):
    """Keeps ``history.json`` and, on the chief, uploads each epoch's backup atomically.

    Put it AFTER ``BackupAndRestore`` in the callback list so the backup of the epoch is on
    disk when this runs. ``history.json`` holds one record per completed epoch (metrics,
    seconds, the attempt that trained it and the weights digest at its end) and one record
    per attempt (the epoch it started at and the digest of the weights it started from).
    """

    def __init__(self, local_dir: str, checkpoint_dir: str | None, attempt: str) -> None:
        super().__init__()
        self.local_dir = local_dir
        self.checkpoint_dir = checkpoint_dir
        self.attempt = attempt
        self.history = _load_history(os.path.join(local_dir, HISTORY))
        self._t0 = 0.0

    def on_train_begin(self, logs=None) -> None:
        # BackupAndRestore.on_train_begin has already loaded the weights and set the epoch.
        self.history["attempts"].append(
            {
                "attempt": self.attempt,
                "initial_epoch": int(getattr(self.model, "_initial_epoch", None) or 0),
                "start_weights": weights_digest(self.model),
                "started": time.time(),
            }
        )

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._t0 = time.monotonic()

    def on_epoch_end(self, epoch, logs=None) -> None:
        logs = {k: float(v) for k, v in (logs or {}).items()}
        record = {
            "epoch": epoch,
            "attempt": self.attempt,
            "seconds": round(time.monotonic() - self._t0, 3),
            "end_weights": weights_digest(self.model),
            **logs,
        }
        self.history["epochs"].append(record)
        if not all(math.isfinite(v) for v in logs.values()):
            return  # never make a diverged state the one a restart resumes from
        os.makedirs(self.local_dir, exist_ok=True)
        with open(os.path.join(self.local_dir, HISTORY), "w") as f:
            json.dump(self.history, f)
        if self.checkpoint_dir:
            self.upload(epoch + 1)

    def upload(self, epochs_done: int) -> None:
        target = storage.join(self.checkpoint_dir, BACKUP, f"{epochs_done:06d}")
        storage.copy_tree(self.local_dir, target)
        storage.write_text(storage.join(self.checkpoint_dir, LATEST), f"{epochs_done}\n")
        log.debug("backup after epoch %d uploaded to %s", epochs_done, target)
        # Older backups are no longer needed once LATEST points past them.
        for old in storage.list_dir(storage.join(self.checkpoint_dir, BACKUP)):
            name = old.rstrip("/").rsplit("/", 1)[-1]
            if name.isdigit() and int(name) <= epochs_done - KEEP_BACKUPS:
                storage.delete(old, recursive=True)


def _load_history(path: str) -> dict:
    if os.path.exists(path):
        with open(path) as f:
            history = json.load(f)
        history.setdefault("epochs", [])
        history.setdefault("attempts", [])
        return history
    return {"epochs": [], "attempts": []}


def per_metric(history: dict) -> dict[str, list[float]]:
    """``{"loss": [...], "val_loss": [...], ...}`` from the epoch records, in epoch order."""
    records = sorted(history["epochs"], key=lambda r: r["epoch"])
    skip = {"epoch", "attempt", "seconds", "end_weights"}
    keys = sorted({k for r in records for k in r if k not in skip})
    return {k: [r.get(k) for r in records] for k in keys}
