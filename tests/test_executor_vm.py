"""``python -m executor vm-run`` against loopback metadata and Compute Engine API servers."""

from __future__ import annotations

import json
import shlex

import pytest
from executor_helpers import Recorder, notebook, run_cli, write

from executor import exitcodes
from jobcommon import storage

PROJECT, ZONE, NAME, TOKEN = "proj-1", "us-central1-b", "notebook-vm-1", "tok-123"


def metadata_server(attributes: dict[str, str]) -> Recorder:
    values = {
        "instance/preempted": "FALSE",
        "instance/name": NAME,
        "instance/zone": f"projects/1234/zones/{ZONE}",
        "project/project-id": PROJECT,
        "instance/service-accounts/default/token": json.dumps(
            {"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"}
        ),
        **{f"instance/attributes/{k}": v for k, v in attributes.items()},
    }

    def handle(rec, method, path, headers, _body):
        if headers.get("Metadata-Flavor") != "Google":
            return 403, {}, b"missing Metadata-Flavor header"
        key = path.split("?")[0].removeprefix("/computeMetadata/v1/")
        if method == "GET" and key in rec.values:
            return 200, {"Content-Type": "text/plain"}, rec.values[key].encode()
        return 404, {}, b"not found"

    server = Recorder(handle)
    server.values = values  # a test may change them while vm-run runs (e.g. a preemption)
    return server


def compute_server(watch: list[str]) -> Recorder:
    """Answers DELETE like Compute Engine and notes which of ``watch`` existed right then."""

    def handle(rec, method, path, headers, _body):
        if method == "DELETE":
            rec.requests[-1]["outputs_present"] = {uri: storage.exists(uri) for uri in watch}
            rec.requests[-1]["status_state"] = (
                json.loads(storage.read_text(watch[-1]))["state"]
                if storage.exists(watch[-1])
                else None
            )
            return 200, {"Content-Type": "application/json"}, b'{"name": "operation-1"}'
        return 404, {}, b""

    return Recorder(handle)


HOSTILE = {
    "cmd": '"; rm -rf / #',
    "multi": "line one\nline two; $(echo hi)",
    "quote": "it's `id` && echo",
}


def _vm_run(attributes: dict[str, str], output: str, gcs_env) -> tuple:
    watch = [output, output[: -len(".ipynb")] + ".html", output + ".status.json"]
    with metadata_server(attributes) as md, compute_server(watch) as compute:
        env = dict(gcs_env, GCE_METADATA_HOST=md.host, COMPUTE_API_ENDPOINT=compute.url)
        proc = run_cli(["vm-run"], env)
    deletes = [r for r in compute.requests if r["method"] == "DELETE"]
    return proc, deletes


