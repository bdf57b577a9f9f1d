"""The Vertex AI contract at the edges: output checks first, quiet start-up, AIP_MODEL_DIR."""

from __future__ import annotations

import json
import os

from trainer_helpers import (  # noqa: F401 (a fixture)
    child_env,
    log_records,
    new_bucket,
    restore_logging,
    run_task,
    write_digits,
)

from jobcommon import exports, storage
from jobcommon.errors import NotFoundError
from trainer import options, task


def test_a_missing_output_bucket_is_reported_before_any_data_is_read(gcs):
    bucket = new_bucket(gcs)
    # The data does not exist either: the output location must be what the run reports.
    args = ["--job-dir", "gs://no-such-bucket-4a1f/job", "--train-files", f"{bucket}/none-*"]
    proc = run_task(args, child_env(gcs.env()), timeout=120)
    assert proc.returncode == NotFoundError.exit_code, proc.stdout[-2000:] + proc.stderr[-2000:]
    (error,) = [r for r in log_records(proc.stdout) if r.get("severity") == "ERROR"]
    assert "no-such-bucket-4a1f" in error["message"] and "none-*" not in error["message"]
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_cpu_only_run_writes_nothing_to_stderr(gcs, tmp_path):
    bucket = new_bucket(gcs)
    write_digits(f"{bucket}/digits", num_shards=1)
    args = ["--job-dir", f"{bucket}/job", "--train-files", f"{bucket}/digits/train-*",
            "--epochs", "1", "--hidden-units", "16"]  # fmt: skip
    proc = run_task(args, child_env(gcs.env()))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    # Cloud Logging shows every stderr line as ERROR: TensorFlow's cuInit / CUDA-stub
    # lines on a machine without a GPU must not land there.
    assert "cuInit" not in proc.stderr and "E0000" not in proc.stderr
    assert proc.stderr.strip() == ""
    assert not [r for r in log_records(proc.stdout) if r.get("severity") == "ERROR"]


def test_vertex_trial_exports_at_the_model_dir_root_and_keeps_tuner_state_out(gcs, tmp_path):
    bucket = new_bucket(gcs)
    write_digits(f"{bucket}/data", num_shards=1)
    base = f"{bucket}/runs/1/3"  # Vertex: <base output dir>/<trial id>/...
    env = {
        "AIP_MODEL_DIR": f"{base}/model/",
        "AIP_CHECKPOINT_DIR": f"{base}/checkpoints/",
        "AIP_TENSORBOARD_LOG_DIR": f"{base}/logs/",
        "AIP_TRAINING_DATA_URI": f"{bucket}/data/train-*",
        "AIP_VALIDATION_DATA_URI": f"{bucket}/data/eval-*",
        "AIP_DATA_FORMAT": "tf-record",
        "CLOUD_ML_TRIAL_ID": "3",
        "CLOUD_ML_HP_METRIC_FILE": str(tmp_path / "hp" / "output.metrics"),
    }
    argv = ["--epochs", "1", "--tune", "random", "--max-trials", "1", "--seed", "0"]
    result = task.run(options.parse(argv, environ=env))
    assert result.export_path == f"{base}/model"
    assert exports.latest_export(f"{base}/model") == f"{base}/model"
    names = {os.path.relpath(f, f"{base}/model") for f in storage.list_files(f"{base}/model")}
    assert {"saved_model.pb", "model.keras", "schema.json", exports.EXPORT_MARKER} <= names
    assert not [n for n in names if "tuner" in n or "trial" in n]
    assert storage.exists(f"{base}/checkpoints/tuner/best_hyperparameters.json")
    assert storage.glob(f"{base}/checkpoints/tuner/search/trial_*/trial.json")
    # A trial reports its metric to the tuning service.
    line = json.loads((tmp_path / "hp" / "output.metrics").read_text().splitlines()[-1])
    assert line["trial"] == "3" and "val_accuracy" in line
