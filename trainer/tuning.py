"""In-image hyperparameter search with keras-tuner (``--tune random|bayesian|hyperband``).

The tuner's project directory is LOCAL (keras-tuner reads and writes it with
``tf.io.gfile``, which must never see ``gs://``). It is downloaded from
``<model-dir>/tuner/`` at start and uploaded after every trial, so a restarted job reloads
the oracle and does not redo finished trials (a trial cut short by the crash starts again).
Every trial start is appended to ``trial_runs.jsonl`` in the project, which shows which
process ran which trial.

Several replicas search together through keras-tuner's distributed mode: the variables
``KERASTUNER_TUNER_ID`` / ``KERASTUNER_ORACLE_IP`` / ``KERASTUNER_ORACLE_PORT`` are derived
from ``CLUSTER_SPEC`` (:func:`trainer.distribute.keras_tuner_env`); the primary serves the
oracle, the others run trials, and the primary then trains and exports the best model.

The search space of the built-in models: ``learning_rate`` (1e-4..1e-2, log),
``hidden_units`` (64, 128, 256, 512, "256,128") and ``dropout`` (0..0.5). A user's
``build_model(hp, schema)`` defines its own space with ``hp.Int`` / ``hp.Choice`` / ....

Example:
    >>> hp = search(args, schema, train, val, dirs, strategy, cluster, "/w")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import time

from jobcommon import storage
from jobcommon.errors import NotFoundError, UsageError
from trainer import models
from trainer.distribute import keras_tuner_env

log = logging.getLogger(__name__)

PROJECT = "search"
TRIAL_RUNS = "trial_runs.jsonl"
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


def _objective(args, schema, has_eval: bool):
    import keras_tuner as kt

    name = args.tune_objective or args.hypertune_metric
    if not name:
        name = "loss" if schema.task == "regression" else "accuracy"
        name = f"val_{name}" if has_eval else name
    direction = "min" if "loss" in name or "error" in name or name.endswith("mae") else "max"
    return kt.Objective(name, direction)


def search(args, schema, train_ds, eval_ds, dirs, strategy, cluster, scratch: str):
    """Run (or resume) the search; returns the best hyperparameters, None on a tuner worker."""
    import keras
    import keras_tuner as kt

    from trainer.task import hparams_from_args

    os.environ.update(keras_tuner_env())
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID")
    defaults = hparams_from_args(args)
    local = os.path.join(scratch, "tuner")
    remote = storage.join(dirs.model_dir, "tuner")
    try:
        storage.copy_tree(storage.join(remote, PROJECT), os.path.join(local, PROJECT))
        log.info("resuming the search saved in %s", remote)
    except NotFoundError:
        pass

    def build(hp):
        if args.model_module:
            model = models.load_user_builder(args.model_module)(hp, schema)
            if not model.compiled:
                models.compile_model(model, schema, args.optimizer, args.learning_rate)
            return model
        return models.build(_Space(hp, defaults), schema)

    runs_log = os.path.join(local, PROJECT, TRIAL_RUNS)
    attempt = f"{os.getpid()}-{int(time.time())}"
    base = {
        "random": kt.RandomSearch,
        "bayesian": kt.BayesianOptimization,
        "hyperband": kt.Hyperband,
    }[args.tune]

    class SyncedTuner(base):
        def on_trial_begin(self, trial):
            super().on_trial_begin(trial)
            record = {"trial_id": trial.trial_id, "attempt": attempt, "tuner_id": tuner_id or ""}
            with open(runs_log, "a") as f:
                f.write(json.dumps({**record, "time": time.time()}) + "\n")
            log.info("trial %s: %s", trial.trial_id, json.dumps(trial.hyperparameters.values))

        def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
            # keras-tuner imports the tensorboard package here only to adjust a TensorBoard
            # callback; we pass none, and TensorFlow 2.21 no longer installs tensorboard.
            return

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            storage.copy_tree(os.path.join(local, PROJECT), storage.join(remote, PROJECT))

    kwargs = dict(
        objective=_objective(args, schema, eval_ds is not None),
        directory=local,
        project_name=PROJECT,
        overwrite=False,
        seed=args.seed,
        distribution_strategy=strategy if strategy.num_replicas_in_sync > 1 else None,
    )
    if args.tune == "hyperband":
        tuner = SyncedTuner(build, max_epochs=args.epochs, hyperband_iterations=1, **kwargs)
    else:
        if args.max_trials < 1:
            raise UsageError("--max-trials must be at least 1")
        tuner = SyncedTuner(build, max_trials=args.max_trials, **kwargs)
    os.makedirs(os.path.dirname(runs_log), exist_ok=True)
    tuner.search(
        train_ds,
        validation_data=eval_ds,
        epochs=args.epochs,
        shuffle=False,  # the dataset shuffles itself
        verbose=0,
        callbacks=[keras.callbacks.TerminateOnNaN()],
    )
    if tuner_id and "chief" not in tuner_id:
        log.info("tuner worker %s finished its trials", tuner_id)
        return None
    best = tuner.get_best_hyperparameters(1)
    if not best:
        raise UsageError("the search finished no trial; see the trial errors above")
    record = {
        "hyperparameters": best[0].values,
        "objective": tuner.oracle.objective.name,
        "score": tuner.oracle.get_best_trials(1)[0].score,
        "trials": len(tuner.oracle.trials),
    }
    storage.write_text(storage.join(remote, BEST_FILE), json.dumps(record, indent=2))
    log.info("best hyperparameters: %s", json.dumps(record))
    return best_hparams(best[0], defaults, bool(args.model_module))
