"""``python -m executor run`` end to end: real kernels, fake-gcs-server, gs:// in and out."""

from __future__ import annotations

import json
import math

import nbformat
import pytest
from executor_helpers import (
    CountingGCSProxy,
    notebook,
    run_cli,
    sleepy_notebook,
    train_notebook,
    write,
)

from executor import exitcodes
from jobcommon import storage


def _upload(nb, uri: str, tmp_path) -> str:
    local = write(nb, str(tmp_path / uri.rsplit("/", 1)[-1]))
    storage.upload_file(local, uri)
    return uri


def _status(output: str) -> dict:
    return json.loads(storage.read_text(output + ".status.json"))


def _output_nb(output: str, tmp_path):
    local = str(tmp_path / "downloaded.ipynb")
    storage.download_file(output, local)
    return nbformat.read(local, as_version=4)


def test_gs_to_gs_run_merges_every_parameter_source_and_keeps_cell_types(bucket, gcs_env, tmp_path):
    nb_uri = _upload(train_notebook(), f"{bucket}/nb/train.ipynb", tmp_path)
    storage.write_text(f"{bucket}/params/base.yaml", "epochs: 20\nname: fromfile\nlr: 0.3\n")
    storage.write_text(f"{bucket}/params/chapter.yaml", "lr: 2\n")
    gcs_env["LOG_FORMAT"] = "text"
    proc = run_cli(
        [
            "run", nb_uri, f"{bucket}/out/{{run_id}}/result.ipynb", "--run-id", "r42",
            "-f", f"{bucket}/params/base.yaml",
            "-y", f"{bucket}/params/chapter.yaml",  # the chapter's `-y params.yaml`
            "-y", "use_gpu: true",
            "-p", "epochs", "40",
        ],
        gcs_env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "looks like a file name" in proc.stderr
    output = f"{bucket}/out/r42/result.ipynb"
    status = _status(output)
    assert status["state"] == "SUCCEEDED" and status["exit_code"] == 0
    # -p beats -f; the -y file beats -f; lr "2" from YAML keeps the cell's float type.
    assert status["parameters"] == {"epochs": 40, "name": "fromfile", "lr": 2.0, "use_gpu": True}
    assert status["glued"]["types"] == ["int", "float", "str", "bool"]
    assert status["glued"]["accuracy"] == 0.99 and status["glued"]["epochs_seen"] == 40
    assert status["duration_seconds"] > 0 and status["ended_at"] > status["started_at"]
    assert status["executor_version"] and status["papermill_version"] == "2.7.0"
    html = storage.read_text(f"{bucket}/out/r42/result.html")
    assert "<html" in html and "fromfile" in html
    import scrapbook as sb  # imports gcsfs: only after the storage layer has set it up

    local = str(tmp_path / "result.ipynb")
    storage.download_file(output, local)
    assert sb.read_notebook(local).scraps["accuracy"].data == 0.99


def test_failing_cell_is_failed_with_the_cell_and_error_and_uploaded(bucket, gcs_env, tmp_path):
    nb = notebook(
        "x = 1\n",
        "import os\nprint('cwd', os.getcwd())",
        "raise ValueError(f'bad value {x}')",
        "y = 2",
    )
    nb_uri = _upload(nb, f"{bucket}/fail.ipynb", tmp_path)
    output = f"{bucket}/out/fail.ipynb"
    proc = run_cli(["run", nb_uri, output, "-p", "x", "7", "--cwd", str(tmp_path)], gcs_env)
    assert proc.returncode == exitcodes.EXIT_FAILED, proc.stderr
    status = _status(output)
    assert status["state"] == "FAILED"
    assert status["error"] == {"name": "ValueError", "message": "bad value 7"}
    out = _output_nb(output, tmp_path)
    failed = out.cells[status["failed_cell"]["index"] - 1]
    assert "raise ValueError" in "".join(failed.source)
    assert failed.outputs[0]["ename"] == "ValueError"
    assert out.cells[-1].get("execution_count") is None  # the cell after it never ran
    cwd_cell = next(c for c in out.cells if "getcwd" in "".join(c.source))
    assert cwd_cell.outputs[0]["text"] == f"cwd {tmp_path}\n"  # --cwd
    assert storage.exists(f"{bucket}/out/fail.html")


def test_cell_past_execution_timeout_is_timed_out(bucket, gcs_env, tmp_path):
    nb = notebook(None, "import time\nprint('started')", "time.sleep(60)", "after = 1")
    nb_uri = _upload(nb, f"{bucket}/slow.ipynb", tmp_path)
    output = f"{bucket}/out/slow.ipynb"
    proc = run_cli(["run", nb_uri, output, "--execution-timeout", "2"], gcs_env)
    assert proc.returncode == exitcodes.EXIT_TIMED_OUT, proc.stderr
    status = _status(output)
    assert status["state"] == "TIMED_OUT" and status["timeout"] == {"kind": "cell", "seconds": 2}
    assert status["duration_seconds"] < 40
    out = _output_nb(output, tmp_path)
    stopped = out.cells[status["failed_cell"]["index"] - 1]
    assert "time.sleep(60)" in "".join(stopped.source)
    assert "TIMED_OUT" in "".join(out.cells[0].source)  # the banner pointing at it
    # The banner and the status count cells the same way, from 1 as a reader does.
    assert f"at cell {status['failed_cell']['index']}:" in "".join(out.cells[0].source)


def test_run_past_job_timeout_is_stopped_where_it_was(bucket, gcs_env, tmp_path):
    nb = notebook(None, "print('first cell done')", "import time\ntime.sleep(120)", "after = 1")
    nb_uri = _upload(nb, f"{bucket}/long.ipynb", tmp_path)
    output = f"{bucket}/out/long.ipynb"
    proc = run_cli(["run", nb_uri, output, "--job-timeout", "6"], gcs_env)
    assert proc.returncode == exitcodes.EXIT_TIMED_OUT, proc.stderr
    status = _status(output)
    assert status["state"] == "TIMED_OUT" and status["timeout"] == {"kind": "job", "seconds": 6}
    assert status["error"]["name"] == "JobTimeout"
    assert 6 <= status["duration_seconds"] < 40
    out = _output_nb(output, tmp_path)
    stopped = out.cells[status["failed_cell"]["index"] - 1]
    assert "time.sleep(120)" in "".join(stopped.source)
    first = next(c for c in out.cells if "first cell done" in "".join(c.source))
    assert first.metadata.papermill.status == "completed"
    assert "first cell done" in first.outputs[0]["text"]


def test_dead_kernel_is_kernel_died(bucket, gcs_env, tmp_path):
    nb = notebook(None, "print('alive')", "import os\nos._exit(1)", "after = 1")
    nb_uri = _upload(nb, f"{bucket}/die.ipynb", tmp_path)
    output = f"{bucket}/out/die.ipynb"
    proc = run_cli(["run", nb_uri, output], gcs_env)
    assert proc.returncode == exitcodes.EXIT_KERNEL_DIED, proc.stderr
    status = _status(output)
    assert status["state"] == "KERNEL_DIED"
    out = _output_nb(output, tmp_path)
    assert "os._exit(1)" in "".join(out.cells[status["failed_cell"]["index"] - 1].source)
    assert "KERNEL_DIED" in "".join(out.cells[0].source)
    assert f"at cell {status['failed_cell']['index']}:" in "".join(out.cells[0].source)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "epoch", "3", "-p", "lrr", "1"], "unknown parameters ['epoch', 'lrr']"),
        (["-p", "epochs", "abc"], "epochs='abc' (-p) must be an int"),
        (["-p", "epochs", "2.5"], "must be an int"),
        (["-y", "[1, 2]"], "must be a YAML mapping"),
        (["-y", "!!python/object/apply:os.system ['true']"], "not valid YAML"),
    ],
)
def test_bad_parameters_are_usage_errors_naming_them(bucket, gcs_env, tmp_path, args, message):
    nb_uri = _upload(train_notebook(), f"{bucket}/train.ipynb", tmp_path)
    output = f"{bucket}/out/x.ipynb"
    proc = run_cli(["run", nb_uri, output, *args], gcs_env)
    assert proc.returncode == exitcodes.EXIT_USAGE
    assert message in proc.stdout + proc.stderr
    assert not storage.exists(output)


