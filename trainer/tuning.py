"""In-image hyperparameter search with keras-tuner (``--tune random|bayesian|hyperband``).

The tuner's project directory is LOCAL (keras-tuner reads and writes it with
``tf.io.gfile``, which must never see ``gs://``). It is downloaded from
``<checkpoint-dir>/tuner/`` at start and uploaded after every trial, so a restarted job
reloads the oracle and does not redo finished trials (a trial cut short by the crash starts
again). Every trial start is appended to ``trial_runs.jsonl`` in the project, which shows
which process ran which trial. The tuner's state stays out of the model directory, which
holds only the export.

Several replicas search together through keras-tuner's distributed mode: the variables
``KERASTUNER_TUNER_ID`` / ``KERASTUNER_ORACLE_IP`` / ``KERASTUNER_ORACLE_PORT`` are derived
from ``CLUSTER_SPEC`` (:func:`trainer.vertex_cluster.keras_tuner_env`); the primary serves
the oracle, the others run trials, and the primary then trains and exports the best model.

The search space of the built-in models: ``learning_rate`` (1e-4..1e-2, log),
``hidden_units`` (64, 128, 256, 512, "256,128") and ``dropout`` (0..0.5). A user's
``build_model(hp, schema)`` defines its own space with ``hp.Int`` / ``hp.Choice`` / ....

Example:
    >>> hp = search(opts, schema, train, val, dirs, strategy, "/w", "attempt-1")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any

from jobcommon import storage
from jobcommon.errors import NotFoundError, UsageError
from trainer import models
from trainer.tuners import is_tuner_worker, tuner_class

if TYPE_CHECKING:
    from trainer.options import Dirs, TrainerOptions

log = logging.getLogger(__name__)

PROJECT = "search"
BEST_FILE = "best_hyperparameters.json"
HIDDEN_CHOICES = ["64", "128", "256", "512", "256,128"]


class _Space:
    """The built-in models' search space, read through ``hp.get``-style calls."""

    def __init__(self, hp, defaults: models.HParams) -> None:
        self.hp = hp
        self.defaults = defaults

    def get(self, name: str):
        if name == "learning_rate":
            return self.hp.Float("learning_rate", 1e-4, 1e-2, sampling="log")
        if name == "hidden_units":
            return models.parse_hidden_units(self.hp.Choice("hidden_units", HIDDEN_CHOICES))
        if name == "dropout":
            return self.hp.Float("dropout", 0.0, 0.5, step=0.1)
        return self.defaults.get(name)


def best_hparams(best, defaults: models.HParams, user_model: bool):
    """What the final training run builds from: HParams for built-ins, keras-tuner's hp else."""
    if user_model:
        return best
    values = best.values
    return models.HParams(
        model=defaults.model,
        learning_rate=float(values.get("learning_rate", defaults.learning_rate)),
        hidden_units=models.parse_hidden_units(values.get("hidden_units", "512")),
        dropout=float(values.get("dropout", defaults.dropout)),
        optimizer=defaults.optimizer,
    )


def objective(opts: TrainerOptions, task: str, has_eval: bool):
    """keras-tuner's Objective: ``--tune-objective``, else the run's hypertune metric."""
    import keras_tuner as kt

    name = models.TASKS[task].objective(has_eval, opts.tune_objective or opts.hypertune_metric)
    return kt.Objective(name, models.direction_of(name))


def _hypermodel(opts: TrainerOptions, schema):
    defaults = opts.hparams()

    def build(hp):
        if opts.model_module:
            return models.build(hp, schema, opts.model_module, compile_as=defaults)
        return models.build(_Space(hp, defaults), schema)

    return build


def _restore_project(remote: str, local: str) -> None:
    try:
        storage.copy_tree(remote, local)
        log.info("resuming the search saved in %s", remote)
    except NotFoundError:
        pass


def make_tuner(opts: TrainerOptions, schema, has_eval: bool, strategy, scratch: str, attempt):
    """The ``--tune`` tuner over a local project restored from the checkpoint directory."""
    dirs = opts.dirs()
    local = os.path.join(scratch, "tuner")
    remote = storage.join(dirs.tuner_dir, PROJECT)
    _restore_project(remote, os.path.join(local, PROJECT))
    kwargs: dict[str, Any] = dict(
        objective=objective(opts, schema.task, has_eval),
        directory=local,
        project_name=PROJECT,
        overwrite=False,
        seed=opts.seed,
        distribution_strategy=strategy if strategy.num_replicas_in_sync > 1 else None,
        remote_dir=remote,
        attempt=attempt,
        tuner_id=opts.vertex.tuner_id,
    )
    if opts.tune == "hyperband":
        kwargs.update(max_epochs=opts.epochs, hyperband_iterations=1)
    else:
        kwargs.update(max_trials=opts.max_trials)
    return tuner_class(opts.tune)(_hypermodel(opts, schema), **kwargs)


def _record_best(tuner, dirs: Dirs):
    best = tuner.get_best_hyperparameters(1)
    if not best:
        raise UsageError("the search finished no trial; see the trial errors above")
    record = {
        "hyperparameters": best[0].values,
        "objective": tuner.oracle.objective.name,
        "score": tuner.oracle.get_best_trials(1)[0].score,
        "trials": len(tuner.oracle.trials),
    }
    storage.write_text(storage.join(dirs.tuner_dir, BEST_FILE), json.dumps(record, indent=2))
    log.info("best hyperparameters: %s", json.dumps(record))
    return best[0]


def search(opts: TrainerOptions, schema, train_ds, eval_ds, strategy, scratch: str, attempt: str):
    """Run (or resume) the search; returns the best hyperparameters, None on a tuner worker."""
    import keras

    tuner = make_tuner(opts, schema, eval_ds is not None, strategy, scratch, attempt)
    tuner.search(
        train_ds,
        validation_data=eval_ds,
        epochs=opts.epochs,
        shuffle=False,  # the dataset shuffles itself
        verbose=0,
        callbacks=[keras.callbacks.TerminateOnNaN()],
    )
    if is_tuner_worker():
        log.info("tuner worker %s finished its trials", tuner.tuner_id)
        return None
    best = _record_best(tuner, opts.dirs())
    return best_hparams(best, opts.hparams(), bool(opts.model_module))
