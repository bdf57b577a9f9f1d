"""A Spot VM's preemption: SIGTERM mid-run saves the notebook so far, the status says
PREEMPTED (exit code 15), and running the same run again starts it over and finishes it.

vm-run runs for real (a Jupyter kernel, fake-gcs-server); only the metadata server and the
Compute Engine API are loopback servers speaking their wire format.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from executor_helpers import REPO, notebook, run_cli, write
from test_executor_vm import NAME, PROJECT, ZONE, compute_server, metadata_server

from executor import exitcodes
from jobcommon import storage


def _start_vm_run(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "executor", "vm-run"],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _wait_until(check, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _launched_metadata(bucket: str, env: dict[str, str]) -> tuple[dict[str, str], str]:
    """The instance metadata `launch --spot --run-id r1` puts on the VM, and its output."""
    proc = run_cli(
        ["launch", f"{bucket}/in.ipynb", f"{bucket}/out/{{run_id}}.ipynb", "--spot",
         "--run-id", "r1", "--mirror-interval", "1", "--zone", "us-central1-b",
         "--project", PROJECT, "--image-uri", "us-docker.pkg.dev/p/r/executor:1", "--dry-run"],
        env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    body = json.loads(proc.stdout[proc.stdout.index("{\n") :])["body"]
    assert body["scheduling"]["provisioningModel"] == "SPOT"
    items = {i["key"]: i["value"] for i in body["metadata"]["items"]}
    return items, proc.stdout + proc.stderr


def _printed(nb: dict) -> str:
    """What the notebook's cells printed."""
    return "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))


def _mirrored_step_one(output: str) -> bool:
    return storage.exists(output) and "step one done" in _printed(
        json.loads(storage.read_text(output))
    )


def test_sigterm_on_a_preempted_spot_vm_saves_the_notebook_and_a_rerun_finishes(
    bucket, gcs_env, tmp_path
):
    go = tmp_path / "go"  # absent during the first run: its second cell waits for it
    nb = notebook(
        f"go = {str(go)!r}\n",
        "print('step one done', flush=True)",
        "import os, time\nwhile not os.path.exists(go):\n    time.sleep(0.2)\nprint('step two')",
    )
    storage.upload_file(write(nb, str(tmp_path / "in.ipynb")), f"{bucket}/in.ipynb")
    output = f"{bucket}/out/r1.ipynb"
    attributes, _ = _launched_metadata(bucket, gcs_env)
    assert attributes["output_notebook_path"] == output and attributes["run_id"] == "r1"
    watch = [output, output[: -len(".ipynb")] + ".html", output + ".status.json"]
    with metadata_server(attributes) as md, compute_server(watch) as compute:
        env = dict(gcs_env, GCE_METADATA_HOST=md.host, COMPUTE_API_ENDPOINT=compute.url)
        proc = _start_vm_run(env)
        try:
            _wait_until(lambda: _mirrored_step_one(output), 120, "the first cell's output")
            # Compute Engine's preemption notice: the flag, then an ACPI shutdown, which
            # docker turns into SIGTERM for the container's process.
            md.values["instance/preempted"] = "TRUE"
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=60)
            took = time.monotonic() - sent
        finally:
            proc.kill()
        assert proc.returncode == exitcodes.EXIT_PREEMPTED, out[-3000:]
        assert took < 25, f"{took:.1f} s: more than the container's stop timeout"
        # Compute Engine deletes a preempted Spot VM itself (instanceTerminationAction).
        assert [r for r in compute.requests if r["method"] == "DELETE"] == []
        status = json.loads(storage.read_text(output + ".status.json"))
        assert status["state"] == "PREEMPTED" and status["exit_code"] == exitcodes.EXIT_PREEMPTED
        assert status["run_id"] == "r1" and status["error"]["name"] == "Preempted"
        saved = json.loads(storage.read_text(output))
        assert _printed(saved) == "step one done\n"
        assert "PREEMPTED" in "".join(saved["cells"][0]["source"])  # the banner on top
        assert storage.exists(output[: -len(".ipynb")] + ".html")

        # Launching the same run id again puts the same run on the new VM, and says so.
        again, said = _launched_metadata(bucket, gcs_env)
        assert again == attributes
        assert "starting run r1 again; it was r1 PREEMPTED (exit code 15)" in said
        # That VM is not preempted: the run starts over and finishes.
        md.values["instance/preempted"] = "FALSE"
        go.write_text("")
        rerun = subprocess.run(
            [sys.executable, "-m", "executor", "vm-run"],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
        deletes = [r for r in compute.requests if r["method"] == "DELETE"]
        assert [d["path"] for d in deletes] == [
            f"/compute/v1/projects/{PROJECT}/zones/{ZONE}/instances/{NAME}"
        ]
    status = json.loads(storage.read_text(output + ".status.json"))
    assert status["state"] == "SUCCEEDED" and status["run_id"] == "r1"
    rerun_nb = json.loads(storage.read_text(output))
    assert _printed(rerun_nb) == "step one done\nstep two\n"
    assert "PREEMPTED" not in json.dumps(rerun_nb["cells"])


def test_sigterm_without_preemption_is_not_reported_as_preempted(bucket, gcs_env, tmp_path):
    nb = notebook(None, "print('step one done', flush=True)", "import time\ntime.sleep(300)")
    storage.upload_file(write(nb, str(tmp_path / "in.ipynb")), f"{bucket}/in.ipynb")
    output = f"{bucket}/out/stopped.ipynb"
    attributes = {
        "input_notebook_path": f"{bucket}/in.ipynb",
        "output_notebook_path": output,
        "mirror_interval": "1",
    }
    with metadata_server(attributes) as md, compute_server([output]) as compute:
        env = dict(gcs_env, GCE_METADATA_HOST=md.host, COMPUTE_API_ENDPOINT=compute.url)
        proc = _start_vm_run(env)
        try:
            _wait_until(lambda: _mirrored_step_one(output), 120, "the first cell's output")
            proc.send_signal(signal.SIGTERM)  # e.g. an operator's `docker stop`
            out, _ = proc.communicate(timeout=60)
        finally:
            proc.kill()
    status = json.loads(storage.read_text(output + ".status.json"))
    assert status["state"] != "PREEMPTED"
    assert proc.returncode == status["exit_code"] != exitcodes.EXIT_PREEMPTED, out[-3000:]
    assert _printed(json.loads(storage.read_text(output))) == "step one done\n"
