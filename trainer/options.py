"""The trainer's options: every flag, default and check, and what the platform told us.

:func:`parse` is the one way in: it reads the command line and the environment once
(``AIP_*``, ``CLOUD_ML_*``, ``CLUSTER_SPEC`` / ``TF_CONFIG``, ``KERASTUNER_*``) and returns a
checked :class:`TrainerOptions`; nothing else in the trainer reads ``os.environ``. This
module imports no TensorFlow, Keras or keras-tuner, so ``--help`` and flag errors are fast.

Example:
    >>> opts = parse(["--job-dir", "/tmp/j", "--train-files", "/d/train-*"], environ={})
    >>> opts.epochs, opts.batch_size, opts.hparams().hidden_units, opts.dirs().checkpoint_dir
    (10, 128, (512,), '/tmp/j/checkpoints')
    >>> parse(["--job-dir", "/tmp/j", "--dropout", "1.5"], environ={})
    Traceback (most recent call last):
    ...
    jobcommon.errors.UsageError: --dropout must be in [0, 1)
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from jobcommon import storage
from jobcommon.errors import UsageError
from jobcommon.logs import add_logging_flags
from trainer.models import MODELS, OPTIMIZERS, TASKS, HParams, parse_hidden_units
from trainer.tuners import TUNERS
from trainer.vertex_cluster import Cluster, process_env

DEFAULT_METRIC_FILE = "/tmp/hypertune/output.metrics"
DATA_FORMATS = ("csv", "jsonl", "tf-record")  # AIP_DATA_FORMAT values the trainer reads
CLASS_WEIGHTS = ("balanced",)

# Flags that do not change what is trained: a rerun differing only in these is the same job.
_NOT_JOB_IDENTITY = {"log_format", "log_level", "scratch_dir"}

DESCRIPTION = """\
Train a Keras model as a Vertex AI / AI Platform custom job.

Locally and in the cloud it is the same command::

    python -m trainer.task --job-dir gs://demo/jobs/run1 \\
        --train-files 'gs://demo/digits/train-*' --eval-files 'gs://demo/digits/eval-*' \\
        --epochs 10 --batch-size 128 --hidden-units 512 --learning-rate 0.001

Where outputs go: --job-dir (legacy AI Platform): exports under <job-dir>/keras_export/,
checkpoints/ and logs/ beside them; else Vertex's AIP_MODEL_DIR (the SavedModel at its root),
AIP_CHECKPOINT_DIR, AIP_TENSORBOARD_LOG_DIR. A tuning-service trial (CLOUD_ML_TRIAL_ID) with
--job-dir writes below <job-dir>/<trial id>/. Data comes from --train-files / --eval-files or
AIP_TRAINING_DATA_URI / AIP_VALIDATION_DATA_URI (AIP_DATA_FORMAT csv, jsonl or tf-record).
A restarted replica resumes from its last completed epoch; a finished job is not trained again.
"""


@dataclass(frozen=True)
class Dirs:
    """Where a run writes. ``export_at_root``: the SavedModel goes straight into model_dir."""

    model_dir: str
    checkpoint_dir: str
    tensorboard_dir: str
    export_at_root: bool = False

    @property
    def tuner_dir(self) -> str:
        return storage.join(self.checkpoint_dir, "tuner")


@dataclass(frozen=True)
class VertexEnv:
    """What Vertex AI / AI Platform put in the environment, read once by :func:`parse`."""

    model_dir: str | None = None
    checkpoint_dir: str | None = None
    tensorboard_dir: str | None = None
    training_data_uri: str | None = None
    validation_data_uri: str | None = None
    test_data_uri: str | None = None
    data_format: str | None = None
    job_id: str | None = None
    trial_id: str | None = None
    hp_metric_file: str = DEFAULT_METRIC_FILE
    cluster: Cluster = field(default_factory=Cluster)
    kerastuner_id: str | None = None
    process_env: dict[str, str] = field(default_factory=dict)

    @property
    def tuner_id(self) -> str:
        """This process's keras-tuner id in a distributed search ('' otherwise)."""
        return self.kerastuner_id or self.process_env.get("KERASTUNER_TUNER_ID", "")

    @classmethod
    def from_environ(cls, env: Mapping[str, str], tuning: bool = False) -> VertexEnv:
        """Example:
        >>> VertexEnv.from_environ({"CLOUD_ML_TRIAL_ID": "3"}).trial_id
        '3'
        """
        cluster = Cluster.from_env(env)

        def get(name: str) -> str | None:
            return env.get(name) or None

        return cls(
            model_dir=get("AIP_MODEL_DIR"),
            checkpoint_dir=get("AIP_CHECKPOINT_DIR"),
            tensorboard_dir=get("AIP_TENSORBOARD_LOG_DIR"),
            training_data_uri=get("AIP_TRAINING_DATA_URI"),
            validation_data_uri=get("AIP_VALIDATION_DATA_URI"),
            test_data_uri=get("AIP_TEST_DATA_URI"),
            data_format=get("AIP_DATA_FORMAT"),
            job_id=get("CLOUD_ML_JOB_ID"),
            trial_id=get("CLOUD_ML_TRIAL_ID"),
            hp_metric_file=get("CLOUD_ML_HP_METRIC_FILE") or DEFAULT_METRIC_FILE,
            cluster=cluster,
            kerastuner_id=get("KERASTUNER_TUNER_ID"),
            process_env=process_env(cluster, env, tuning),
        )


