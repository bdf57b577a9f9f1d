"""A killed trainer resumes from its last uploaded epoch; a torn backup is never used."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import numpy as np
from process_helpers import sigkill_when
from trainer_helpers import (
    REPO,
    child_env,
    epoch_records,
    new_bucket,
    read_text,
    run_task,
    task_cmd,
    write_digits,
)

from jobcommon import storage
from trainer import checkpoints

EPOCHS = 12


def test_sigkill_after_epoch_k_then_rerun_trains_each_remaining_epoch_once(gcs, tmp_path):
    bucket = new_bucket(gcs)
    write_digits(f"{bucket}/digits", num_shards=2)
    args = [
        "--job-dir", f"{bucket}/job",
        "--train-files", f"{bucket}/digits/train-*",
        "--eval-files", f"{bucket}/digits/eval-*",
        "--epochs", str(EPOCHS), "--hidden-units", "64", "--batch-size", "32", "--seed", "1",
    ]  # fmt: skip
    env = child_env(gcs.env(), CLOUD_ML_HP_METRIC_FILE=str(tmp_path / "hp" / "m"))
    latest = f"{bucket}/job/checkpoints/LATEST"
    first = subprocess.Popen(
        task_cmd(*args), env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    sigkill_when(first, lambda: (checkpoints.latest_epoch(f"{bucket}/job/checkpoints") or 0) >= 3)
    assert first.returncode == -signal.SIGKILL, first.stdout.read().decode()[-2000:]
    k = int(storage.read_text(latest))
    assert 3 <= k < EPOCHS
    assert not storage.exists(f"{bucket}/job/keras_export")
    backup = json.loads(storage.read_text(f"{bucket}/job/checkpoints/backup/{k:06d}/history.json"))
    weights_after_k = backup["epochs"][-1]["end_weights"]

    second = run_task(args, env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    logged = [r["epoch"] for r in epoch_records(second.stdout)]
    assert logged == list(range(k + 1, EPOCHS + 1))

    export = json.loads(second.stdout.strip().splitlines()[-1])["export"]
    history = json.loads(storage.read_text(export + "/history.json"))
    assert [r["epoch"] for r in history["epochs"]] == list(range(EPOCHS))
    first_attempt, second_attempt = history["attempts"]
    assert {r["attempt"] for r in history["epochs"][:k]} == {first_attempt["attempt"]}
    assert {r["attempt"] for r in history["epochs"][k:]} == {second_attempt["attempt"]}
    assert second_attempt["initial_epoch"] == k
    assert second_attempt["start_weights"] == weights_after_k
    assert all(np.isfinite(v) for v in history["metrics"]["loss"])

    # A third run of the same command finds the job finished and trains nothing.
    third = run_task(args, env)
    assert third.returncode == 0
    assert not epoch_records(third.stdout)
    assert "already finished" in third.stdout
    assert len(storage.list_dir(f"{bucket}/job/keras_export")) == 1


def test_restore_ignores_a_backup_that_was_not_completed(bucket, tmp_path):
    ckpt = f"{bucket}/ck"
    storage.write_text(f"{ckpt}/backup/000002/training_metadata.json", '{"epoch": 2}')
    storage.write_text(f"{ckpt}/backup/000002/latest.weights.h5", "complete")
    storage.write_text(f"{ckpt}/LATEST", "2\n")
    # Epoch 3's upload was cut short: its files are there but LATEST was never moved.
    storage.write_text(f"{ckpt}/backup/000003/training_metadata.json", '{"epoch": 3}')
    local = str(tmp_path / "backup")
    assert checkpoints.restore(ckpt, local) == 2
    assert json.loads(read_text(os.path.join(local, "training_metadata.json"))) == {"epoch": 2}
    assert read_text(os.path.join(local, "latest.weights.h5")) == "complete"


def test_restore_without_checkpoints_starts_fresh(bucket, tmp_path):
    assert checkpoints.restore(f"{bucket}/nothing", str(tmp_path / "b")) is None
