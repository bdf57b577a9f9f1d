"""Cluster roles from TF_CONFIG / CLUSTER_SPEC, and a real 2-worker run on loopback."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from trainer_helpers import REPO, child_env, epoch_records, new_bucket, task_cmd, write_digits

from jobcommon import storage
from jobcommon.errors import UsageError
from jobcommon.localgcs import free_port
from trainer.vertex_cluster import Cluster, cluster_spec_to_tf_config, keras_tuner_env, process_env

SPEC = {
    "cluster": {
        "workerpool0": ["primary:2222"],
        "workerpool1": ["w0:2222", "w1:2222"],
        "workerpool2": ["ps0:2222"],
    },
    "task": {"type": "workerpool1", "index": 1},
}


def test_cluster_spec_becomes_tf_config():
    assert cluster_spec_to_tf_config(SPEC) == {
        "cluster": {
            "chief": ["primary:2222"],
            "worker": ["w0:2222", "w1:2222"],
            "ps": ["ps0:2222"],
        },
        "task": {"type": "worker", "index": 1},
    }


def test_roles_and_chief():
    env = {"CLUSTER_SPEC": json.dumps(SPEC)}
    worker = Cluster.from_env(env)
    assert (worker.task_type, worker.task_index, worker.num_workers) == ("worker", 1, 3)
    assert not worker.is_chief
    primary = dict(SPEC, task={"type": "workerpool0", "index": 0})
    assert Cluster.from_env({"CLUSTER_SPEC": json.dumps(primary)}).is_chief
    # Without a chief, worker 0 leads; with no config at all the lone process does.
    no_chief = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}
    assert Cluster.from_env({"TF_CONFIG": json.dumps(no_chief)}).is_chief
    alone = Cluster.from_env({})
    assert alone.is_chief and alone.num_workers == 1


def test_bad_cluster_config_is_a_clear_error():
    with pytest.raises(UsageError, match="TF_CONFIG is not valid JSON"):
        Cluster.from_env({"TF_CONFIG": "{not json"})
    with pytest.raises(UsageError, match="CLUSTER_SPEC is not a valid cluster spec"):
        Cluster.from_env({"CLUSTER_SPEC": '{"cluster": {}}'})


def test_keras_tuner_variables_from_cluster_spec():
    env = {"CLUSTER_SPEC": json.dumps(SPEC)}
    assert keras_tuner_env(Cluster.from_env(env)) == {
        "KERASTUNER_TUNER_ID": "tuner-worker-1",
        "KERASTUNER_ORACLE_IP": "primary",
        "KERASTUNER_ORACLE_PORT": "2222",
    }
    primary = {"CLUSTER_SPEC": json.dumps(dict(SPEC, task={"type": "workerpool0", "index": 0}))}
    assert keras_tuner_env(Cluster.from_env(primary))["KERASTUNER_TUNER_ID"] == "chief"
    assert keras_tuner_env(Cluster.from_env({})) == {}


def test_environment_written_for_tensorflow_and_keras_tuner():
    env = {"CLUSTER_SPEC": json.dumps(SPEC)}
    # Only a search sets KERASTUNER_*; TF_CONFIG comes from CLUSTER_SPEC for several workers.
    written = process_env(Cluster.from_env(env), env, tuning=False)
    assert set(written) == {"TF_CONFIG"}
    assert json.loads(written["TF_CONFIG"]) == cluster_spec_to_tf_config(SPEC)
    tuning = process_env(Cluster.from_env(env), env, tuning=True)
    assert tuning["KERASTUNER_TUNER_ID"] == "tuner-worker-1"
    # Variables already set by the platform win; TF_CONFIG given directly is not rewritten.
    preset = dict(env, KERASTUNER_TUNER_ID="tuner-x")
    assert "KERASTUNER_TUNER_ID" not in process_env(Cluster.from_env(preset), preset, True)
    tf_config = {"TF_CONFIG": json.dumps(cluster_spec_to_tf_config(SPEC))}
    assert process_env(Cluster.from_env(tf_config), tf_config, tuning=False) == {}


def test_two_workers_train_together_and_only_the_chief_exports(gcs, tmp_path):
    bucket = new_bucket(gcs)
    write_digits(f"{bucket}/digits", num_shards=4)
    cluster = {"chief": [f"localhost:{free_port()}"], "worker": [f"localhost:{free_port()}"]}
    args = [
        "--job-dir", f"{bucket}/job",
        "--train-files", f"{bucket}/digits/train-*",
        "--eval-files", f"{bucket}/digits/eval-*",
        "--epochs", "3", "--hidden-units", "64", "--seed", "5",
    ]  # fmt: skip
    procs, tmpdirs = {}, {}
    for role in ("chief", "worker"):
        tmpdirs[role] = tmp_path / role
        tmpdirs[role].mkdir()
        tf_config = {"cluster": cluster, "task": {"type": role, "index": 0}}
        env = child_env(
            gcs.env(),
            TF_CONFIG=json.dumps(tf_config),
            TMPDIR=str(tmpdirs[role]),
            CLOUD_ML_TRIAL_ID="1",
            CLOUD_ML_HP_METRIC_FILE=str(tmp_path / role / "hp" / "out.metrics"),
        )
        procs[role] = subprocess.Popen(
            task_cmd(*args), env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
    out = {}
    try:
        for role, proc in procs.items():
            out[role] = proc.communicate(timeout=240)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    for role, proc in procs.items():
        assert proc.returncode == 0, f"{role}: {out[role][0][-2000:]}{out[role][1][-2000:]}"

    chief_epochs = epoch_records(out["chief"][0])
    worker_epochs = epoch_records(out["worker"][0])
    assert [r["epoch"] for r in chief_epochs] == [1, 2, 3]
    # Synchronous training: both replicas see the same (all-reduced) model every epoch.
    assert [r["loss"] for r in chief_epochs] == pytest.approx([r["loss"] for r in worker_epochs])
    assert "MultiWorkerMirroredStrategy over 2 workers" in out["chief"][0]

    # A tuning-service trial: outputs below <job-dir>/<trial>/, the metric file on the chief.
    exports = storage.list_dir(f"{bucket}/job/1/keras_export")
    assert len(exports) == 1
    assert storage.exists(exports[0] + "/saved_model.pb")
    assert "exported the model" in out["chief"][0]
    assert "exported the model" not in out["worker"][0]
    # Only the chief reports to the tuning service; the worker's scratch space is gone.
    assert os.path.exists(tmp_path / "chief" / "hp" / "out.metrics")
    assert not os.path.exists(tmp_path / "worker" / "hp" / "out.metrics")
    assert [p.name for p in tmpdirs["worker"].iterdir()] == []
