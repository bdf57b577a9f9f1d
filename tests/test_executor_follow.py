"""``executor status`` and ``executor wait`` on the status file of a real run in GCS."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from executor_helpers import REPO, notebook, run_cli, write

from executor import exitcodes
from jobcommon import storage


def _start_run(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "executor", "run", *args],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _wait_for_state(status_uri: str, state: str, seconds: float = 120) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if storage.exists(status_uri):
            record = json.loads(storage.read_text(status_uri))
            if record["state"] == state:
                return record
        time.sleep(0.3)
    raise AssertionError(f"{status_uri} never reached {state}")


def test_status_and_wait_follow_a_run_to_its_exit_code(bucket, gcs_env, tmp_path):
    nb = notebook("nap = 1.0\n", "import time\ntime.sleep(nap)", "raise RuntimeError('late')")
    storage.upload_file(write(nb, str(tmp_path / "in.ipynb")), f"{bucket}/in.ipynb")
    output = f"{bucket}/out/r1.ipynb"
    run = _start_run([f"{bucket}/in.ipynb", output, "--run-id", "r1", "-p", "nap", "8"], gcs_env)
    try:
        _wait_for_state(output + ".status.json", "RUNNING")
        proc = run_cli(["status", output], gcs_env)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("r1 RUNNING since "), proc.stdout
        # Not final within the timeout: wait's own exit code and a message saying so.
        proc = run_cli(["wait", output, "--timeout", "1", "--interval", "0.2"], gcs_env)
        assert proc.returncode == exitcodes.EXIT_WAIT_TIMED_OUT, proc.stdout + proc.stderr
        assert "still RUNNING after --timeout 1 s" in proc.stdout + proc.stderr
        # Without a timeout it returns when the run ends, with the run's exit code.
        proc = run_cli(["wait", output, "--interval", "0.2"], gcs_env)
        assert "r1 FAILED (exit code 10)" in proc.stdout, proc.stdout + proc.stderr
        run.wait(timeout=60)  # the run's last step was writing that final status
    finally:
        run.kill()
        run.wait()
    assert proc.returncode == exitcodes.EXIT_FAILED, proc.stdout + proc.stderr
    assert run.returncode == exitcodes.EXIT_FAILED
    proc = run_cli(["status", output], gcs_env)
    assert proc.returncode == 0
    assert proc.stdout.startswith("r1 FAILED (exit code 10) after ")
    assert "RuntimeError: late" in proc.stdout
    proc = run_cli(["status", output + ".status.json", "--json"], gcs_env)
    assert json.loads(proc.stdout) == json.loads(storage.read_text(output + ".status.json"))


def test_status_of_a_path_no_run_wrote_is_one_clear_line(bucket, gcs_env):
    proc = run_cli(["status", f"{bucket}/nothing/here.ipynb"], gcs_env)
    assert proc.returncode == 3
    assert "no run has written a status there yet" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli(["wait", f"{bucket}/nothing/here.ipynb", "--timeout", "0.5"], gcs_env)
    assert proc.returncode == exitcodes.EXIT_WAIT_TIMED_OUT
    assert "no status file yet" in proc.stdout + proc.stderr


def test_wait_on_a_finished_run_returns_its_exit_code_at_once(bucket, gcs_env, tmp_path):
    nb = notebook(None, "print('fine')")
    storage.upload_file(write(nb, str(tmp_path / "in.ipynb")), f"{bucket}/in.ipynb")
    output = f"{bucket}/out/ok.ipynb"
    assert run_cli(["run", f"{bucket}/in.ipynb", output], gcs_env).returncode == 0
    proc = run_cli(["wait", output, "--timeout", "5"], gcs_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
