"""The notebook executor under GCS faults: mirroring never fails a run, the final notebook
and status land, a final upload that cannot land is an exit code and a log line, and
``vm-run`` still deletes its VM."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import nbformat
import pytest
from chaos_helpers import RATE, SEEDS
from executor_helpers import (
    REPO,
    Recorder,
    notebook,
    run_cli,
    sleepy_notebook,
    train_notebook,
    write,
)
from faultproxy import TRANSIENT, Rule

from executor import exitcodes
from jobcommon import storage


def _upload(gcs, nb, uri: str, tmp_path) -> str:
    local = write(nb, str(tmp_path / uri.rsplit("/", 1)[-1]))
    with gcs.direct():
        storage.upload_file(local, uri)
    return uri


def _read_notebook(gcs, uri: str, tmp_path):
    local = str(tmp_path / "downloaded.ipynb")
    with gcs.direct():
        storage.download_file(uri, local)
    return nbformat.read(local, as_version=4)


def _status(gcs, output: str) -> dict:
    with gcs.direct():
        return json.loads(storage.read_text(output + ".status.json"))


def _env(gcs) -> dict[str, str]:
    return gcs.env() | {"LOG_FORMAT": "json", "STORAGE_REQUEST_TIMEOUT": "20"}


@pytest.mark.parametrize("seed", SEEDS)
def test_mirroring_under_faults_never_fails_the_run(faulty_gcs, tmp_path, seed, request):
    gcs = faulty_gcs([], seed)
    bucket = gcs.new_bucket(request.node.name)
    nb_uri = _upload(gcs, sleepy_notebook(cells=16, sleep=0.25), f"{bucket}/nb/in.ipynb", tmp_path)
    with gcs.direct():
        storage.write_text(f"{bucket}/params.yaml", "sleep: 0.3\n")
    output = f"{bucket}/out/{{run_id}}/out.ipynb"
    # Faults on every request: the input and parameter reads, the mirror, the final upload.
    gcs.proxy.configure([Rule(rate=RATE, faults=TRANSIENT)], seed)
    proc = run_cli(
        ["run", nb_uri, output, "--run-id", "r1", "-f", f"{bucket}/params.yaml",
         "--mirror-interval", "1"],
        _env(gcs),
    )  # fmt: skip
    faults = gcs.proxy.faults
    gcs.proxy.configure([])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert faults >= 1
    output = f"{bucket}/out/r1/out.ipynb"
    status = _status(gcs, output)
    assert status["state"] == exitcodes.SUCCEEDED and status["exit_code"] == 0
    assert status["parameters"] == {"sleep": 0.3}
    assert status["notebook_uploads"] >= 2  # mirrored while running, then the final one
    nb = _read_notebook(gcs, output, tmp_path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) == 18  # the parameters cell, the injected one and 16 more
    assert all(c.metadata.papermill.status == "completed" for c in code)
    with gcs.direct():
        assert "<html" in storage.read_text(f"{bucket}/out/r1/out.html")


def _output_object(bucket: str, name: str) -> str:
    """A regex matching uploads of exactly the notebook object (not its .status.json)."""
    return f'"name": ?"{name}"|name={name.replace("/", "%2F")}(&|$)'


def test_final_upload_is_retried_until_it_lands(faulty_gcs, tmp_path, request):
    gcs = faulty_gcs([])
    bucket = gcs.new_bucket(request.node.name)
    nb_uri = _upload(gcs, train_notebook(), f"{bucket}/in.ipynb", tmp_path)
    output = f"{bucket}/out/final.ipynb"
    # Access to the notebook object is refused for its first 4 uploads, then comes back.
    refuse = _output_object(bucket, "out/final.ipynb")
    gcs.proxy.configure([Rule(rate=1.0, faults=("403",), method="POST", body=refuse, limit=4)])
    proc = run_cli(["run", nb_uri, output, "--mirror-interval", "30"], _env(gcs))
    refused = gcs.proxy.counts["403"]
    gcs.proxy.configure([])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert refused == 4
    assert "final upload" in proc.stdout and "retrying" in proc.stdout
    nb = _read_notebook(gcs, output, tmp_path)
    assert nb.metadata.papermill.parameters == {}
    assert _status(gcs, output)["state"] == exitcodes.SUCCEEDED


def test_final_upload_failure_is_an_exit_code_and_a_log_line(faulty_gcs, tmp_path, request):
    gcs = faulty_gcs([])
    bucket = gcs.new_bucket(request.node.name)
    nb_uri = _upload(gcs, train_notebook(), f"{bucket}/in.ipynb", tmp_path)
    output = f"{bucket}/out/never.ipynb"
    gcs.proxy.configure(
        [Rule(rate=1.0, faults=("403",), method="POST",
              body=_output_object(bucket, "out/never.ipynb"))]
    )  # fmt: skip
    started = time.monotonic()
    proc = run_cli(
        ["run", nb_uri, output, "--mirror-interval", "1", "--upload-deadline", "6"], _env(gcs)
    )
    elapsed = time.monotonic() - started
    gcs.proxy.configure([])
    assert proc.returncode == exitcodes.EXIT_UPLOAD_FAILED, proc.stdout[-3000:]
    errors = [
        json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{") and "ERROR" in ln
    ]
    assert any("could not be uploaded" in r["message"] for r in errors), proc.stdout[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert elapsed < 90
    status = _status(gcs, output)  # the status file is not the refused object: it lands
    assert status["exit_code"] == exitcodes.EXIT_UPLOAD_FAILED
    with gcs.direct():
        assert not storage.exists(output)


class _VM:
    """Loopback metadata server and Compute Engine API for ``vm-run``."""

    def __init__(self, attributes: dict[str, str]) -> None:
        self.attributes = attributes

        def metadata(_rec, method, path, headers, body):
            if headers.get("Metadata-Flavor") != "Google":
                return 403, {}, b"missing Metadata-Flavor"
            prefix = "/computeMetadata/v1/"
            key = path.split("?", 1)[0][len(prefix) :]
            values = {
                "project/project-id": "proj",
                "instance/zone": "projects/1/zones/us-central1-a",
                "instance/name": "nb-vm",
                "instance/service-accounts/default/token": json.dumps(
                    {"access_token": "tok", "expires_in": 3600, "token_type": "Bearer"}
                ),
            }
            if key.startswith("instance/attributes/"):
                value = self.attributes.get(key[len("instance/attributes/") :])
            else:
                value = values.get(key)
            if value is None:
                return 404, {}, b"not found"
            return 200, {"Content-Type": "text/plain"}, value.encode()

        def compute(_rec, method, path, headers, body):
            return 200, {"Content-Type": "application/json"}, b'{"name": "op-1"}'

        self.metadata = Recorder(metadata)
        self.compute = Recorder(compute)

    def __enter__(self):
        self.metadata.__enter__()
        self.compute.__enter__()
        return self

    def __exit__(self, *exc):
        self.metadata.__exit__(*exc)
        self.compute.__exit__(*exc)

    def env(self, base: dict[str, str]) -> dict[str, str]:
        return base | {
            "GCE_METADATA_HOST": self.metadata.host,
            "COMPUTE_API_ENDPOINT": self.compute.url,
        }

    def deletes(self) -> list[str]:
        return [r["path"] for r in self.compute.requests if r["method"] == "DELETE"]


@pytest.mark.parametrize("stay_alive", [False, True], ids=["deleted", "stay-alive"])
def test_vm_run_with_a_failed_final_upload_still_deletes_the_vm(
    faulty_gcs, tmp_path, stay_alive, request
):
    gcs = faulty_gcs([])
    bucket = gcs.new_bucket(request.node.name)
    nb_uri = _upload(gcs, notebook("x = 1\n", "y = x + 1"), f"{bucket}/in.ipynb", tmp_path)
    output = f"{bucket}/out/vm.ipynb"
    attributes = {
        "input_notebook_path": nb_uri,
        "output_notebook_path": output,
        "parameters": "-p x 5",
        "mirror_interval": "1",
        "upload_deadline": "5",
        "stay_alive": "true" if stay_alive else "false",
    }
    refuse = _output_object(bucket, "out/vm.ipynb")
    gcs.proxy.configure(
        [
            Rule(rate=1.0, faults=("403",), method="POST", body=refuse),  # first match wins
            Rule(rate=RATE, faults=TRANSIENT),
        ],
        seed=SEEDS[0],
    )
    with _VM(attributes) as vm:
        try:
            # The run takes ~10 s; the final upload may retry for upload_deadline (5 s).
            proc = run_cli(["vm-run"], vm.env(_env(gcs)), timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("vm-run kept retrying past the upload_deadline metadata value")
        deletes = vm.deletes()
    gcs.proxy.configure([])
    assert proc.returncode == exitcodes.EXIT_UPLOAD_FAILED, proc.stdout[-3000:]
    assert "could not be uploaded" in proc.stdout
    if stay_alive:
        assert deletes == []
    else:
        assert deletes == ["/compute/v1/projects/proj/zones/us-central1-a/instances/nb-vm"]


def test_gcs_gone_mid_run_ends_within_the_upload_deadline_and_says_so(
    faulty_gcs, tmp_path, request
):
    gcs = faulty_gcs([])
    bucket = gcs.new_bucket(request.node.name)
    nb = notebook(None, "import time", *["time.sleep(1)"] * 12)
    nb_uri = _upload(gcs, nb, f"{bucket}/in.ipynb", tmp_path)
    output = f"{bucket}/out/gone.ipynb"
    proc = subprocess.Popen(
        [sys.executable, "-m", "executor", "run", nb_uri, output,
         "--mirror-interval", "1", "--upload-deadline", "8"],
        cwd=REPO, env=gcs.env() | {"LOG_FORMAT": "json"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the run has started: its RUNNING status is there
        with gcs.direct():
            if storage.exists(output + ".status.json"):
                break
        time.sleep(0.5)
    # GCS stops answering: every request hangs, then its connection is reset.
    gcs.proxy.configure([Rule(rate=1.0, faults=("stall",), stall_seconds=60)])
    gone = time.monotonic()
    try:
        out, err = proc.communicate(timeout=400)
    finally:
        gcs.proxy.configure([])
    elapsed = time.monotonic() - gone
    assert proc.returncode == exitcodes.EXIT_UPLOAD_FAILED, out[-3000:] + err[-3000:]
    records = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    last = records[-1]
    assert "ERROR" in json.dumps(last) and "upload failed" in last["message"], last
    assert "SUCCEEDED" in last["message"]  # what the run did, and that its outputs are lost
    assert "Traceback" not in out + err
    # 12 s of notebook left at most, then 8 s of uploads; unbounded it took minutes.
    assert elapsed < 12 + 8 + 30, elapsed
