"""The keras-tuner algorithms ``--tune`` offers, each with the trial bookkeeping we add.

:data:`TUNERS` maps a ``--tune`` value to a keras-tuner tuner class name. :func:`tuner_class`
returns that class with :class:`TrialSync` in front: after every trial the (local) project
directory is uploaded, and every trial start is appended to ``trial_runs.jsonl``. Like
keras-tuner's own tuners, it is configured through ``__init__``. keras-tuner is imported
only when a tuner is made, so the command line can list the choices cheaply.

Example:
    >>> sorted(TUNERS)
    ['bayesian', 'hyperband', 'random']
    >>> tuner = tuner_class("random")(build, objective="val_accuracy", max_trials=3,
    ...     directory="/tmp/t", project_name="search", remote_dir="gs://b/ck/tuner/search",
    ...     attempt="20261201T120000Z-abc123")  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time

from jobcommon import storage

log = logging.getLogger(__name__)

TUNERS = {"random": "RandomSearch", "bayesian": "BayesianOptimization", "hyperband": "Hyperband"}
TRIAL_RUNS = "trial_runs.jsonl"


class TrialSync:
    """Mixin for a keras-tuner tuner: log trial starts, upload the project after each trial.

    ``remote_dir`` receives a copy of ``<directory>/<project_name>``; ``attempt`` and
    ``tuner_id`` go into each ``trial_runs.jsonl`` record (which process ran which trial).
    """

    def __init__(self, *args, remote_dir: str, attempt: str, tuner_id: str = "", **kwargs):
        self.remote_dir = remote_dir
        self.attempt = attempt
        self.sync_tuner_id = tuner_id
        super().__init__(*args, **kwargs)
        os.makedirs(self.project_dir, exist_ok=True)

    @property
    def runs_log(self) -> str:
        return os.path.join(self.project_dir, TRIAL_RUNS)

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        record = {
            "trial_id": trial.trial_id,
            "attempt": self.attempt,
            "tuner_id": self.sync_tuner_id,
            "time": time.time(),
        }
        with open(self.runs_log, "a") as f:
            f.write(json.dumps(record) + "\n")
        log.info("trial %s: %s", trial.trial_id, json.dumps(trial.hyperparameters.values))

    def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
        # keras-tuner imports the tensorboard package here only to adjust a TensorBoard
        # callback; we pass none, and TensorFlow 2.21 no longer installs tensorboard.
        return

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        storage.copy_tree(self.project_dir, self.remote_dir)


@functools.cache
def tuner_class(name: str) -> type:
    """keras-tuner's tuner registered as ``name`` in :data:`TUNERS`, with :class:`TrialSync`."""
    import keras_tuner as kt

    base = getattr(kt, TUNERS[name])
    return type(f"Synced{base.__name__}", (TrialSync, base), {"__module__": __name__})


def is_tuner_worker() -> bool:
    """keras-tuner's own rule: distributed search and this process does not hold the oracle."""
    from keras_tuner.src.distribute import utils

    return utils.has_chief_oracle() and not utils.is_chief_oracle()
