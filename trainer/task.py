"""``python -m trainer.task``: train a Keras model as a Vertex AI / AI Platform custom job.

Locally and in the cloud it is the same command::

    python -m trainer.task --job-dir gs://demo/jobs/run1 \\
        --train-files 'gs://demo/digits/train-*' --eval-files 'gs://demo/digits/eval-*' \\
        --epochs 10 --batch-size 128 --hidden-units 512 --learning-rate 0.001

Where outputs go: ``--job-dir`` (legacy AI Platform), else Vertex's ``AIP_MODEL_DIR`` /
``AIP_CHECKPOINT_DIR`` / ``AIP_TENSORBOARD_LOG_DIR``. A tuning-service trial
(``CLOUD_ML_TRIAL_ID``) with ``--job-dir`` writes below ``<job-dir>/<trial id>/``.
Data comes from ``--train-files`` / ``--eval-files`` or ``AIP_TRAINING_DATA_URI`` /
``AIP_VALIDATION_DATA_URI``. A restarted replica resumes from its last completed epoch;
a finished job is not trained again.
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
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from jobcommon import cli, storage
from jobcommon.errors import BadInputError, UsageError
from jobcommon.logs import add_logging_flags, setup_logging
from trainer.distribute import Cluster
from trainer.models import MODELS, OPTIMIZERS, HParams, parse_hidden_units

log = logging.getLogger("trainer")

# Flags that do not change what is trained: a rerun differing only in these is the same job.
_NOT_JOB_IDENTITY = {"log_format", "log_level", "scratch_dir"}


def _add(parser: argparse.ArgumentParser, flag: str, *aliases: str, **kwargs) -> None:
    """Add ``--a-b`` and its ``--a_b`` spelling (tuning services pass parameter ids as flags)."""
    names = [flag, *aliases]
    if "-" in flag[2:]:
        names.append("--" + flag[2:].replace("-", "_"))
    parser.add_argument(*names, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m trainer.task",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = p.add_argument_group("where")
    _add(
        where,
        "--job-dir",
        help="output base: exports, checkpoints/, logs/ (local or gs://); "
        "default: AIP_MODEL_DIR and friends",
    )
    _add(
        where,
        "--train-files",
        help="comma-separated globs of training files "
        "(.tfrecord[.gz], .csv, .jsonl; local or gs://); default: AIP_TRAINING_DATA_URI",
    )
    _add(
        where,
        "--eval-files",
        help="globs of evaluation files; default: AIP_VALIDATION_DATA_URI; none = no validation",
    )
    _add(
        where,
        "--schema-file",
        help="schema.json; default: schema.json beside the first training file, else one "
        "inferred from the CSV/JSON-lines columns (written into the export)",
    )
    _add(
        where,
        "--target-column",
        "--label",
        help="the column to predict when the schema is inferred (default: a column named "
        "label or target)",
    )
    _add(where, "--scratch-dir", help="local working directory (default: a temporary one)")
    hp = p.add_argument_group("hyperparameters")
    _add(hp, "--learning-rate", type=float, default=1e-3, help="default: %(default)s")
    _add(hp, "--batch-size", type=int, default=128, help="global batch size (default: %(default)s)")
    hp.add_argument("--epochs", type=int, default=10, help="default: %(default)s")
    _add(
        hp,
        "--hidden-units",
        default="512",
        help="dense layer sizes, e.g. 512 or 256,128 (default: %(default)s)",
    )
    hp.add_argument("--dropout", type=float, default=0.0, help="default: %(default)s")
    hp.add_argument(
        "--optimizer", choices=OPTIMIZERS, default="rmsprop", help="default: %(default)s"
    )
    model = p.add_argument_group("model")
    model.add_argument("--model", choices=MODELS, default="mlp", help="default: %(default)s")
    _add(model, "--model-module", help="a module with build_model(hp, schema) -> keras.Model")
    model.add_argument(
        "--task",
        choices=["classification", "regression"],
        help="must match the schema's task (default: the schema's)",
    )
    _add(
        model,
        "--skip-bad-records",
        action="store_true",
        help="skip (and count) records that do not match the schema instead of failing",
    )
    model.add_argument("--seed", type=int, help="random seed for repeatable runs")
    tune = p.add_argument_group("tuning")
    _add(
        tune,
        "--hypertune-metric",
        help="objective reported to the tuning service after "
        "each epoch (default: val_accuracy, or val_loss for regression)",
    )
    tune.add_argument(
        "--tune",
        choices=["random", "bayesian", "hyperband"],
        help="run a keras-tuner search first, then train the best model",
    )
    _add(
        tune, "--max-trials", type=int, default=10, help="keras-tuner trials (default: %(default)s)"
    )
    _add(tune, "--tune-objective", help="keras-tuner objective (default: as --hypertune-metric)")
    add_logging_flags(p)
    return p


@dataclass
class Dirs:
    model_dir: str
    checkpoint_dir: str
    tensorboard_dir: str


def resolve_dirs(job_dir: str | None, env: Mapping[str, str]) -> Dirs:
    """Output locations from ``--job-dir`` or Vertex's ``AIP_*`` variables."""
    if job_dir:
        base = job_dir.rstrip("/")
        if env.get("CLOUD_ML_TRIAL_ID"):
            base = storage.join(base, env["CLOUD_ML_TRIAL_ID"])
        dirs = Dirs(base, storage.join(base, "checkpoints"), storage.join(base, "logs"))
    elif env.get("AIP_MODEL_DIR"):
        base = env["AIP_MODEL_DIR"].rstrip("/")
        parent = base.rsplit("/", 1)[0] if "/" in base else base
        dirs = Dirs(base, storage.join(parent, "checkpoints"), storage.join(parent, "logs"))
    else:
        raise UsageError(
            "no output location: pass --job-dir gs://BUCKET/PATH (or a local directory), or run "
            "as a Vertex AI custom job with a base output directory (sets AIP_MODEL_DIR)"
        )
    dirs.checkpoint_dir = (env.get("AIP_CHECKPOINT_DIR") or dirs.checkpoint_dir).rstrip("/")
    dirs.tensorboard_dir = (env.get("AIP_TENSORBOARD_LOG_DIR") or dirs.tensorboard_dir).rstrip("/")
    for d in (dirs.model_dir, dirs.checkpoint_dir, dirs.tensorboard_dir):
        storage.validate(d)
    return dirs


