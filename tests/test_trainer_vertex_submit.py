"""The Vertex AI request builder, checked against a loopback server speaking the REST API."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from trainer_helpers import restore_logging  # noqa: F401 (a fixture)

from jobcommon import cli
from jobcommon.errors import UsageError
from trainer import vertex_submit as submit

BASE = [
    "--project",
    "proj-1",
    "--region",
    "europe-west4",
    "--display-name",
    "digits",
    "--image-uri",
    "europe-docker.pkg.dev/proj-1/jobs/trainer:1",
    "--machine-type",
    "n1-standard-8",
    "--accelerator-type",
    "NVIDIA_TESLA_T4",
    "--accelerator-count",
    "2",
    "--base-output-dir",
    "gs://bkt/runs/1",
    "--log-format",
    "json",
]
TRAINER_ARGS = ["--", "--train-files", "gs://bkt/d/train-*", "--epochs", "5"]


class VertexStub:
    """Records each request; answers like the v1 API (a job resource, or an error)."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(
                    {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
                )
                if status == 200:
                    out = dict(
                        body, name=self.path[len("/v1/") :] + "/4242", state="JOB_STATE_PENDING"
                    )
                else:
                    out = {
                        "error": {
                            "code": status,
                            "message": "machine type not allowed",
                            "status": "INVALID_ARGUMENT",
                        }
                    }
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def vertex():
    stub = VertexStub()
    yield stub
    stub.close()


def test_dry_run_prints_the_custom_job(capsys):
    assert submit.main([*BASE, "--worker-count", "2", *TRAINER_ARGS]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["displayName"] == "digits"
    spec = body["jobSpec"]
    assert spec["baseOutputDirectory"] == {"outputUriPrefix": "gs://bkt/runs/1"}
    primary, workers = spec["workerPoolSpecs"]
    assert primary["replicaCount"] == "1" and workers["replicaCount"] == "2"
    assert primary["machineSpec"] == {
        "machineType": "n1-standard-8",
        "acceleratorType": "NVIDIA_TESLA_T4",
        "acceleratorCount": 2,
    }
    assert primary["containerSpec"] == {
        "imageUri": "europe-docker.pkg.dev/proj-1/jobs/trainer:1",
        "args": ["--train-files", "gs://bkt/d/train-*", "--epochs", "5"],
    }


def test_submit_posts_the_custom_job_with_the_token(vertex, capsys):
    code = submit.main(
        [
            *BASE,
            "--submit",
            "--api-endpoint",
            vertex.url,
            "--access-token",
            "static-token",
            *TRAINER_ARGS,
        ]
    )
    assert code == 0
    (req,) = vertex.requests
    assert req["path"] == "/v1/projects/proj-1/locations/europe-west4/customJobs"
    assert req["auth"] == "Bearer static-token"
    assert req["body"]["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["args"][-1] == "5"
    created = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert created["name"].endswith("/customJobs/4242")


def test_tuning_service_job(vertex, monkeypatch):
    monkeypatch.setenv("VERTEX_ACCESS_TOKEN", "env-token")
    code = submit.main(
        [
            *BASE,
            "--submit",
            "--api-endpoint",
            vertex.url,
            "--tune-service",
            "--max-trial-count",
            "6",
            "--parallel-trial-count",
            "3",
            "--param",
            "learning_rate=double:0.0001:0.01:log",
            "--param",
            "hidden_units=categorical:128,256,512",
            "--param",
            "batch_size=discrete:64,128",
            "--param",
            "epochs=int:5:20",
            *TRAINER_ARGS,
        ]
    )
    assert code == 0
    (req,) = vertex.requests
    assert req["path"].endswith("/locations/europe-west4/hyperparameterTuningJobs")
    assert req["auth"] == "Bearer env-token"
    body = req["body"]
    assert (body["maxTrialCount"], body["parallelTrialCount"]) == (6, 3)
    study = body["studySpec"]
    assert study["metrics"] == [{"metricId": "val_accuracy", "goal": "MAXIMIZE"}]
    assert study["parameters"] == [
        {
            "parameterId": "learning_rate",
            "doubleValueSpec": {"minValue": 0.0001, "maxValue": 0.01},
            "scaleType": "UNIT_LOG_SCALE",
        },
        {"parameterId": "hidden_units", "categoricalValueSpec": {"values": ["128", "256", "512"]}},
        {
            "parameterId": "batch_size",
            "discreteValueSpec": {"values": [64.0, 128.0]},
            "scaleType": "UNIT_LINEAR_SCALE",
        },
        {
            "parameterId": "epochs",
            "integerValueSpec": {"minValue": "5", "maxValue": "20"},
            "scaleType": "UNIT_LINEAR_SCALE",
        },
    ]
    assert body["trialJobSpec"]["workerPoolSpecs"][0]["machineSpec"]["acceleratorCount"] == 2


def test_api_error_is_one_clear_line(capsys):
    stub = VertexStub(status=400)
    try:
        code = cli.run(
            submit.main,
            [*BASE, "--submit", "--api-endpoint", stub.url, "--access-token", "t", *TRAINER_ARGS],
        )
    finally:
        stub.close()
    assert code == 1
    out = capsys.readouterr()
    assert "HTTP 400" in out.out + out.err and "machine type not allowed" in out.out + out.err


def test_bad_param_specs_are_usage_errors():
    for bad in ("lr", "lr=double:1", "lr=double:2:1", "lr=float:1:2", "lr=int:1:5:cubic"):
        with pytest.raises(UsageError, match="--param"):
            submit.parse_param(bad)
    with pytest.raises(UsageError, match="needs at least one --param"):
        submit.main([*BASE, "--tune-service"])


def test_explicit_dry_run_prints_the_body_and_sends_nothing(vertex, capsys):
    argv = [*BASE, "--dry-run", "--api-endpoint", vertex.url, "--access-token", "t"]
    assert submit.main([*argv, *TRAINER_ARGS]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["args"][-1] == "5"
    assert vertex.requests == []


def test_dry_run_and_submit_together_are_refused(vertex, capsys):
    with pytest.raises(SystemExit) as exit_info:
        submit.main([*BASE, "--dry-run", "--submit", "--api-endpoint", vertex.url])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert vertex.requests == []
