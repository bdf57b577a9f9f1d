"""``python -m trainer.task``: train a Keras model as a Vertex AI / AI Platform custom job.

The flags, their defaults and checks, and what the platform's environment says are in
:mod:`trainer.options` (``python -m trainer.task --help``). A run is a few named steps:

1. :func:`prepare_outputs`: resolve the output locations and check each is writable;
2. :func:`finished_job`: a rerun of a finished job returns its record without training;
3. :func:`choose_strategy`: start TensorFlow and pick the ``tf.distribute`` strategy;
4. :func:`load_data`: the schema and the batched train / eval datasets;
5. optionally :func:`trainer.tuning.search`, then :func:`build_model`;
6. :func:`make_callbacks` and :func:`fit`, with :func:`check_finite` after it;
7. :func:`evaluate` and :func:`export_run`.

TensorFlow, Keras and keras-tuner are imported by the steps that need them, so ``--help``
and flag errors come back without loading them.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jobcommon import cli, clock, storage
from jobcommon.errors import BadInputError, UsageError, first_line
from jobcommon.logs import setup_logging
from jobcommon.schema import Schema
from trainer import models, options
from trainer.options import Dirs, TrainerOptions, build_parser

__all__ = ["RunResult", "build_parser", "main", "run"]

log = logging.getLogger("trainer")


@dataclass
class RunResult:
    """What a run produced (``model`` is None when a finished job was not retrained)."""

    export_path: str | None
    metrics: dict = field(default_factory=dict)
    history: dict = field(default_factory=dict)
    model: object = None
    skipped: bool = False


@dataclass
class TrainingData:
    """The schema and the batched datasets a run trains and evaluates on."""

    schema: Schema
    train: Any
    train_stats: Any
    eval: Any = None
    eval_stats: Any = None


def prepare_outputs(opts: TrainerOptions) -> Dirs:
    """The output locations, each checked writable (bucket exists, access granted) now.

    A missing bucket or a denied write is one clear error before any data is read, instead
    of a failure after the first epoch. Only the chief writes, so only the chief checks.
    """
    dirs = opts.dirs()
    if opts.vertex.cluster.is_chief:
        for d in dict.fromkeys((dirs.model_dir, dirs.checkpoint_dir, dirs.tensorboard_dir)):
            probe = storage.join(d, f".write-check-{clock.unique_stamp()}")
            storage.write_text(probe, "")
            storage.delete(probe)
    return dirs


def finished_job(opts: TrainerOptions, dirs: Dirs) -> RunResult | None:
    """The record of this job if it already finished (same flags), else None."""
    from trainer import checkpoints

    done = checkpoints.read_done(dirs.checkpoint_dir)
    if done is None:
        return None
    if done.get("args") != opts.identity():
        raise UsageError(
            f"{dirs.checkpoint_dir} holds a finished job with other arguments; use a new "
            "--job-dir (or delete that one) to train again"
        )
    log.info("this job already finished; its export is %s", done.get("export"))
    return RunResult(done.get("export"), done.get("metrics", {}), skipped=True)


def choose_strategy(opts: TrainerOptions):
    """Start TensorFlow quietly and pick the strategy; returns it and the training cluster.

    A distributed search runs independent trials per replica (keras-tuner's own
    distribution), not one synchronous multi-worker model: then each replica trains alone.
    """
    from trainer import tf_runtime
    from trainer.distribute import strategy_for
    from trainer.vertex_cluster import Cluster

    gpus = tf_runtime.start()
    tf_runtime.set_mixed_precision(opts.mixed_precision)
    cluster = opts.vertex.cluster
    if opts.tune and cluster.num_workers > 1:
        import tensorflow as tf

        return tf.distribute.get_strategy(), Cluster()
    # Before other TF work: MultiWorkerMirroredStrategy needs that.
    return strategy_for(cluster, gpus), cluster


def load_data(opts: TrainerOptions, scratch: str) -> TrainingData:
    """The schema (found or inferred) and the batched train (and eval) datasets, files
    staged below ``scratch`` (see :func:`trainer.data.load_tabular`)."""
    from trainer import data

    loaded = data.load_tabular(
        opts.train_patterns,
        opts.eval_patterns,
        data_format=opts.data_format,
        target_column=opts.target_column,
        schema_file=opts.schema_file,
        task=opts.task,
        batch_size=opts.batch_size,
        skip_bad_records=opts.skip_bad_records,
        seed=opts.seed,
        staging_dir=os.path.join(scratch, "data"),
    )
    return TrainingData(
        loaded.schema, loaded.train, loaded.train_stats, loaded.eval, loaded.eval_stats
    )


def objective(opts: TrainerOptions, data: TrainingData) -> str:
    """The epoch metric reported to the tuning service and watched by early stopping."""
    return models.TASKS[data.schema.task].objective(data.eval is not None, opts.hypertune_metric)


def build_model(opts: TrainerOptions, hp, data: TrainingData, strategy, cluster):
    """Build the model in the strategy's scope and give it its input structure.

    A user's model that takes one plain tensor is fed the lone feature, not a one-key dict.
    """
    with strategy.scope():
        model = models.build(hp, data.schema, opts.model_module, compile_as=opts.hparams())
    if not models.takes_dict(model, data.schema):
        schema = data.schema
        data.train = data.train.map(lambda x, y: (models.model_inputs(model, schema, x), y))
        if data.eval is not None:
            data.eval = data.eval.map(lambda x, y: (models.model_inputs(model, schema, x), y))
    if cluster.num_workers > 1:
        from trainer.distribute import patch_keras_multi_worker

        patch_keras_multi_worker(model)
    return model


def class_weights(opts: TrainerOptions, data: TrainingData) -> dict[int, float] | None:
    """``--class-weight balanced``: n_samples / (n_classes * count), as scikit-learn's."""
    if not opts.class_weight:
        return None
    schema = data.schema
    if schema.task != "classification":
        raise UsageError("--class-weight balanced needs a classification task")
    import numpy as np

    counts = np.zeros(schema.num_classes, np.int64)
    for _, labels in data.train.take(-1).as_numpy_iterator():
        counts += np.bincount(np.asarray(labels).reshape(-1), minlength=schema.num_classes)[
            : schema.num_classes
        ]
    total, present = int(counts.sum()), int((counts > 0).sum())
    weights = {c: (total / (present * int(n)) if n else 1.0) for c, n in enumerate(counts.tolist())}
    log.info(
        "class weights (balanced): %s",
        json.dumps({str(k): round(v, 4) for k, v in weights.items()}),
    )
    return weights


