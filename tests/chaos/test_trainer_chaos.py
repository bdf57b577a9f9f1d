"""The trainer under GCS faults: staging, checkpoints and export survive a fifth of requests
failing; a kill in the middle of a checkpoint upload resumes from the last complete one."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from chaos_helpers import RATE, SEEDS
from faultproxy import DOWNLOADS, TRANSIENT, UPLOADS, Rule
from trainer_helpers import REPO, child_env, digits, epoch_records, task_cmd

from jobcommon import exports, storage
from trainer import checkpoints

TRAIN_FLAGS = [
    "--hidden-units", "32", "--batch-size", "64", "--learning-rate", "0.01", "--seed", "1"
]  # fmt: skip


def _train_args(bucket: str, job: str, epochs: int) -> list[str]:
    return [
        "--job-dir", f"{bucket}/{job}",
        "--train-files", f"{bucket}/digits/train-*",
        "--eval-files", f"{bucket}/digits/eval-*",
        "--epochs", str(epochs), *TRAIN_FLAGS,
    ]  # fmt: skip


def _env(gcs, tmp_path) -> dict[str, str]:
    return child_env(gcs.env(), CLOUD_ML_HP_METRIC_FILE=str(tmp_path / "hp" / "metrics"))


@pytest.fixture(scope="module")
def digits_bucket(chaos_gcs, tmp_path_factory):
    """Digits converted by the real CLI while a fifth of its requests fail."""
    # The first two uploads always fail, so the conversion meets faults with any seed.
    first_uploads = Rule(rate=1.0, faults=TRANSIENT, method="POST|PUT", path=UPLOADS, limit=2)
    chaos_gcs.proxy.configure([first_uploads, Rule(rate=RATE, faults=TRANSIENT)], seed=SEEDS[0])
    bucket = chaos_gcs.new_bucket("trainer-chaos-data")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer.convert",
            "--input",
            "sklearn:digits",
            "--output-dir",
            f"{bucket}/digits",
            "--feature-name",
            "pixels",
            "--num-shards",
            "2",
        ],  # fmt: skip
        env=child_env(chaos_gcs.env()),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    faults = chaos_gcs.proxy.faults
    chaos_gcs.proxy.configure([])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    counts = json.loads(proc.stdout.strip().splitlines()[-1])["counts"]
    assert sum(counts.values()) == 1797, counts
    assert faults >= 1
    return bucket


def _load_and_score(export: str, tmp_path) -> float:
    """Download an export, load it with TensorFlow and return its accuracy on digits."""
    import tensorflow as tf

    local = str(tmp_path / "export")
    storage.copy_tree(export, local)
    loaded = tf.saved_model.load(local)
    x, y = digits()
    out = loaded.signatures["serving_default"](pixels=tf.constant(x))
    probabilities = out["probabilities"].numpy()
    assert probabilities.shape == (len(x), 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)
    return float((out["class_id"].numpy() == y).mean())


@pytest.mark.parametrize("seed", SEEDS)
def test_training_finishes_and_exports_under_a_fifth_of_requests_failing(
    faulty_gcs, digits_bucket, tmp_path, seed
):
    # The first three downloads and uploads always fail, so every seed hits staging and
    # uploads however the random draws fall; then a fifth of all requests.
    gcs = faulty_gcs(
        [
            Rule(rate=1.0, faults=TRANSIENT, method="GET", path=DOWNLOADS, limit=3),
            Rule(rate=1.0, faults=TRANSIENT, method="POST|PUT", path=UPLOADS, limit=3),
            Rule(rate=RATE, faults=TRANSIENT),
        ],
        seed,
    )
    job = f"job-faults-{seed}"
    proc = subprocess.run(
        task_cmd(*_train_args(digits_bucket, job, epochs=2)),
        env=_env(gcs, tmp_path),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    counts = dict(gcs.proxy.counts)
    # The faults hit every phase: data staging (reads), checkpoint and export uploads.
    faulted = [(m, p) for m, p, f in gcs.proxy.log if f]
    gcs.proxy.configure([])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (
        counts.get("requests", 0) > 30
        and sum(counts.get(k, 0) for k in TRANSIENT) >= 0.1 * counts["requests"]
    ), counts
    assert any(m == "GET" for m, _ in faulted) and any(m in ("POST", "PUT") for m, _ in faulted)
    printed = json.loads(proc.stdout.strip().splitlines()[-1])["export"]
    with gcs.direct():
        assert exports.latest_export(f"{digits_bucket}/{job}/keras_export") == printed
        assert storage.exists(storage.join(printed, exports.EXPORT_MARKER))
        assert checkpoints.latest_epoch(f"{digits_bucket}/{job}/checkpoints") == 2
        assert checkpoints.read_done(f"{digits_bucket}/{job}/checkpoints")["export"] == printed
        history = json.loads(storage.read_text(printed + "/history.json"))
        assert [r["epoch"] for r in history["epochs"]] == [0, 1]
        assert _load_and_score(printed, tmp_path) > 0.5


def test_sigkill_during_a_checkpoint_upload_resumes_from_the_last_complete_one(
    faulty_gcs, digits_bucket, tmp_path
):
    seed = SEEDS[0]
    epochs, kill_at = 5, 3
    gcs = faulty_gcs([Rule(rate=RATE, faults=TRANSIENT)], seed)
    args = _train_args(digits_bucket, "job-killed", epochs)
    env = _env(gcs, tmp_path)
    marker = f"backup/{kill_at:06d}/".encode()
    marker_quoted = f"backup%2F{kill_at:06d}%2F".encode()
    proc: list[subprocess.Popen] = []
    killed = threading.Event()

    def kill_in_upload(method: str, path: str, body: bytes) -> bool:
        # The first upload request of the backup after epoch `kill_at`: SIGKILL the trainer
        # while that checkpoint is only partly uploaded, and drop the request.
        if method == "POST" and (marker in body[:4096] or marker_quoted in path.encode()):
            if not killed.is_set() and proc:
                killed.set()
                proc[0].send_signal(signal.SIGKILL)
            return True
        return killed.is_set()

    gcs.proxy.on_request = kill_in_upload
    proc.append(
        subprocess.Popen(
            task_cmd(*args), env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
    )
    try:
        out, _ = proc[0].communicate(timeout=300)
    finally:
        if proc[0].poll() is None:
            proc[0].kill()
            proc[0].wait()
    assert killed.is_set() and proc[0].returncode == -signal.SIGKILL, out.decode()[-3000:]
    gcs.proxy.on_request = None
    ckpt = f"{digits_bucket}/job-killed/checkpoints"
    with gcs.direct():
        assert checkpoints.latest_epoch(ckpt) == kill_at - 1
        complete = storage.list_files(f"{ckpt}/backup/{kill_at - 1:06d}")
        torn = storage.list_files(f"{ckpt}/backup/{kill_at:06d}")
        assert len(torn) < len(complete), (torn, complete)
        assert not storage.exists(f"{digits_bucket}/job-killed/keras_export")
        saved = json.loads(storage.read_text(f"{ckpt}/backup/{kill_at - 1:06d}/history.json"))
    weights_at_resume = saved["epochs"][-1]["end_weights"]

    started = time.monotonic()
    second = subprocess.run(
        task_cmd(*args), env=env, cwd=REPO, capture_output=True, text=True, timeout=400
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert time.monotonic() - started < 300
    assert [r["epoch"] for r in epoch_records(second.stdout)] == list(range(kill_at, epochs + 1))
    printed = json.loads(second.stdout.strip().splitlines()[-1])["export"]
    with gcs.direct():
        assert exports.latest_export(f"{digits_bucket}/job-killed/keras_export") == printed
        history = json.loads(storage.read_text(printed + "/history.json"))
        assert [r["epoch"] for r in history["epochs"]] == list(range(epochs))
        first, resumed = history["attempts"]
        assert resumed["initial_epoch"] == kill_at - 1
        assert resumed["start_weights"] == weights_at_resume
        assert _load_and_score(printed, tmp_path) > 0.5
    assert gcs.proxy.faults >= 1