def test_output_template_cannot_escape_its_prefix(bucket, gcs_env, tmp_path):
    nb_uri = _upload(train_notebook(), f"{bucket}/train.ipynb", tmp_path)
    proc = run_cli(["run", nb_uri, f"{bucket}/out/{{name}}/r.ipynb", "-p", "name", ".."], gcs_env)
    assert proc.returncode == exitcodes.EXIT_USAGE
    assert "contains '..'" in proc.stdout + proc.stderr


def test_missing_input_names_it(bucket, gcs_env):
    proc = run_cli(["run", f"{bucket}/nope.ipynb", f"{bucket}/o.ipynb"], gcs_env)
    assert proc.returncode == 3
    assert f"{bucket}/nope.ipynb" in proc.stdout + proc.stderr


def test_gcs_writes_to_the_output_are_bounded_unlike_plain_papermill(gcs, bucket, tmp_path):
    nb_uri = _upload(sleepy_notebook(50, 0.05), f"{bucket}/sleepy.ipynb", tmp_path)
    interval = 2
    with CountingGCSProxy(gcs.endpoint) as proxy:
        env = gcs.env()
        env["STORAGE_EMULATOR_HOST"] = proxy.url
        ours = f"{bucket}/out/ours.ipynb"
        proc = run_cli(["run", nb_uri, ours, "--mirror-interval", str(interval)], env)
        assert proc.returncode == 0, proc.stderr
        duration = _status(ours)["duration_seconds"]
        our_writes = proxy.uploads["out/ours.ipynb"]
        plain = f"{bucket}/out/plain.ipynb"
        env["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
        import subprocess
        import sys

        subprocess.run(
            [sys.executable, "-m", "papermill", "-k", "python3", nb_uri, plain],
            env=env, check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        plain_writes = proxy.uploads["out/plain.ipynb"]
    # Mirrored while running (not only at the end), yet bounded by the interval.
    assert 2 <= our_writes <= math.ceil(duration / interval) + 3, (our_writes, duration)
    assert plain_writes >= 100, plain_writes


def test_final_upload_that_keeps_failing_gives_its_own_exit_code(gcs, bucket, tmp_path):
    nb_uri = _upload(notebook(None, "x = 1"), f"{bucket}/ok.ipynb", tmp_path)
    output = f"{bucket}/out/refused.ipynb"
    with CountingGCSProxy(gcs.endpoint, refuse={"out/refused.ipynb"}) as proxy:
        env = gcs.env()
        env["STORAGE_EMULATOR_HOST"] = proxy.url
        env["LOG_FORMAT"] = "json"
        proc = run_cli(["run", nb_uri, output, "--upload-deadline", "3"], env)
    assert proc.returncode == exitcodes.EXIT_UPLOAD_FAILED, proc.stdout[-2000:]
    assert "could not be uploaded" in proc.stdout
    assert proxy.uploads["out/refused.ipynb"] >= 2  # retried until the deadline
    status = _status(output)
    assert status["state"] == "SUCCEEDED" and status["exit_code"] == exitcodes.EXIT_UPLOAD_FAILED
    assert not storage.exists(output)


def test_sigterm_stops_the_kernel_and_still_uploads_what_ran(bucket, gcs_env, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    nb = notebook(None, "print('step one')", "import time\ntime.sleep(120)", "after = 1")
    nb_uri = _upload(nb, f"{bucket}/stop.ipynb", tmp_path)
    output = f"{bucket}/out/stop.ipynb"
    proc = subprocess.Popen(
        [sys.executable, "-m", "executor", "run", nb_uri, output, "--mirror-interval", "1"],
        env=gcs_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until the mirrored notebook shows the sleep
        if storage.exists(output) and "time.sleep(120)" in storage.read_text(output):
            nb_now = nbformat.reads(storage.read_text(output), as_version=4)
            if any(
                c.metadata.get("papermill", {}).get("status") == "running" for c in nb_now.cells
            ):
                break
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    status = _status(output)
    assert status["state"] == "FAILED" and status["error"]["name"] == "Interrupted"
    assert status["exit_code"] == proc.returncode  # the status says what the process exited with
    final = _output_nb(output, tmp_path)
    assert "time.sleep(120)" in "".join(final.cells[status["failed_cell"]["index"] - 1].source)
    assert "step one" in json.dumps(final.cells[status["failed_cell"]["index"] - 2].outputs)