def hparams_from_args(args) -> HParams:
    return HParams(
        model=args.model,
        learning_rate=args.learning_rate,
        hidden_units=parse_hidden_units(args.hidden_units),
        dropout=args.dropout,
        optimizer=args.optimizer,
    )


def job_identity(args) -> dict:
    return {k: v for k, v in sorted(vars(args).items()) if k not in _NOT_JOB_IDENTITY}


@dataclass
class RunResult:
    """What a run produced (``model`` is None when a finished job was not retrained)."""

    export_path: str | None
    metrics: dict = field(default_factory=dict)
    history: dict = field(default_factory=dict)
    model: object = None
    skipped: bool = False


def _check_args(args) -> None:
    if args.epochs < 1 or args.batch_size < 1:
        raise UsageError("--epochs and --batch-size must be at least 1")
    if not 0 <= args.dropout < 1:
        raise UsageError("--dropout must be in [0, 1)")
    if args.learning_rate <= 0:
        raise UsageError("--learning-rate must be positive")
    parse_hidden_units(args.hidden_units)


def run(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> RunResult:
    """Train (resuming if a backup exists), evaluate and export; see the module docstring.

    Example:
        >>> run(build_parser().parse_args(["--job-dir", "/tmp/j", "--train-files",
        ...     "/data/train-*"]))  # doctest: +SKIP
    """
    env = os.environ if env is None else env
    _check_args(args)
    cluster = Cluster.from_env(env)
    dirs = resolve_dirs(args.job_dir, env)
    train_patterns = args.train_files or env.get("AIP_TRAINING_DATA_URI")
    if not train_patterns:
        raise UsageError("no training data: pass --train-files (or set AIP_TRAINING_DATA_URI)")
    eval_patterns = args.eval_files or env.get("AIP_VALIDATION_DATA_URI")
    identity = job_identity(args)

    from trainer import checkpoints

    done = checkpoints.read_done(dirs.checkpoint_dir)
    if done is not None:
        if done.get("args") != identity:
            raise UsageError(
                f"{dirs.checkpoint_dir} holds a finished job with other arguments; use a new "
                "--job-dir (or delete that one) to train again"
            )
        log.info("this job already finished; its export is %s", done.get("export"))
        return RunResult(done.get("export"), done.get("metrics", {}), skipped=True)

    if args.tune and cluster.num_workers > 1:
        # A distributed search runs independent trials per replica (keras-tuner's own
        # distribution), not one synchronous multi-worker model.
        import tensorflow as tf

        strategy = tf.distribute.get_strategy()
        cluster_for_training = Cluster()
    else:
        strategy = cluster.strategy()  # before other TF work: multi-worker needs that
        cluster_for_training = cluster

    import keras

    from trainer import data, hypertune, models, reports
    from trainer.export import stage_export, takes_dict, upload_export

    if args.seed is not None:
        keras.utils.set_random_seed(args.seed)
    scratch = args.scratch_dir or tempfile.mkdtemp(prefix="trainer-")
    os.makedirs(scratch, exist_ok=True)
    try:
        loaded = data.load_tabular(
            train_patterns,
            eval_patterns,
            data_format=env.get("AIP_DATA_FORMAT"),
            target_column=args.target_column,
            schema_file=args.schema_file,
            task=args.task,
            batch_size=args.batch_size,
            skip_bad_records=args.skip_bad_records,
            seed=args.seed,
            staging_dir=os.path.join(scratch, "data"),
        )
        schema = loaded.schema
        train_ds, train_stats, eval_ds, eval_stats = (
            loaded.train,
            loaded.train_stats,
            loaded.eval,
            loaded.eval_stats,
        )
        metric = args.hypertune_metric or (
            "val_loss" if schema.task == "regression" else "val_accuracy"
        )
        if not eval_ds and not args.hypertune_metric:
            metric = metric[4:]
        hp = hparams_from_args(args)
        if args.tune:
            from trainer import tuning

            hp = tuning.search(args, schema, train_ds, eval_ds, dirs, strategy, cluster, scratch)
            if hp is None:  # a tuner worker: the primary trains and exports the best model
                return RunResult(None)

        with strategy.scope():
            model = models.build(hp, schema, args.model_module)
        if len(schema.features) == 1 and not takes_dict(model):
            # A user's single-input model gets the lone tensor, not a one-key dict.
            name = schema.features[0].input_name
            train_ds = train_ds.map(lambda x, y: (x[name], y))
            eval_ds = eval_ds.map(lambda x, y: (x[name], y)) if eval_ds is not None else None
        if cluster_for_training.num_workers > 1:
            from trainer.distribute import patch_keras_multi_worker

            patch_keras_multi_worker(model)

        backup_dir = os.path.join(scratch, "backup")
        checkpoints.restore(dirs.checkpoint_dir, backup_dir)
        attempt = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:6]}"
        sync = checkpoints.CheckpointSync(
            backup_dir, dirs.checkpoint_dir if cluster.is_chief else None, attempt
        )
        callbacks = [
            keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False),
            sync,
            keras.callbacks.TerminateOnNaN(),
        ]
        if cluster.is_chief:
            writer = hypertune.HypertuneWriter(
                env.get("CLOUD_ML_HP_METRIC_FILE") or hypertune.DEFAULT_METRIC_FILE,
                env.get("CLOUD_ML_TRIAL_ID", "0"),
            )
            callbacks.append(hypertune.HypertuneReporter(metric, writer))
            callbacks.append(
                reports.TensorBoardScalars(
                    os.path.join(scratch, "tensorboard"), dirs.tensorboard_dir
                )
            )
        on_terminal = sys.stdout.isatty()
        if not on_terminal:
            callbacks.append(reports.EpochLogger(args.epochs))
        log.info(
            "training %s on %d records (%d skipped) for %d epochs, %s, %d worker(s)",
            model.name,
            train_stats.usable,
            train_stats.bad + train_stats.missing_target,
            args.epochs,
            json.dumps(hp.as_dict() if hasattr(hp, "as_dict") else hp.values),
            cluster_for_training.num_workers,
        )
        started = time.monotonic()
        import tensorflow as tf

        try:
            model.fit(
                train_ds,
                validation_data=eval_ds,
                epochs=args.epochs,
                shuffle=False,  # the dataset shuffles itself
                verbose=1 if on_terminal else 0,
                callbacks=callbacks,
            )
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as exc:
            raise BadInputError(
                f"reading {train_patterns} failed during training ({exc.message.splitlines()[0]})"
            ) from exc
        train_seconds = time.monotonic() - started
        losses = [r.get("loss") for r in sync.history["epochs"] if r["attempt"] == attempt]
        if any(v is None or not math.isfinite(v) for v in losses):
            bad_epoch = next(
                r["epoch"] + 1
                for r in sync.history["epochs"]
                if r["attempt"] == attempt and not math.isfinite(r.get("loss", math.nan))
            )
            raise BadInputError(
                f"training diverged: the loss became NaN/inf in epoch {bad_epoch}; lower "
                f"--learning-rate (now {args.learning_rate}) or check the data for NaN/inf values"
            )
        metrics = {
            "train_records": train_stats.usable,
            "train_bad_records": train_stats.bad,
            "train_records_without_target": train_stats.missing_target,
            "train_seconds_this_attempt": round(train_seconds, 3),
            "epochs": args.epochs,
        }
        if eval_ds is not None:
            result = model.evaluate(eval_ds, verbose=0, return_dict=True)
            metrics.update({k: float(v) for k, v in result.items()})
            metrics["eval_records"] = eval_stats.usable
            metrics["eval_bad_records"] = eval_stats.bad
            metrics["eval_records_without_target"] = eval_stats.missing_target
        log.info("final evaluation: %s", json.dumps(metrics), extra={"json_fields": metrics})
        history = dict(sync.history)
        history["metrics"] = checkpoints.per_metric(sync.history)
        extras = {
            "history.json": json.dumps(history, indent=2),
            "metrics.json": json.dumps(metrics, indent=2),
            "hyperparameters.json": json.dumps(
                hp.as_dict() if hasattr(hp, "as_dict") else hp.values, indent=2
            ),
            "training.png": reports.plot_history(history["metrics"], title=model.name),
        }
        # Every worker saves (saving may involve all replicas); only the chief uploads.
        local_export = stage_export(model, schema, os.path.join(scratch, "export"), extras)
        export_path = None
        if cluster.is_chief:
            export_path = upload_export(local_export, dirs.model_dir)
            checkpoints.write_done(
                dirs.checkpoint_dir,
                {
                    "export": export_path,
                    "args": identity,
                    "metrics": metrics,
                    "finished": time.time(),
                },
            )
        return RunResult(export_path, metrics, history, model)
    finally:
        if not args.scratch_dir:
            shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cluster = Cluster.from_env(export=False)
    setup_logging("trainer", args.log_level, args.log_format, {"replica": cluster.label})
    result = run(args)
    if result.export_path:
        print(json.dumps({"export": result.export_path, "metrics": result.metrics}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