def make_callbacks(opts: TrainerOptions, dirs: Dirs, metric: str, scratch: str, attempt: str):
    """Backup and restore, checkpoint upload, NaN stop, reports; returns (callbacks, sync)."""
    import keras

    from trainer import checkpoints, reports

    cluster = opts.vertex.cluster
    backup_dir = os.path.join(scratch, "backup")
    checkpoints.restore(dirs.checkpoint_dir, backup_dir)
    sync = checkpoints.CheckpointSync(
        backup_dir, dirs.checkpoint_dir if cluster.is_chief else None, attempt
    )
    callbacks = [
        keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False),
        sync,
        keras.callbacks.TerminateOnNaN(),
    ]
    if opts.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=metric,
                mode=models.direction_of(metric),
                patience=opts.early_stopping_patience,
                restore_best_weights=True,
            )
        )
    if cluster.is_chief:
        if opts.in_tuning_trial:
            from trainer import vertex_hypertune

            writer = vertex_hypertune.HypertuneWriter(
                opts.vertex.hp_metric_file, opts.vertex.trial_id
            )
            callbacks.append(vertex_hypertune.HypertuneReporter(metric, writer))
        callbacks.append(
            reports.TensorBoardScalars(os.path.join(scratch, "tensorboard"), dirs.tensorboard_dir)
        )
    if not sys.stdout.isatty():
        callbacks.append(reports.EpochLogger(opts.epochs))
    return callbacks, sync


def fit(opts: TrainerOptions, model, data: TrainingData, callbacks, weights) -> float:
    """``model.fit``; a data error during training is a BadInputError. Returns the seconds."""
    import tensorflow as tf

    started = time.monotonic()
    try:
        model.fit(
            data.train,
            validation_data=data.eval,
            epochs=opts.epochs,
            shuffle=False,  # the dataset shuffles itself
            verbose=1 if sys.stdout.isatty() else 0,
            callbacks=callbacks,
            class_weight=weights,
        )
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as exc:
        raise BadInputError(
            f"reading {opts.train_patterns} failed during training ({first_line(exc)})"
        ) from exc
    return time.monotonic() - started


def check_finite(opts: TrainerOptions, history: dict, attempt: str) -> None:
    """Fail with a hint when this attempt's loss became NaN/inf."""
    for record in history["epochs"]:
        loss = record.get("loss")
        if record["attempt"] == attempt and (loss is None or not math.isfinite(loss)):
            raise BadInputError(
                f"training diverged: the loss became NaN/inf in epoch {record['epoch'] + 1}; "
                f"lower --learning-rate (now {opts.learning_rate}) or check the data for "
                "NaN/inf values"
            )


