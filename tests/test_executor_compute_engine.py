"""The GPU / machine-type table and the instances.insert body of executor.compute_engine."""

from __future__ import annotations

import json

import pytest
from executor_helpers import Recorder
from test_executor_vm import NAME, PROJECT, ZONE, metadata_server

from executor import compute_engine as ce
from executor.compute_engine_metadata import MetadataClient
from jobcommon.errors import JobError, MetadataError, UsageError


@pytest.mark.parametrize(
    ("machine", "gpu", "count", "attached"),
    [
        ("n1-standard-8", "t4", 1, [("nvidia-tesla-t4", 1)]),
        ("n1-highmem-16", "t4", 4, [("nvidia-tesla-t4", 4)]),
        ("n1-standard-8", "v100", 1, [("nvidia-tesla-v100", 1)]),
        ("n1-standard-16", "p100", 1, [("nvidia-tesla-p100", 1)]),
        ("custom-8-30720", "p4", 2, [("nvidia-tesla-p4", 2)]),
        ("n1-standard-8", "t4", 0, []),
        ("g2-standard-8", "l4", 1, []),  # the GPUs come with accelerator-optimized types
        ("g2-standard-24", "l4", 2, []),
        ("a2-highgpu-4g", "a100", 4, []),
        ("a2-ultragpu-1g", "a100-80gb", 1, []),
        ("a3-highgpu-8g", "h100", 8, []),
    ],
)
def test_gpus_that_fit_their_machine_type(machine, gpu, count, attached):
    got = ce.check_accelerator(machine, gpu, count)
    assert [(a["acceleratorType"], a["acceleratorCount"]) for a in got] == attached


@pytest.mark.parametrize(
    ("machine", "gpu", "count", "message"),
    [
        ("n1-standard-8", "l4", 1, "needs a machine type of the G2 series"),
        ("n1-standard-8", "a100", 1, "needs a machine type of the A2 series"),
        ("n1-standard-8", "h100", 1, "needs a machine type of the A3 series"),
        ("e2-standard-8", "t4", 1, "attaches only to N1 machine types"),
        ("n2-standard-8", "v100", 1, "attaches only to N1 machine types"),
        ("g2-standard-8", "t4", 1, "comes with 1 x l4, not 1 x t4"),
        ("a2-highgpu-2g", "a100", 1, "comes with 2 x a100, not 1 x a100"),
        ("a3-highgpu-8g", "h100", 0, "always comes with 8 h100"),
        ("n1-standard-8", "t4", 3, "--gpu-count 3: a VM takes 1, 2, 4 t4 GPUs"),
        ("n1-standard-8", "v100", 16, "--gpu-count 16"),
        ("n1-standard-32", "v100", 1, "has 32 vCPUs; with 1 v100 GPU(s) the most is 12"),
        ("n1-standard-8", "k80", 1, "--gpu-type 'k80'"),
    ],
)
def test_gpus_that_do_not_fit_are_usage_errors(machine, gpu, count, message):
    with pytest.raises(UsageError) as err:
        ce.check_accelerator(machine, gpu, count)
    assert message in str(err.value)


def test_every_gpu_has_a_machine_type_it_fits():
    for gpu, spec in ce.GPUS.items():
        if spec.series == "n1":
            ce.check_accelerator("n1-standard-4", gpu, 1)
        else:
            machine, count = next((m, n) for m, (g, n) in ce.MACHINE_GPUS.items() if g == gpu)
            assert ce.check_accelerator(machine, gpu, count) == []


def _body(**overrides):
    kwargs = dict(
        name="notebook-r1", zone="us-central1-b", machine_type="n1-standard-8",
        accelerators=ce.check_accelerator("n1-standard-8", "t4", 1),
        image_project=ce.DEFAULT_IMAGE_PROJECT, image_family=ce.DEFAULT_IMAGE_FAMILY,
        boot_disk_gb=100, metadata={"k": "v"},
    )  # fmt: skip
    return ce.instance_body(**(kwargs | overrides))


def test_spot_vm_is_deleted_on_preemption_and_standard_is_not_spot():
    assert _body(spot=True)["scheduling"] == {
        "onHostMaintenance": "TERMINATE",
        "automaticRestart": False,
        "provisioningModel": "SPOT",
        "instanceTerminationAction": "DELETE",
    }
    assert _body()["scheduling"] == {"onHostMaintenance": "TERMINATE", "automaticRestart": False}


