"""Tuning: tuning-service trials (hypertune file, per-trial outputs) and keras-tuner resume."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
from process_helpers import sigkill_when
from trainer_helpers import (  # noqa: F401 (a fixture)
    REPO,
    child_env,
    new_bucket,
    read_text,
    restore_logging,
    run_task,
    task_cmd,
    write_digits,
)

from jobcommon import exports, storage
from trainer import task


def test_two_tuning_service_trials_report_and_write_under_their_trial_dirs(gcs, tmp_path):
    bucket = new_bucket(gcs)
    write_digits(f"{bucket}/digits", num_shards=2)
    for trial, lr in (("1", "0.001"), ("2", "0.003")):
        env = {"CLOUD_ML_TRIAL_ID": trial, "CLOUD_ML_HP_METRIC_FILE": str(tmp_path / trial)}
        # The service passes parameter ids as flags; underscores are accepted too.
        argv = [
            f"--job_dir={bucket}/hp",
            f"--learning_rate={lr}",
            "--hidden_units=32",
            "--train-files",
            f"{bucket}/digits/train-*",
            "--eval-files",
            f"{bucket}/digits/eval-*",
            "--epochs",
            "3",
            "--seed",
            "0",
        ]
        result = task.run(task.build_parser().parse_args(argv), env=env)
        assert result.export_path.startswith(f"{bucket}/hp/{trial}/keras_export/")

        lines = read_text(tmp_path / trial).splitlines()
        assert len(lines) == 3
        for step, line in enumerate(lines, start=1):
            rec = json.loads(line)
            assert list(rec) == sorted(rec)
            assert set(rec) == {
                "checkpoint_path",
                "global_step",
                "timestamp",
                "trial",
                "val_accuracy",
            }
            assert rec["trial"] == trial and rec["global_step"] == str(step)
            assert isinstance(rec["timestamp"], float) and isinstance(rec["val_accuracy"], str)
            assert rec["checkpoint_path"] == ""
            assert 0 <= float(rec["val_accuracy"]) <= 1
        last = float(json.loads(lines[-1])["val_accuracy"])
        assert abs(last - result.metrics["accuracy"]) < 1e-6
        assert storage.exists(f"{bucket}/hp/{trial}/checkpoints/DONE.json")
        assert storage.glob(f"{bucket}/hp/{trial}/logs/validation/events.*")
        hp = json.loads(storage.read_text(result.export_path + "/hyperparameters.json"))
        assert hp["learning_rate"] == float(lr) and hp["hidden_units"] == [32]


def _completed_trials(search_dir: str) -> dict[str, float]:
    done = {}
    for path in storage.glob(f"{search_dir}/trial_*/trial.json"):
        trial = json.loads(storage.read_text(path))
        if trial["status"] == "COMPLETED":
            done[trial["trial_id"]] = trial["score"]
    return done


def test_keras_tuner_search_resumes_after_a_kill_without_redoing_finished_trials(gcs, tmp_path):
    bucket = new_bucket(gcs)
    write_digits(f"{bucket}/digits", num_shards=2)
    args = [
        "--job-dir",
        f"{bucket}/kt",
        "--train-files",
        f"{bucket}/digits/train-*",
        "--eval-files",
        f"{bucket}/digits/eval-*",
        "--tune",
        "random",
        "--max-trials",
        "3",
        "--epochs",
        "3",
        "--seed",
        "4",
    ]
    env = child_env(gcs.env(), CLOUD_ML_HP_METRIC_FILE=str(tmp_path / "m"))
    search_dir = f"{bucket}/kt/checkpoints/tuner/search"
    first = subprocess.Popen(task_cmd(*args), env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    sigkill_when(
        first, lambda: storage.exists(search_dir) and _completed_trials(search_dir), poll=0.1
    )
    assert first.returncode == -signal.SIGKILL
    done_before = _completed_trials(search_dir)
    assert 1 <= len(done_before) < 3

    second = run_task(args, env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    done_after = _completed_trials(search_dir)
    assert len(done_after) == 3
    # Trials finished before the kill kept their results and were not run again.
    for trial_id, score in done_before.items():
        assert done_after[trial_id] == score
    runs = [
        json.loads(x) for x in storage.read_text(f"{search_dir}/trial_runs.jsonl").split("\n") if x
    ]
    attempts = list(dict.fromkeys(r["attempt"] for r in runs))
    assert len(attempts) == 2
    rerun = {r["trial_id"] for r in runs if r["attempt"] == attempts[1]}
    assert rerun and not rerun & set(done_before)

    best = json.loads(storage.read_text(f"{bucket}/kt/checkpoints/tuner/best_hyperparameters.json"))
    assert best["score"] == max(done_after.values())
    export = exports.latest_export(f"{bucket}/kt/keras_export")
    used = json.loads(storage.read_text(export + "/hyperparameters.json"))
    assert used["learning_rate"] == best["hyperparameters"]["learning_rate"]


@pytest.mark.parametrize("tuner", ["bayesian", "hyperband"])
def test_other_keras_tuner_algorithms_search_and_export(tuner, tmp_path):
    write_digits(str(tmp_path / "d"), num_shards=1)
    argv = [
        "--job-dir",
        str(tmp_path / "job"),
        "--train-files",
        str(tmp_path / "d" / "train-*"),
        "--eval-files",
        str(tmp_path / "d" / "eval-*"),
        "--tune",
        tuner,
        "--max-trials",
        "2",
        "--epochs",
        "2",
        "--seed",
        "0",
    ]
    result = task.run(
        task.build_parser().parse_args(argv), env={"CLOUD_ML_HP_METRIC_FILE": str(tmp_path / "m")}
    )
    best = json.loads(
        read_text(tmp_path / "job" / "checkpoints" / "tuner" / "best_hyperparameters.json")
    )
    assert best["objective"] == "val_accuracy" and best["trials"] >= 2
    assert set(best["hyperparameters"]) >= {"learning_rate", "hidden_units", "dropout"}
    assert result.export_path and result.metrics["eval_records"] == 359