def evaluate(opts: TrainerOptions, model, data: TrainingData, history: dict, seconds: float):
    """The run's metrics: record counts, time, and the final evaluation on the eval split."""
    stats = data.train_stats
    metrics = {
        "train_records": stats.usable,
        "train_bad_records": stats.bad,
        "train_records_without_target": stats.missing_target,
        "train_seconds_this_attempt": round(seconds, 3),
        "epochs": opts.epochs,
    }
    trained = len({r["epoch"] for r in history["epochs"]})
    if trained < opts.epochs:
        metrics["epochs_trained"] = trained  # early stopping ended it
    if data.eval is not None:
        result = model.evaluate(data.eval, verbose=0, return_dict=True)
        metrics.update({k: float(v) for k, v in result.items()})
        metrics["eval_records"] = data.eval_stats.usable
        metrics["eval_bad_records"] = data.eval_stats.bad
        metrics["eval_records_without_target"] = data.eval_stats.missing_target
    log.info("final evaluation: %s", json.dumps(metrics), extra={"json_fields": metrics})
    return metrics


def export_run(opts, model, hp, data: TrainingData, dirs: Dirs, history, metrics, scratch):
    """Stage the export on every worker (saving may need every replica); the chief uploads
    it and records the job as finished. Returns the export's path (None off the chief)."""
    from trainer import checkpoints, reports
    from trainer.export import stage_export, upload_export

    extras = {
        "history.json": json.dumps(history, indent=2),
        "metrics.json": json.dumps(metrics, indent=2),
        "hyperparameters.json": json.dumps(models.hparams_dict(hp), indent=2),
        "training.png": reports.plot_history(history["metrics"], title=model.name),
    }
    local = stage_export(model, data.schema, os.path.join(scratch, "export"), extras)
    if not opts.vertex.cluster.is_chief:
        return None
    export_path = upload_export(local, dirs.model_dir, at_root=dirs.export_at_root)
    record = {"export": export_path, "args": opts.identity(), "metrics": metrics}
    checkpoints.write_done(dirs.checkpoint_dir, {**record, "finished": time.time()})
    return export_path


def train(opts: TrainerOptions, dirs: Dirs, scratch: str) -> RunResult:
    """Steps 3-7 of the module docstring, in ``scratch``."""
    from trainer import checkpoints

    strategy, cluster = choose_strategy(opts)
    if opts.seed is not None:
        import keras

        keras.utils.set_random_seed(opts.seed)
    data = load_data(opts, scratch)
    metric = objective(opts, data)
    attempt = clock.unique_stamp()
    hp = opts.hparams()
    if opts.tune:
        from trainer import tuning

        hp = tuning.search(opts, data.schema, data.train, data.eval, strategy, scratch, attempt)
        if hp is None:  # a tuner worker: the primary trains and exports the best model
            return RunResult(None)
    model = build_model(opts, hp, data, strategy, cluster)
    weights = class_weights(opts, data)
    callbacks, sync = make_callbacks(opts, dirs, metric, scratch, attempt)
    stats = data.train_stats
    log.info(
        "training %s on %d records (%d skipped) for %d epochs, %s, %d worker(s)",
        model.name,
        stats.usable,
        stats.bad + stats.missing_target,
        opts.epochs,
        json.dumps(models.hparams_dict(hp)),
        cluster.num_workers,
    )
    seconds = fit(opts, model, data, callbacks, weights)
    check_finite(opts, sync.history, attempt)
    history = dict(sync.history)
    history["metrics"] = checkpoints.per_metric(sync.history)
    metrics = evaluate(opts, model, data, history, seconds)
    export_path = export_run(opts, model, hp, data, dirs, history, metrics, scratch)
    return RunResult(export_path, metrics, history, model)


def run(
    opts: TrainerOptions | argparse.Namespace, env: Mapping[str, str] | None = None
) -> RunResult:
    """Train (resuming if a backup exists), evaluate and export; see the module docstring.

    ``opts`` is a :class:`TrainerOptions`, or the flags parsed by :func:`build_parser`
    together with ``env`` (default ``os.environ``) to read the platform's variables from.

    Example:
        >>> run(options.parse(["--job-dir", "/tmp/j", "--train-files",
        ...     "/data/train-*"]))  # doctest: +SKIP
    """
    if not isinstance(opts, TrainerOptions):
        opts = options.from_args(opts, env)
    # TensorFlow (TF_CONFIG) and keras-tuner (KERASTUNER_*) read these from the process.
    os.environ.update(opts.vertex.process_env)
    dirs = prepare_outputs(opts)
    from trainer import tf_runtime

    tf_runtime.start()  # before anything imports TensorFlow: its start-up noise is captured
    done = finished_job(opts, dirs)
    if done is not None:
        return done
    scratch = opts.scratch_dir or tempfile.mkdtemp(prefix="trainer-")
    os.makedirs(scratch, exist_ok=True)
    try:
        return train(opts, dirs, scratch)
    finally:
        if not opts.scratch_dir:
            shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    opts = options.parse(argv)
    labels = {"replica": opts.vertex.cluster.label}
    setup_logging("trainer", opts.log_level, opts.log_format, labels)
    result = run(opts)
    if result.export_path:
        print(json.dumps({"export": result.export_path, "metrics": result.metrics}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
