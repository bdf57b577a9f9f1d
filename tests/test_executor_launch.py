"""``python -m executor launch``: the run checked first, then the instances.insert request,
printed or sent to a loopback server speaking Compute Engine's REST format."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from executor_helpers import Recorder, notebook, run_cli, write

from executor import launch, options
from jobcommon import storage

IMAGE = "us-docker.pkg.dev/proj-1/repo/executor:1"


def _args(bucket: str, *extra: str) -> list[str]:
    return [
        "launch", f"{bucket}/in.ipynb", f"{bucket}/out/{{run_id}}/result.ipynb",
        "--zone", "us-central1-b", "--project", "proj-1", "--gpu-type", "t4", "--gpu-count", "2",
        "--machine-type", "n1-standard-8", "--image-uri", IMAGE,
        "--run-id", "r7", "--job-timeout", "3600",
        "-p", "epochs", "40", "-p", "cmd", '"; rm -rf / #', "-y", f"{bucket}/params.yaml",
        *extra,
    ]  # fmt: skip


@pytest.fixture
def inputs(bucket, tmp_path) -> str:
    nb = notebook('epochs = 1\ncmd = ""\nlr = 0.1\n', "print(epochs, cmd, lr)")
    storage.upload_file(write(nb, str(tmp_path / "in.ipynb")), f"{bucket}/in.ipynb")
    storage.write_text(f"{bucket}/params.yaml", "lr: 0.5\n")
    return bucket


def _printed(stdout: str) -> dict:
    """The request --dry-run printed (log lines, one JSON object each, may come first)."""
    return json.loads(stdout[stdout.index("{\n") :])


def _items(body: dict) -> dict[str, str]:
    return {i["key"]: i["value"] for i in body["metadata"]["items"]}


def compute_server(answer=(200, b'{"name": "operation-9"}')) -> Recorder:
    def handle(_rec, method, path, _headers, _body):
        return answer[0], {"Content-Type": "application/json"}, answer[1]

    return Recorder(handle)


def test_dry_run_prints_the_exact_gpu_vm_request(inputs, gcs_env):
    bucket = inputs
    proc = run_cli([*_args(bucket), "--dry-run"], gcs_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    request = _printed(proc.stdout)
    assert request["method"] == "POST"
    assert request["url"] == (
        "https://compute.googleapis.com/compute/v1/projects/proj-1/zones/us-central1-b/instances"
    )
    body = request["body"]
    assert body["name"] == "notebook-r7"
    assert body["machineType"] == "zones/us-central1-b/machineTypes/n1-standard-8"
    assert body["guestAccelerators"] == [{
        "acceleratorType": "zones/us-central1-b/acceleratorTypes/nvidia-tesla-t4",
        "acceleratorCount": 2,
    }]  # fmt: skip
    assert body["scheduling"] == {"onHostMaintenance": "TERMINATE", "automaticRestart": False}
    assert body["serviceAccounts"] == [
        {"email": "default", "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}
    ]
    assert body["disks"][0]["initializeParams"]["sourceImage"] == (
        "projects/deeplearning-platform-release/global/images/family/"
        "common-cu128-ubuntu-2204-nvidia-570"
    )
    assert body["networkInterfaces"][0]["accessConfigs"][0]["type"] == "ONE_TO_ONE_NAT"
    items = _items(body)
    assert items["input_notebook_path"] == f"{bucket}/in.ipynb"
    assert items["output_notebook_path"] == f"{bucket}/out/r7/result.ipynb"
    assert items["stay_alive"] == "false" and items["job_timeout"] == "3600.0"
    assert items["run_id"] == "r7"
    assert items["executor_image"] == IMAGE
    assert items["install-nvidia-driver"] == "True"
    # What vm-run will parse from the metadata is exactly what was given here.
    parsed = options.parse_parameters(items["parameters"])
    assert parsed.parameters == [["epochs", "40"], ["cmd", '"; rm -rf / #']]
    assert parsed.parameters_yaml == [f"{bucket}/params.yaml"]
    # The startup script is fixed text: no value from the command line is inside it.
    assert items["startup-script"] == launch.STARTUP_SCRIPT
    assert "rm -rf" not in items["startup-script"] and "bkt" not in items["startup-script"]


def test_spot_vm_on_a_private_subnet_with_labels_and_account(inputs, gcs_env):
    extra = [
        "--spot", "--network", "ml-net", "--subnet", "ml-sub", "--no-external-ip",
        "--labels", "team=ml,env=dev", "--labels", "cost=42",
        "--service-account", "nb@proj-1.iam.gserviceaccount.com",
        "--image-family", "common-cu124-debian-11", "--dry-run",
    ]  # fmt: skip
    proc = run_cli([*_args(inputs), *extra], gcs_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    body = _printed(proc.stdout)["body"]
    assert body["scheduling"] == {
        "onHostMaintenance": "TERMINATE",
        "automaticRestart": False,
        "provisioningModel": "SPOT",
        "instanceTerminationAction": "DELETE",
    }
    assert body["networkInterfaces"] == [
        {
            "network": "global/networks/ml-net",
            "subnetwork": "regions/us-central1/subnetworks/ml-sub",
        }
    ]
    assert body["labels"] == {
        "app": "notebook-executor", "run-id": "notebook-r7", "team": "ml", "env": "dev",
        "cost": "42",
    }  # fmt: skip
    assert body["serviceAccounts"][0]["email"] == "nb@proj-1.iam.gserviceaccount.com"
    assert body["disks"][0]["initializeParams"]["sourceImage"] == (
        "projects/deeplearning-platform-release/global/images/family/common-cu124-debian-11"
    )


def test_startup_script_is_valid_bash_and_runs_the_container_with_gpus():
    subprocess.run(["bash", "-n"], input=launch.STARTUP_SCRIPT, text=True, check=True)
    script = launch.STARTUP_SCRIPT
    assert "nvidia-smi" in script and "cos-extensions install gpu" in script
    assert "--gpus all" in script and "python -m executor vm-run" in script
    assert "--network host" in script  # the container reaches the metadata server
    assert "--stop-timeout 25" in script  # a Spot VM's shutdown: time to save the notebook


def test_cos_image_and_cpu_only(inputs, gcs_env):
    args = [a for a in _args(inputs) if a not in ("--gpu-count", "2")]
    extra = ["--gpu-count", "0", "--image-project", "cos-cloud", "--image-family", "cos-stable"]
    proc = run_cli([*args, *extra, "--dry-run"], gcs_env)
    assert proc.returncode == 0, proc.stderr
    body = _printed(proc.stdout)["body"]
    assert "guestAccelerators" not in body
    assert body["disks"][0]["initializeParams"]["sourceImage"] == (
        "projects/cos-cloud/global/images/family/cos-stable"
    )
    assert "install-nvidia-driver" not in _items(body)


def test_launch_posts_to_the_compute_api_and_never_deletes(inputs, gcs_env):
    with compute_server() as compute:
        env = dict(gcs_env, COMPUTE_API_ENDPOINT=compute.url, CLOUDSDK_AUTH_ACCESS_TOKEN="tk")
        proc = run_cli(_args(inputs), env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [r["method"] for r in compute.requests] == ["POST"]
    request = compute.requests[0]
    assert request["path"] == "/compute/v1/projects/proj-1/zones/us-central1-b/instances"
    assert request["headers"]["Authorization"] == "Bearer tk"
    assert json.loads(request["body"])["name"] == "notebook-r7"
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert printed["operation"] == "operation-9"
    assert printed["output"] == f"{inputs}/out/r7/result.ipynb"
    assert printed["status"] == f"{inputs}/out/r7/result.ipynb.status.json"


def test_a_vm_of_the_same_name_still_there_says_what_to_do(inputs, gcs_env):
    conflict = json.dumps({"error": {"code": 409, "message": (
        "The resource 'projects/proj-1/zones/us-central1-b/instances/notebook-r7' already exists"
    )}}).encode()  # fmt: skip
    with compute_server((409, conflict)) as compute:
        env = dict(gcs_env, COMPUTE_API_ENDPOINT=compute.url, CLOUDSDK_AUTH_ACCESS_TOKEN="tk")
        proc = run_cli(_args(inputs), env)
    assert proc.returncode == 1
    assert "already exists" in proc.stdout and "launch again shortly" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_no_credentials_is_exit_5_naming_the_project(inputs, gcs_env, tmp_path):
    env = {k: v for k, v in gcs_env.items() if k not in (
        "CLOUDSDK_AUTH_ACCESS_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS")}  # fmt: skip
    # No key file, no gcloud config, and no metadata server to fall back on.
    env |= {"HOME": str(tmp_path), "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
            "GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9"}  # fmt: skip
    with compute_server() as compute:
        proc = run_cli(_args(inputs), env | {"COMPUTE_API_ENDPOINT": compute.url})
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "no Google Cloud credentials to access projects/proj-1" in proc.stdout
    assert compute.requests == []


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        ({"in.ipynb": "missing.ipynb"}, 3, "missing.ipynb"),
        ({"epochs": "epoch"}, 2, "unknown parameters ['epoch']"),
        ({"40": "forty"}, 2, "parameter epochs='forty' (-p) must be an int"),
        ({"{run_id}": "{nope}"}, 2, "unknown fields ['nope']"),
        ({"n1-standard-8": "g2-standard-8"}, 2, "comes with 1 x l4, not 2 x t4"),
        ({"2": "3"}, 2, "--gpu-count 3: a VM takes 1, 2, 4 t4 GPUs"),
        ({IMAGE: "img; rm -rf /"}, 2, "--image-uri"),
    ],
)
def test_a_bad_run_is_refused_before_any_vm_is_created(inputs, gcs_env, change, code, message):
    args = []
    for a in _args(inputs):
        for old, new in change.items():
            a = (
                a.replace(old, new)
                if old.startswith("{") or old.endswith(".ipynb")
                else (new if a == old else a)
            )
        args.append(a)
    with compute_server() as compute:
        env = dict(gcs_env, COMPUTE_API_ENDPOINT=compute.url, CLOUDSDK_AUTH_ACCESS_TOKEN="tk")
        proc = run_cli(args, env)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert message in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stderr
    assert compute.requests == []


def test_local_paths_are_refused(inputs, gcs_env):
    args = [a if not a.endswith("in.ipynb") else "in.ipynb" for a in _args(inputs)]
    proc = run_cli([*args, "--dry-run"], gcs_env)
    assert proc.returncode == 2 and "a VM can only read and write gs://" in proc.stdout


def test_an_accelerator_optimized_type_brings_its_own_gpus(inputs, gcs_env):
    args = _args(inputs)
    for flag in ("--gpu-type", "--gpu-count"):
        del args[args.index(flag) : args.index(flag) + 2]
    args[args.index("n1-standard-8")] = "a2-highgpu-2g"
    proc = run_cli([*args, "--dry-run"], gcs_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    body = _printed(proc.stdout)["body"]
    assert body["machineType"] == "zones/us-central1-b/machineTypes/a2-highgpu-2g"
    assert "guestAccelerators" not in body  # the two A100s come with the machine type
    items = _items(body)
    assert items["executor_gpu_count"] == "2" and items["install-nvidia-driver"] == "True"
    assert body["scheduling"]["onHostMaintenance"] == "TERMINATE"


def test_launched_vm_runs_the_notebook_and_wait_returns_its_exit_code(bucket, gcs_env, tmp_path):
    """launch -> a loopback Compute Engine that 'boots' the VM: it serves the body's metadata
    items from a loopback metadata server and starts vm-run, as the startup script would."""
    import sys
    import threading

    from executor_helpers import REPO
    from test_executor_vm import metadata_server

    nb = notebook("epochs = 1\n", "print('epochs', epochs)", "assert epochs < 3, 'too many'")
    storage.upload_file(write(nb, str(tmp_path / "in.ipynb")), f"{bucket}/in.ipynb")
    booted: list[subprocess.CompletedProcess] = []

    def boot(name: str, items: dict[str, str], compute_url: str) -> None:
        with metadata_server(items) as md:
            md.values["instance/name"] = name
            env = dict(gcs_env, GCE_METADATA_HOST=md.host, COMPUTE_API_ENDPOINT=compute_url)
            booted.append(subprocess.run(
                [sys.executable, "-m", "executor", "vm-run"],
                env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
            ))  # fmt: skip

    def handle(rec, method, path, _headers, body):
        if method == "POST":
            vm = json.loads(body)
            threading.Thread(
                target=boot, args=(vm["name"], _items(vm), rec.url), daemon=True
            ).start()
        return 200, {"Content-Type": "application/json"}, b'{"name": "operation-1"}'

    args = [
        "launch", f"{bucket}/in.ipynb", f"{bucket}/out/{{run_id}}-e{{epochs}}.ipynb",
        "--zone", "us-central1-b", "--project", "proj-1", "--image-uri", IMAGE,
        "--run-id", "e2e", "--spot", "-p", "epochs", "5", "--mirror-interval", "1",
    ]  # fmt: skip
    with Recorder(handle) as compute:
        env = dict(gcs_env, COMPUTE_API_ENDPOINT=compute.url, CLOUDSDK_AUTH_ACCESS_TOKEN="tk")
        proc = run_cli(args, env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        output = json.loads(proc.stdout.strip().splitlines()[-1])["output"]
        assert output == f"{bucket}/out/e2e-e5.ipynb"
        waited = run_cli(["wait", output, "--interval", "0.5", "--timeout", "240"], gcs_env)
        deadline = time.monotonic() + 60
        while not booted and time.monotonic() < deadline:
            time.sleep(0.2)  # vm-run deletes its VM after the final status
    assert waited.returncode == 10, waited.stdout + waited.stderr
    assert "e2e FAILED (exit code 10)" in waited.stdout and "too many" in waited.stdout
    assert booted and booted[0].returncode == 10, booted and booted[0].stdout[-2000:]
    assert [(r["method"], r["path"]) for r in compute.requests] == [
        ("POST", "/compute/v1/projects/proj-1/zones/us-central1-b/instances"),
        ("DELETE", "/compute/v1/projects/proj-1/zones/us-central1-b/instances/notebook-e2e"),
    ]
    status = json.loads(storage.read_text(output + ".status.json"))
    assert status["run_id"] == "e2e" and status["parameters"] == {"epochs": 5}
