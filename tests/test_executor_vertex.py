"""``executor batch --backend vertex``: one Vertex AI CustomJob per run of a sweep.

The Vertex AI API is a loopback server speaking its REST wire format (customJobs.create and
customJobs.get); it runs each job's container command, ``python -m executor run ...``, as a
real process against fake-gcs-server, so the gathered metrics come from executed notebooks.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import threading
import time
import urllib.parse

import pytest
from executor_helpers import REPO, TRAIN_CELLS, TRAIN_PARAMS, Recorder, notebook, run_cli, write

from executor import exitcodes
from jobcommon import storage

PROJECT, REGION, IMAGE, TOKEN = "proj-1", "us-central1", "us-docker.pkg.dev/p/r/executor:7", "tk"


class FakeVertex(Recorder):
    """customJobs.create / customJobs.get as Vertex AI answers them. A created job is
    PENDING, then RUNNING while its container command runs (``parallel`` at a time, like a
    quota), then SUCCEEDED, or FAILED with Vertex's message when the command exits non-zero.
    Jobs whose display name is in ``refuse_to_start`` fail without running (e.g. no quota).
    """

    def __init__(self, env: dict[str, str], parallel: int = 2, refuse_to_start=()) -> None:
        self.env = env
        self.jobs: dict[str, dict] = {}
        self.slots = threading.Semaphore(parallel)
        self.refuse_to_start = set(refuse_to_start)
        super().__init__(self._handle)

    @staticmethod
    def _json(code: int, data: dict):
        return code, {"Content-Type": "application/json"}, json.dumps(data).encode()

    def _error(self, code: int, status: str, message: str):
        return self._json(code, {"error": {"code": code, "status": status, "message": message}})

    def _handle(self, _rec, method, path, headers, body):
        if headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._error(401, "UNAUTHENTICATED", "Request had invalid credentials.")
        url = urllib.parse.urlparse(path)
        collection = f"/v1/projects/{PROJECT}/locations/{REGION}/customJobs"
        if method == "POST" and url.path == collection:
            return self._create(json.loads(body), url.path.removeprefix("/v1/"))
        if method == "GET" and url.path.startswith(collection + "/"):
            job = self.jobs.get(url.path.removeprefix("/v1/"))
            if job is None:
                return self._error(404, "NOT_FOUND", "The CustomJob does not exist.")
            with self.lock:
                return self._json(200, dict(job["resource"]))
        return self._error(404, "NOT_FOUND", f"no such method {method} {url.path}")

    def _create(self, body: dict, parent: str):
        pools = body.get("jobSpec", {}).get("workerPoolSpecs") or []
        if not body.get("displayName") or not pools:
            return self._error(400, "INVALID_ARGUMENT", "displayName and workerPoolSpecs needed")
        pool = pools[0]
        if not pool.get("machineSpec", {}).get("machineType") or not pool.get(
            "containerSpec", {}
        ).get("imageUri"):
            return self._error(400, "INVALID_ARGUMENT", "machineType and imageUri are required")
        with self.lock:
            name = f"{parent}/{4000 + len(self.jobs)}"
            resource = {
                **body,
                "name": name,
                "state": "JOB_STATE_PENDING",
                "createTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            self.jobs[name] = {"resource": resource, "body": body}
        threading.Thread(target=self._run, args=(name,), daemon=True).start()
        return self._json(200, resource)

    def _set(self, name: str, **fields) -> None:
        with self.lock:
            self.jobs[name]["resource"].update(fields)

    def _run(self, name: str) -> None:
        import subprocess

        job = self.jobs[name]
        body = job["body"]
        if body["displayName"] in self.refuse_to_start:
            time.sleep(0.5)
            message = "Resources are insufficient in region: us-central1."
            self._set(name, state="JOB_STATE_FAILED", error={"code": 8, "message": message})
            return
        container = body["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]
        command = [sys.executable if c == "python" else c for c in container["command"]]
        with self.slots:
            self._set(name, state="JOB_STATE_RUNNING")
            proc = subprocess.run(
                [*command, *container["args"]],
                env=self.env, cwd=REPO, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
        job["proc"] = proc
        if proc.returncode == 0:
            self._set(name, state="JOB_STATE_SUCCEEDED")
        else:
            code = proc.returncode
            message = f"The replica workerpool0-0 exited with a non-zero status of {code}."
            self._set(name, state="JOB_STATE_FAILED", error={"code": 3, "message": message})


RUNS = [
    {"epochs": 1, "lr": 0.5},
    {"epochs": 3, "lr": 1, "name": "big"},
    {"epochs": 2, "lr": 1e-05},
    {"epochs": 4, "lr": -1},  # fails in the notebook
]


def _sweep_args(bucket: str, endpoint: str, *extra: str) -> list[str]:
    return [
        "batch", f"{bucket}/train.ipynb", f"{bucket}/sweep", "--runs", f"{bucket}/runs.json",
        "-p", "use_gpu", "True", "--backend", "vertex", "--project", PROJECT,
        "--region", REGION, "--image-uri", IMAGE, "--machine-type", "n1-standard-8",
        "--accelerator", "NVIDIA_TESLA_T4", "--accelerator-count", "1",
        "--api-endpoint", endpoint, "--access-token", TOKEN, "--poll-interval", "0.5", *extra,
    ]  # fmt: skip


@pytest.fixture
def sweep_inputs(bucket, tmp_path):
    nb = notebook(TRAIN_PARAMS, "assert lr > 0, f'lr must be positive, got {lr}'", *TRAIN_CELLS)
    storage.upload_file(write(nb, str(tmp_path / "train.ipynb")), f"{bucket}/train.ipynb")
    storage.write_text(f"{bucket}/runs.json", json.dumps(RUNS))
    return bucket


def test_vertex_sweep_runs_one_custom_job_per_run_and_gathers_metrics(sweep_inputs, gcs_env):
    bucket = sweep_inputs
    with FakeVertex(gcs_env) as vertex:
        proc = run_cli(_sweep_args(bucket, vertex.url), gcs_env, timeout=400)
    assert proc.returncode == exitcodes.EXIT_FAILED, proc.stdout[-3000:] + proc.stderr[-3000:]
    creates = [r for r in vertex.requests if r["method"] == "POST"]
    assert len(creates) == 4
    bodies = [json.loads(r["body"]) for r in creates]
    for i, body in enumerate(bodies):
        run_dir = f"{bucket}/sweep/run-{i:03d}"
        assert body["displayName"].endswith(f"run-{i:03d}")
        (pool,) = body["jobSpec"]["workerPoolSpecs"]
        assert pool["machineSpec"] == {
            "machineType": "n1-standard-8",
            "acceleratorType": "NVIDIA_TESLA_T4",
            "acceleratorCount": 1,
        }
        assert pool["replicaCount"] == "1"
        assert pool["containerSpec"]["imageUri"] == IMAGE
        assert pool["containerSpec"]["command"] == ["python", "-m", "executor"]
        args = pool["containerSpec"]["args"]
        assert args[:3] == ["run", f"{bucket}/train.ipynb", f"{run_dir}/output.ipynb"]
        assert args[args.index("--run-id") + 1] == f"run-{i:03d}"
        assert body["jobSpec"]["baseOutputDirectory"] == {"outputUriPrefix": run_dir}
    # Every job was read until it was final, and each ran the container command for real.
    gets = {r["path"] for r in vertex.requests if r["method"] == "GET"}
    assert gets == {f"/v1/{name}" for name in vertex.jobs}
    assert [j["proc"].returncode for j in vertex.jobs.values()] == [0, 0, 0, exitcodes.EXIT_FAILED]

    rows = list(csv.DictReader(io.StringIO(storage.read_text(f"{bucket}/sweep/metrics.csv"))))
    assert [r["run"] for r in rows] == ["run-000", "run-001", "run-002", "run-003"]
    assert [r["state"] for r in rows] == ["SUCCEEDED"] * 3 + ["FAILED"]
    for row, run in zip(rows[:3], RUNS[:3], strict=True):
        assert int(row["epochs"]) == run["epochs"] and float(row["lr"]) == run["lr"]
        assert float(row["glued.accuracy"]) == round(
            min(0.99, 0.5 + run["epochs"] * run["lr"] / 10), 4
        )
        assert row["use_gpu"] == "True" and storage.exists(row["output"])
    assert rows[1]["glued.name"] == "big"
    # The notebook saw the types of its parameters cell, as in a local run.
    status = json.loads(storage.read_text(rows[2]["output"] + ".status.json"))
    assert status["glued"]["types"] == ["int", "float", "str", "bool"]
    assert status["parameters"]["lr"] == 1e-05
    assert rows[3]["exit_code"] == str(exitcodes.EXIT_FAILED)
    assert "| run-003 | FAILED |" in storage.read_text(f"{bucket}/sweep/metrics.md")
    assert storage.read_bytes(f"{bucket}/sweep/summary.png")[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_job_that_never_ran_is_a_failed_row_with_vertex_s_reason(sweep_inputs, gcs_env):
    bucket = sweep_inputs
    storage.write_text(f"{bucket}/runs.json", json.dumps(RUNS[:2]))
    with FakeVertex(gcs_env, refuse_to_start={"sweep-run-001"}) as vertex:
        proc = run_cli(
            [*_sweep_args(bucket, vertex.url), "--display-name", "sweep"], gcs_env, timeout=300
        )
    assert proc.returncode == exitcodes.EXIT_FAILED, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = list(csv.DictReader(io.StringIO(storage.read_text(f"{bucket}/sweep/metrics.csv"))))
    assert [r["state"] for r in rows] == ["SUCCEEDED", "FAILED"]
    assert "Resources are insufficient" in proc.stdout + proc.stderr
    assert rows[1]["output"] == f"{bucket}/sweep/run-001/output.ipynb"
    assert not storage.exists(rows[1]["output"])


def test_dry_run_prints_the_bodies_and_sends_nothing(sweep_inputs, gcs_env):
    bucket = sweep_inputs
    with FakeVertex(gcs_env) as vertex:
        proc = run_cli([*_sweep_args(bucket, vertex.url), "--dry-run"], gcs_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert vertex.requests == []
    printed = json.loads(proc.stdout[proc.stdout.index("[\n") :])
    assert [p["method"] for p in printed] == ["POST"] * 4
    assert {p["url"] for p in printed} == {
        f"{vertex.url}/v1/projects/{PROJECT}/locations/{REGION}/customJobs"
    }
    args = printed[2]["body"]["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["args"]
    assert args[args.index("lr") - 1 : args.index("lr") + 2] == ["-p", "lr", "1e-05"]
    assert not storage.exists(f"{bucket}/sweep/metrics.csv")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("{bucket}/sweep", "sweep-local"), "gs://"),
        (("--project", "--labels"), "--project"),
        (("NVIDIA_TESLA_T4", "TESLA_T4"), "--accelerator"),
    ],
)
def test_bad_vertex_arguments_are_usage_errors(sweep_inputs, gcs_env, tmp_path, change, message):
    bucket = sweep_inputs
    old, new = (c.replace("{bucket}", bucket) for c in change)
    args = [new if a == old else a for a in _sweep_args(bucket, "http://127.0.0.1:9")]
    if new == "--labels":
        args[args.index("--labels") + 1] = "team=ml"
    proc = run_cli(args, gcs_env, cwd=str(tmp_path))
    assert proc.returncode == exitcodes.EXIT_USAGE, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert message in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
