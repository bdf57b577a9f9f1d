"""The trainer's options: one parser and check, the environment read once, a light entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from trainer_helpers import REPO, child_env, restore_logging  # noqa: F401 (a fixture)

from jobcommon.errors import UsageError
from trainer import models, options, tuners


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=child_env({}), capture_output=True, text=True
    )


def test_entry_point_and_options_load_no_tensorflow_and_no_cycle():
    code = (
        "import sys, json, trainer.task, trainer.tuning\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'keras_tuner') if m in sys.modules]\n"
        "print(json.dumps(heavy))"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
    # options (flags, defaults, checks) imports neither task nor tuning: no cycle to hide.
    proc = _python(
        "import sys, json, trainer.options\n"
        "print(json.dumps([m for m in ('trainer.task', 'trainer.tuning') if m in sys.modules]))"
    )
    assert json.loads(proc.stdout) == []


def test_help_and_flag_errors_come_back_without_training():
    help_run = subprocess.run(
        [sys.executable, "-m", "trainer.task", "--help"],
        cwd=REPO, env=child_env({}), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert help_run.returncode == 0
    for flag in ("--early-stopping-patience", "--class-weight", "--mixed-precision", "--tune"):
        assert flag in help_run.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "trainer.task", "--job-dir", "/tmp/x", "--dropout", "2"],
        cwd=REPO, env=child_env({}), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == UsageError.exit_code
    assert bad.stderr.strip().splitlines() == ["error: --dropout must be in [0, 1)"]


def test_choices_come_from_the_registries():
    parser = options.build_parser()
    choices = {a.dest: a.choices for a in parser._actions if a.choices}
    assert choices["model"] == list(models.MODELS)
    assert choices["optimizer"] == list(models.OPTIMIZERS)
    assert choices["task"] == list(models.TASKS)
    assert choices["tune"] == list(tuners.TUNERS)


def test_environment_is_read_once_into_the_options():
    env = {
        "AIP_MODEL_DIR": "gs://bkt/base/model/",
        "AIP_CHECKPOINT_DIR": "gs://bkt/base/checkpoints/",
        "AIP_TENSORBOARD_LOG_DIR": "gs://bkt/base/logs/",
        "AIP_TRAINING_DATA_URI": "gs://bkt/data/training-*",
        "AIP_VALIDATION_DATA_URI": "gs://bkt/data/validation-*",
        "AIP_TEST_DATA_URI": "gs://bkt/data/test-*",
        "AIP_DATA_FORMAT": "jsonl",
        "CLOUD_ML_TRIAL_ID": "7",
        "CLOUD_ML_HP_METRIC_FILE": "/tmp/m",
    }
    opts = options.parse([], environ=env)
    assert opts.train_patterns == "gs://bkt/data/training-*"
    assert opts.eval_patterns == "gs://bkt/data/validation-*"
    assert opts.vertex.test_data_uri == "gs://bkt/data/test-*"
    assert opts.vertex.data_format == "jsonl"
    assert opts.in_tuning_trial and opts.vertex.hp_metric_file == "/tmp/m"
    dirs = opts.dirs()
    assert (dirs.model_dir, dirs.checkpoint_dir, dirs.tensorboard_dir) == (
        "gs://bkt/base/model", "gs://bkt/base/checkpoints", "gs://bkt/base/logs",
    )  # fmt: skip
    assert dirs.export_at_root and dirs.tuner_dir == "gs://bkt/base/checkpoints/tuner"
    # Flags win over the environment; --job-dir keeps the keras_export/ layout.
    flagged = options.parse(["--job-dir", "gs://bkt/j", "--train-files", "gs://bkt/t-*"], env)
    assert flagged.train_patterns == "gs://bkt/t-*"
    assert flagged.dirs().model_dir == "gs://bkt/j/7" and not flagged.dirs().export_at_root
    assert not options.parse(["--job-dir", "/j"], environ={}).in_tuning_trial


def test_bigquery_managed_dataset_is_one_clear_line(monkeypatch):
    env = child_env(
        {},
        AIP_DATA_FORMAT="bigquery",
        AIP_TRAINING_DATA_URI="bq://proj.dataset.training",
        AIP_MODEL_DIR="/tmp/never-written/model",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.task"], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == UsageError.exit_code
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "AIP_DATA_FORMAT=bigquery" in err[0] and "not supported" in err[0]
    monkeypatch.setenv("AIP_DATA_FORMAT", "parquet")
    with pytest.raises(UsageError, match="AIP_DATA_FORMAT='parquet' is not one of"):
        options.parse([])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "--epochs and --batch-size must be at least 1"),
        (["--learning-rate", "-1"], "--learning-rate must be positive"),
        (["--max-trials", "0"], "--max-trials must be at least 1"),
        (["--early-stopping-patience", "0"], "--early-stopping-patience must be at least 1"),
        (["--hidden-units", "12,x"], "--hidden-units"),
    ],
)
def test_bad_values_name_the_flag(argv, message):
    with pytest.raises(UsageError, match=message):
        options.parse(["--job-dir", "/tmp/j", *argv], environ={})


def test_data_format_applies_to_vertex_managed_datasets_only():
    env = {"AIP_TRAINING_DATA_URI": "gs://bkt/d/training-*", "AIP_DATA_FORMAT": "tf-record"}
    assert options.parse(["--job-dir", "/j"], env).data_format == "tf-record"
    # Files named on the command line say their own format; a bad variable is then moot.
    flagged = options.parse(["--job-dir", "/j", "--train-files", "/d/x.csv"], dict(env))
    assert flagged.data_format is None
    assert options.parse(["--job-dir", "/j", "--train-files", "/d/x.csv"],
                         {"AIP_DATA_FORMAT": "bigquery"}).data_format is None  # fmt: skip
