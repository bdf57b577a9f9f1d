"""The batch job's model in a process of its own: the job process never imports TensorFlow,
the model's process ends with the job, and a model process that dies fails the job with a
clear error instead of hanging it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from batch import batches, model_process
from batch.model import ModelLoadError
from tests.batch_helpers import (
    N,
    example_bytes,
    json_line,
    read_stats,
    repo_root,
    trained_fixture,  # noqa: F401  (the session's trained model)
    write_lines,
)

JOB = """
import json, sys
from batch import predict, model_process
code = predict.main(sys.argv[1:])
children = [p._process.pid for p in model_process._shared.values()]
print(json.dumps({"code": code, "tensorflow": "tensorflow" in sys.modules,
                  "keras": "keras" in sys.modules, "children": children}))
sys.stdout.flush()
predict.exit_now(code)
"""


def _gone(pid: int, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # our own child (a zombie until reaped)
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass
        time.sleep(0.1)
    return False


def test_the_job_process_runs_without_tensorflow_and_its_model_ends_with_it(
    trained, bucket, gcs_env, tmp_path
):
    lines = [json_line({"pixels": r.tolist()}) for r in trained["x"]]
    write_lines(f"{bucket}/in/part-0.jsonl", lines)
    # A user's script without a __main__ guard: the model's process must not run it again.
    script = tmp_path / "job.py"
    script.write_text(JOB)
    cmd = [
        sys.executable, str(script),
        "--input-paths", f"{bucket}/in/*.jsonl", "--data-format", "JSON",
        "--output-path", f"{bucket}/out", "--model-dir", trained["model_dir"],
    ]  # fmt: skip
    env = gcs_env | {"PYTHONPATH": repo_root(), "LOG_FORMAT": "json"}
    proc = subprocess.run(cmd, env=env, cwd=repo_root(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    # TensorFlow (1.5 s to import) and Keras stay out of the process that runs Beam.
    assert report == {
        "code": 0,
        "tensorflow": False,
        "keras": False,
        "children": report["children"],
    }
    assert read_stats(f"{bucket}/out")["predictions"] == N
    (child,) = report["children"]
    assert _gone(child), "the model's process outlived its job"


def test_a_model_that_cannot_load_fails_with_the_loaders_message(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"not a SavedModel")
    process = model_process.ModelProcess(str(tmp_path), ("serving_default",), threads=1)
    with pytest.raises(ModelLoadError, match="cannot load the SavedModel at"):
        _ = process.info
    assert _gone(process._process.pid)
    assert not process.alive()


def test_a_model_process_that_dies_fails_its_batches_instead_of_hanging(trained):
    process = model_process.ModelProcess(trained["export"], ("serving_tf_example",), threads=2)
    name = next(iter(process.info.input_specs))
    batch, _ = batches.decode_example_batch(
        [example_bytes(r) for r in trained["x"][:8]], name, None
    )
    outputs, _, _ = process.submit(batch.tensors, len(batch)).result(timeout=60)
    assert len(outputs["class_id"]) == 8  # each output's rows as JSON text
    os.kill(process._process.pid, signal.SIGKILL)
    with pytest.raises(model_process.ModelProcessError, match="exit code -9"):
        # Sent before the death was noticed, or refused after: either way an error, soon.
        process.submit(batch.tensors, len(batch)).result(timeout=60)
    assert not process.alive()
    # The next user of the shared process gets a new one, not the dead one.
    model_process._shared[(trained["export"], "serving_tf_example")] = process
    fresh = model_process.shared(trained["export"], ("serving_tf_example",))
    assert fresh is not process and fresh.alive()
    fresh.close()
    assert _gone(fresh._process.pid)