def test_network_subnet_and_external_ip():
    assert _body()["networkInterfaces"] == [{
        "network": "global/networks/default",
        "accessConfigs": [{"type": "ONE_TO_ONE_NAT", "name": "External NAT"}],
    }]  # fmt: skip
    assert _body(network="ml-net", subnet="ml-sub", external_ip=False)["networkInterfaces"] == [
        {
            "network": "global/networks/ml-net",
            "subnetwork": "regions/us-central1/subnetworks/ml-sub",
        }
    ]
    full = "projects/host/regions/us-central1/subnetworks/shared"
    assert _body(subnet=full)["networkInterfaces"][0]["subnetwork"] == full


def test_image_gpus_account_and_labels():
    body = _body(service_account="nb@p.iam.gserviceaccount.com", labels={"team": "ml"})
    assert body["disks"][0]["initializeParams"]["sourceImage"] == (
        "projects/deeplearning-platform-release/global/images/family/"
        "common-cu128-ubuntu-2204-nvidia-570"
    )
    assert body["guestAccelerators"] == [{
        "acceleratorType": "zones/us-central1-b/acceleratorTypes/nvidia-tesla-t4",
        "acceleratorCount": 1,
    }]  # fmt: skip
    assert body["serviceAccounts"] == [{
        "email": "nb@p.iam.gserviceaccount.com",
        "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
    }]  # fmt: skip
    assert body["labels"] == {"app": "notebook-executor", "team": "ml"}
    assert "guestAccelerators" not in _body(machine_type="g2-standard-8", accelerators=[])


@pytest.mark.parametrize("text", ["Team=ml", "team", "team=ML", "9x=1", "a=" + "x" * 64])
def test_bad_labels_are_usage_errors(text):
    with pytest.raises(UsageError, match="--labels"):
        ce.parse_labels([text])


def _flaky(codes: list[int]) -> Recorder:
    """Answers with the next code of ``codes`` (the last one from then on)."""

    def handle(rec, method, path, headers, body):
        code = codes[min(len(rec.requests), len(codes)) - 1]
        payload = {"name": "operation-1"} if code < 400 else {"error": {"message": f"c{code}"}}
        return code, {"Content-Type": "application/json"}, json.dumps(payload).encode()

    return Recorder(handle)


def test_calls_retry_503_and_429_then_succeed(monkeypatch):
    with _flaky([503, 429, 200]) as server:
        monkeypatch.setenv("COMPUTE_API_ENDPOINT", server.url)
        operation = ce.delete_instance("proj-1", "us-central1-b", "notebook-r1", "tk")
    assert operation == {"name": "operation-1"}
    assert [r["method"] for r in server.requests] == ["DELETE"] * 3
    assert server.requests[0]["path"] == (
        "/compute/v1/projects/proj-1/zones/us-central1-b/instances/notebook-r1"
    )
    assert server.requests[0]["headers"]["Authorization"] == "Bearer tk"


def test_a_denied_call_is_not_retried_and_says_which_role(monkeypatch):
    with _flaky([403]) as server:
        monkeypatch.setenv("COMPUTE_API_ENDPOINT", server.url)
        with pytest.raises(JobError, match="roles/compute.instanceAdmin.v1"):
            ce.insert_instance("proj-1", "us-central1-b", {"name": "notebook-r1"}, "tk")
    assert len(server.requests) == 1


def test_the_metadata_client_reads_preemption_and_retries_5xx():
    with metadata_server({"input_notebook_path": "gs://b/in.ipynb"}) as md:
        client = MetadataClient(f"http://{md.host}/computeMetadata/v1")
        assert client.preempted() is False
        md.values["instance/preempted"] = "TRUE"
        assert client.preempted() is True
        assert client.attribute("input_notebook_path") == "gs://b/in.ipynb"
        assert client.attribute("nope") is None
        assert client.instance() == (PROJECT, ZONE, NAME)
    with _flaky([500, 200]) as flaky:
        assert MetadataClient(flaky.url).get("instance/name") == '{"name": "operation-1"}'
    with _flaky([500]) as down:
        with pytest.raises(MetadataError, match="HTTP 500"):
            MetadataClient(down.url, attempts=2).get("instance/name")
        # A shutdown must not hang on it: an unanswered preemption question is "no".
        assert MetadataClient(down.url, attempts=2).preempted() is False