@dataclass(frozen=True)
class TrainerOptions:
    """Every trainer flag (as its argparse ``dest``), plus :class:`VertexEnv` as ``vertex``."""

    job_dir: str | None = None
    train_files: str | None = None
    eval_files: str | None = None
    schema_file: str | None = None
    target_column: str | None = None
    scratch_dir: str | None = None
    learning_rate: float = 1e-3
    batch_size: int = 128
    epochs: int = 10
    hidden_units: str = "512"
    dropout: float = 0.0
    optimizer: str = "rmsprop"
    model: str = "mlp"
    model_module: str | None = None
    task: str | None = None
    skip_bad_records: bool = False
    seed: int | None = None
    early_stopping_patience: int | None = None
    class_weight: str | None = None
    mixed_precision: bool = False
    hypertune_metric: str | None = None
    tune: str | None = None
    max_trials: int = 10
    tune_objective: str | None = None
    log_format: str = "auto"
    log_level: str = "INFO"
    vertex: VertexEnv = field(default_factory=VertexEnv)

    def hparams(self) -> HParams:
        """The hyperparameters of the built-in models, from the flags."""
        return HParams(
            model=self.model,
            learning_rate=self.learning_rate,
            hidden_units=parse_hidden_units(self.hidden_units),
            dropout=self.dropout,
            optimizer=self.optimizer,
        )

    def identity(self) -> dict:
        """The flags that define the job: a finished job's record must match them."""
        return {
            f.name: getattr(self, f.name)
            for f in sorted(fields(self), key=lambda f: f.name)
            if f.name not in _NOT_JOB_IDENTITY and f.name != "vertex"
        }

    @property
    def train_patterns(self) -> str:
        patterns = self.train_files or self.vertex.training_data_uri
        if not patterns:
            raise UsageError("no training data: pass --train-files (or set AIP_TRAINING_DATA_URI)")
        return patterns

    @property
    def eval_patterns(self) -> str | None:
        return self.eval_files or self.vertex.validation_data_uri

    @property
    def data_format(self) -> str | None:
        """``AIP_DATA_FORMAT`` (csv, jsonl, tf-record) when the data is Vertex's managed
        dataset (``AIP_TRAINING_DATA_URI``); files named by ``--train-files`` say their own."""
        return None if self.train_files else self.vertex.data_format

    @property
    def in_tuning_trial(self) -> bool:
        """A tuning-service trial: only then is the hypertune metric file written."""
        return bool(self.vertex.trial_id)

    def dirs(self) -> Dirs:
        """Output locations from ``--job-dir`` or Vertex's ``AIP_*`` variables."""
        v = self.vertex
        if self.job_dir:
            base = self.job_dir.rstrip("/")
            if v.trial_id:
                base = storage.join(base, v.trial_id)
            model_dir, at_root = base, False
            checkpoints, logs = storage.join(base, "checkpoints"), storage.join(base, "logs")
        elif v.model_dir:
            model_dir, at_root = v.model_dir.rstrip("/"), True
            parent = model_dir.rsplit("/", 1)[0] if "/" in model_dir else model_dir
            checkpoints, logs = storage.join(parent, "checkpoints"), storage.join(parent, "logs")
        else:
            raise UsageError(
                "no output location: pass --job-dir gs://BUCKET/PATH (or a local directory), "
                "or run as a Vertex AI custom job with a base output directory "
                "(sets AIP_MODEL_DIR)"
            )
        dirs = Dirs(
            model_dir,
            (v.checkpoint_dir or checkpoints).rstrip("/"),
            (v.tensorboard_dir or logs).rstrip("/"),
            at_root,
        )
        for d in (dirs.model_dir, dirs.checkpoint_dir, dirs.tensorboard_dir):
            storage.validate(d)
        return dirs

    def check(self) -> None:
        """Raise :class:`UsageError` naming the flag for values no run can use."""
        if self.epochs < 1 or self.batch_size < 1:
            raise UsageError("--epochs and --batch-size must be at least 1")
        if not 0 <= self.dropout < 1:
            raise UsageError("--dropout must be in [0, 1)")
        if self.learning_rate <= 0:
            raise UsageError("--learning-rate must be positive")
        if self.max_trials < 1:
            raise UsageError("--max-trials must be at least 1")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise UsageError("--early-stopping-patience must be at least 1")
        parse_hidden_units(self.hidden_units)
        fmt = self.data_format
        if fmt and fmt not in DATA_FORMATS:
            if fmt == "bigquery":
                raise UsageError(
                    "AIP_DATA_FORMAT=bigquery: reading a BigQuery managed dataset is not "
                    "supported; export it to Cloud Storage as CSV or JSONL and use that dataset "
                    "(or pass --train-files)"
                )
            raise UsageError(
                f"AIP_DATA_FORMAT={fmt!r} is not one of {', '.join(DATA_FORMATS)}; "
                "pass --train-files instead"
            )


