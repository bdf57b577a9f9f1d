"""``python -m executor launch``: the instances.insert request, printed or sent."""

from __future__ import annotations

import json
import subprocess

from executor_helpers import Recorder, run_cli

from executor import launch, options

ARGS = [
    "launch", "gs://bkt/in.ipynb", "gs://bkt/out/{run_id}/result.ipynb",
    "--zone", "us-central1-b", "--project", "proj-1", "--gpu-type", "t4", "--gpu-count", "2",
    "--machine-type", "n1-standard-8", "--image-uri", "us-docker.pkg.dev/proj-1/repo/executor:1",
    "--run-id", "r7", "--job-timeout", "3600",
    "-p", "epochs", "40", "-p", "cmd", '"; rm -rf / #', "-y", "gs://bkt/params.yaml",
]  # fmt: skip


def _items(body: dict) -> dict[str, str]:
    return {i["key"]: i["value"] for i in body["metadata"]["items"]}


def test_dry_run_prints_the_exact_gpu_vm_request(gcs_env):
    proc = run_cli([*ARGS, "--dry-run"], gcs_env)
    assert proc.returncode == 0, proc.stderr
    request = json.loads(proc.stdout)
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
    assert body["scheduling"]["onHostMaintenance"] == "TERMINATE"
    assert body["serviceAccounts"][0]["scopes"] == [
        "https://www.googleapis.com/auth/cloud-platform"
    ]
    assert "deeplearning-platform-release" in body["disks"][0]["initializeParams"]["sourceImage"]
    items = _items(body)
    assert items["input_notebook_path"] == "gs://bkt/in.ipynb"
    assert items["output_notebook_path"] == "gs://bkt/out/r7/result.ipynb"
    assert items["stay_alive"] == "false" and items["job_timeout"] == "3600.0"
    assert items["executor_image"] == "us-docker.pkg.dev/proj-1/repo/executor:1"
    # What vm-run will parse from the metadata is exactly what was given here.
    parsed = options.parse_parameters(items["parameters"])
    assert parsed.parameters == [["epochs", "40"], ["cmd", '"; rm -rf / #']]
    assert parsed.parameters_yaml == ["gs://bkt/params.yaml"]
    # The startup script is fixed text: no value from the command line is inside it.
    assert items["startup-script"] == launch.STARTUP_SCRIPT
    assert "rm -rf" not in items["startup-script"] and "bkt" not in items["startup-script"]


def test_startup_script_is_valid_bash_and_runs_the_container_with_gpus():
    subprocess.run(["bash", "-n"], input=launch.STARTUP_SCRIPT, text=True, check=True)
    script = launch.STARTUP_SCRIPT
    assert "nvidia-smi" in script and "cos-extensions install gpu" in script
    assert "--gpus all" in script and "python -m executor vm-run" in script
    assert "--network host" in script  # the container reaches the metadata server


def test_cos_image_and_cpu_only(gcs_env):
    args = [a for a in ARGS if a not in ("--gpu-count", "2")]
    proc = run_cli([*args, "--gpu-count", "0", "--os", "cos", "--dry-run"], gcs_env)
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)["body"]
    assert "guestAccelerators" not in body
    assert body["disks"][0]["initializeParams"]["sourceImage"].startswith("projects/cos-cloud/")


def test_launch_posts_to_the_compute_api_and_never_deletes(gcs_env):
    def handle(_rec, method, path, _headers, _body):
        return 200, {"Content-Type": "application/json"}, b'{"name": "operation-9"}'

    with Recorder(handle) as compute:
        env = dict(gcs_env, COMPUTE_API_ENDPOINT=compute.url, CLOUDSDK_AUTH_ACCESS_TOKEN="tk")
        proc = run_cli(ARGS, env)
    assert proc.returncode == 0, proc.stderr
    assert [r["method"] for r in compute.requests] == ["POST"]
    request = compute.requests[0]
    assert request["path"] == "/compute/v1/projects/proj-1/zones/us-central1-b/instances"
    assert request["headers"]["Authorization"] == "Bearer tk"
    assert json.loads(request["body"])["name"] == "notebook-r7"
    assert json.loads(proc.stdout.strip().splitlines()[-1])["operation"] == "operation-9"


def test_bad_launch_arguments_are_usage_errors(gcs_env):
    local = [a if a != "gs://bkt/in.ipynb" else "in.ipynb" for a in ARGS]
    proc = run_cli([*local, "--dry-run"], gcs_env)
    assert proc.returncode == 2 and "a VM can only read and write gs://" in proc.stdout
    image = [a if not a.startswith("us-docker") else "img; rm -rf /" for a in ARGS]
    proc = run_cli([*image, "--dry-run"], gcs_env)
    assert proc.returncode == 2 and "--image-uri" in proc.stdout