@pytest.mark.parametrize(
    ("kind", "extra", "code", "state"),
    [
        ("ok", {}, exitcodes.EXIT_OK, "SUCCEEDED"),
        ("fail", {}, exitcodes.EXIT_FAILED, "FAILED"),
        ("slow", {"job_timeout": "5"}, exitcodes.EXIT_TIMED_OUT, "TIMED_OUT"),
    ],
)
def test_vm_run_uploads_outputs_then_deletes_its_vm_whatever_the_outcome(
    bucket, gcs_env, tmp_path, kind, extra, code, state
):
    cells = {
        "ok": ["import scrapbook as sb", "for k, v in [('cmd', cmd), ('multi', multi), "
               "('quote', quote), ('n', n)]: sb.glue(k, v)"],
        "fail": ["raise RuntimeError('boom')"],
        "slow": ["import time\ntime.sleep(120)"],
    }[kind]  # fmt: skip
    nb = notebook('cmd = ""\nmulti = ""\nquote = ""\nn = 1\n', *cells)
    storage.upload_file(write(nb, str(tmp_path / "in.ipynb")), f"{bucket}/in.ipynb")
    storage.write_text(f"{bucket}/params.yaml", "n: 5\nquote: from-file\n")
    pwned = tmp_path / "pwned"
    # The chapter's PARAMETERS string, with values that would be commands in a shell.
    parameters = "-p cmd '\"; rm -rf / #' " + shlex.join(
        ["-p", "multi", HOSTILE["multi"], "-p", "quote", HOSTILE["quote"],
         "-r", "probe", f"$(touch {pwned})"]
    )  # fmt: skip
    output = f"{bucket}/out/{kind}.ipynb"
    attributes = {
        "input_notebook_path": f"{bucket}/in.ipynb",
        "output_notebook_path": output,
        "parameters_file": f"{bucket}/params.yaml",
        "parameters": parameters,
        "allow_unknown_params": "true",  # `probe` is not in the parameters cell
        **extra,
    }
    proc, deletes = _vm_run(attributes, output, gcs_env)
    assert proc.returncode == code, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(deletes) == 1
    delete = deletes[0]
    assert delete["path"] == f"/compute/v1/projects/{PROJECT}/zones/{ZONE}/instances/{NAME}"
    assert delete["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert all(delete["outputs_present"].values()), delete["outputs_present"]
    assert delete["status_state"] == state  # the final status, not RUNNING
    status = json.loads(storage.read_text(output + ".status.json"))
    assert status["parameters"]["cmd"] == HOSTILE["cmd"]
    assert status["parameters"]["multi"] == HOSTILE["multi"]
    assert status["parameters"]["quote"] == HOSTILE["quote"]
    assert status["parameters"]["probe"] == f"$(touch {pwned})"
    assert not pwned.exists()
    if kind == "ok":
        assert status["glued"] == {**HOSTILE, "n": 5}


def test_stay_alive_keeps_the_vm(bucket, gcs_env, tmp_path):
    nb = notebook(None, "raise ValueError('kept for debugging')")
    storage.upload_file(write(nb, str(tmp_path / "in.ipynb")), f"{bucket}/in.ipynb")
    output = f"{bucket}/out/kept.ipynb"
    attributes = {
        "input_notebook_path": f"{bucket}/in.ipynb",
        "output_notebook_path": output,
        "stay_alive": "True",
    }
    proc, deletes = _vm_run(attributes, output, gcs_env)
    assert proc.returncode == exitcodes.EXIT_FAILED
    assert deletes == []
    assert json.loads(storage.read_text(output + ".status.json"))["state"] == "FAILED"


def test_missing_run_metadata_is_a_usage_error_and_still_deletes(bucket, gcs_env):
    proc, deletes = _vm_run(
        {"input_notebook_path": f"{bucket}/in.ipynb"}, f"{bucket}/o.ipynb", gcs_env
    )
    assert proc.returncode == exitcodes.EXIT_USAGE
    assert "output_notebook_path" in proc.stdout + proc.stderr
    assert len(deletes) == 1


def test_unbalanced_quotes_in_parameters_are_a_clear_error(bucket, gcs_env):
    attributes = {
        "input_notebook_path": f"{bucket}/in.ipynb",
        "output_notebook_path": f"{bucket}/o.ipynb",
        "parameters": "-p a 'unclosed",
        "stay_alive": "true",
    }
    proc, deletes = _vm_run(attributes, f"{bucket}/o.ipynb", gcs_env)
    assert proc.returncode == exitcodes.EXIT_USAGE
    assert "metadata 'parameters' cannot be split" in proc.stdout + proc.stderr
    assert deletes == []


@pytest.mark.parametrize(
    ("case", "code", "reason"),
    [
        ("missing-parameters-file", 3, "params-missing.yaml"),
        ("bad-parameters", exitcodes.EXIT_USAGE, "unknown parameters ['nope']"),
        ("name-is-code", exitcodes.EXIT_USAGE, "not python identifiers"),
        ("missing-bucket", 3, "gs://no-such-bucket-x/in.ipynb"),
    ],
)
def test_a_run_that_cannot_start_writes_a_failed_status_then_deletes(
    bucket, gcs_env, tmp_path, case, code, reason
):
    storage.upload_file(write(notebook("n = 1\n", "print(n)"), str(tmp_path / "in.ipynb")),
                        f"{bucket}/in.ipynb")  # fmt: skip
    output = f"{bucket}/out/{case}.ipynb"
    attributes = {
        "missing-parameters-file": {"parameters_file": f"{bucket}/params-missing.yaml"},
        "bad-parameters": {"parameters": "-p nope 1"},
        "name-is-code": {"parameters": "-p 'import os; y' 1", "allow_unknown_params": "true"},
        "missing-bucket": {"input_notebook_path": "gs://no-such-bucket-x/in.ipynb"},
    }[case]
    attributes = {
        "input_notebook_path": f"{bucket}/in.ipynb",
        "output_notebook_path": output,
        **attributes,
    }
    proc, deletes = _vm_run(attributes, output, gcs_env)
    assert proc.returncode == code, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert len(deletes) == 1
    assert deletes[0]["status_state"] == "FAILED"  # written before the VM goes
    status = json.loads(storage.read_text(output + ".status.json"))
    assert status["state"] == "FAILED" and status["exit_code"] == code
    assert reason in status["error"]["message"]