def _add(parser, flag: str, *aliases: str, **kwargs) -> None:
    """Add ``--a-b`` and its ``--a_b`` spelling (tuning services pass parameter ids as flags)."""
    names = [flag, *aliases]
    if "-" in flag[2:]:
        names.append("--" + flag[2:].replace("-", "_"))
    parser.add_argument(*names, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m trainer.task`` command line; defaults come from :class:`TrainerOptions`."""
    d = TrainerOptions()
    p = argparse.ArgumentParser(
        prog="python -m trainer.task",
        description=DESCRIPTION,
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
        "inferred from the CSV / JSON-lines columns (written into the export)",
    )
    _add(
        where,
        "--target-column",
        "--label",
        help="the column to predict when the schema is inferred "
        "(default: a column named label or target)",
    )
    _add(where, "--scratch-dir", help="local working directory (default: a temporary one)")
    hp = p.add_argument_group("hyperparameters")
    _add(hp, "--learning-rate", type=float, default=d.learning_rate, help="default: %(default)s")
    _add(
        hp,
        "--batch-size",
        type=int,
        default=d.batch_size,
        help="global batch size (default: %(default)s)",
    )
    hp.add_argument("--epochs", type=int, default=d.epochs, help="default: %(default)s")
    _add(
        hp,
        "--hidden-units",
        default=d.hidden_units,
        help="dense layer sizes, e.g. 512 or 256,128 (default: %(default)s)",
    )
    hp.add_argument("--dropout", type=float, default=d.dropout, help="default: %(default)s")
    hp.add_argument(
        "--optimizer", choices=list(OPTIMIZERS), default=d.optimizer, help="default: %(default)s"
    )
    model = p.add_argument_group("model")
    model.add_argument(
        "--model", choices=list(MODELS), default=d.model, help="default: %(default)s"
    )
    _add(model, "--model-module", help="a module with build_model(hp, schema) -> keras.Model")
    model.add_argument(
        "--task",
        choices=list(TASKS),
        help="must match the schema's task (default: the schema's)",
    )
    _add(
        model,
        "--skip-bad-records",
        action="store_true",
        help="skip (and count) records that do not match the schema instead of failing",
    )
    model.add_argument("--seed", type=int, help="random seed for repeatable runs")
    training = p.add_argument_group("training")
    _add(
        training,
        "--early-stopping-patience",
        type=int,
        metavar="N",
        help="stop after N epochs without improvement of the objective and keep the best "
        "weights (default: train every epoch)",
    )
    _add(
        training,
        "--class-weight",
        choices=list(CLASS_WEIGHTS),
        help="balanced: weight each class by n_samples / (n_classes * its count)",
    )
    _add(
        training,
        "--mixed-precision",
        action="store_true",
        help="mixed_float16 on a GPU (on a CPU: a warning, and float32)",
    )
    tune = p.add_argument_group("tuning")
    _add(
        tune,
        "--hypertune-metric",
        help="objective reported to the tuning service after "
        "each epoch (default: val_accuracy, or val_loss for regression)",
    )
    tune.add_argument(
        "--tune",
        choices=list(TUNERS),
        help="run a keras-tuner search first, then train the best model",
    )
    _add(
        tune,
        "--max-trials",
        type=int,
        default=d.max_trials,
        help="keras-tuner trials (default: %(default)s)",
    )
    _add(tune, "--tune-objective", help="keras-tuner objective (default: as --hypertune-metric)")
    add_logging_flags(p)
    return p


def from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> TrainerOptions:
    """Checked options from parsed flags and the environment (``os.environ`` by default)."""
    environ = os.environ if environ is None else environ
    values = vars(args)
    opts = TrainerOptions(
        **{f.name: values[f.name] for f in fields(TrainerOptions) if f.name in values},
        vertex=VertexEnv.from_environ(environ, tuning=bool(values.get("tune"))),
    )
    opts.check()
    return opts


def parse(argv: list[str] | None, environ: Mapping[str, str] | None = None) -> TrainerOptions:
    """Parse the command line (``sys.argv`` when None) and read the environment once."""
    return from_args(build_parser().parse_args(argv), environ)
