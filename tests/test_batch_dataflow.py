"""What the job would submit to Dataflow: pipeline options and the job graph (no live run)."""

from __future__ import annotations

import json

import pytest

from batch import dataflow, options
from batch.job import load_signature
from batch.pipeline import build_pipeline
from jobcommon.errors import UsageError
from tests.batch_helpers import trained_fixture  # noqa: F401  (the session's trained model)


def _build(argv: list[str]):
    import apache_beam as beam

    args, beam_args = options.build_parser().parse_known_args(argv)
    opts = options.resolve(args)
    pipeline_options = dataflow.pipeline_options(opts, beam_args)
    info = load_signature(opts)
    pipeline = beam.Pipeline(options=pipeline_options)
    build_pipeline(pipeline, opts.with_run_dir(opts.output_path), info)
    return pipeline_options, pipeline


def test_dataflow_options_and_job_graph(trained):
    model_dir = trained["model_dir"]
    bucket = model_dir.split("/")[2]
    pipeline_options, pipeline = _build([
        "--input-paths", f"gs://{bucket}/in/*.tfrecord.gz",
        "--data-format", "TF_RECORD_GZIP",
        "--output-path", f"gs://{bucket}/out",
        "--model-dir", model_dir,
        "--max-workers", "7",
        "--runner", "DataflowRunner",
        "--project", "demo-project",
        "--region", "europe-west4",
        "--machine_type", "n1-standard-8",
        "--accelerator", "nvidia-tesla-t4:1",
        "--no_auth",  # no credentials here; the options are checked, nothing is submitted
    ])  # fmt: skip
    opts = pipeline_options.get_all_options()
    assert opts["runner"] == "DataflowRunner"
    assert opts["sdk_container_image"] == (
        "europe-docker.pkg.dev/demo-project/cloud-ml-jobs/batch:latest"
    )
    assert opts["max_num_workers"] == 7
    assert opts["project"] == "demo-project" and opts["region"] == "europe-west4"
    assert opts["temp_location"] == f"gs://{bucket}/tmp/batch-predict"
    assert opts["staging_location"] == f"gs://{bucket}/tmp/batch-predict/staging"
    assert opts["machine_type"] == "n1-standard-8"
    assert opts["sdk_location"] == "container"
    assert opts["dataflow_service_options"] == [
        "worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver"
    ]

    from apache_beam.runners.dataflow.internal import apiclient
    from apache_beam.transforms import environments

    # The environment DataflowRunner puts in the job it submits (its own construction).
    image = apiclient.get_container_image_from_options(pipeline_options)
    env = environments.DockerEnvironment.from_container_image(image)
    proto = pipeline.to_runner_api(default_environment=env)
    names = {t.unique_name for t in proto.components.transforms.values()}
    for step in ("ReadRecords", "SpreadRecords", "DecodeRecords", "RunInference",
                 "FormatResults", "WriteResults", "WriteErrors", "WriteStats"):  # fmt: skip
        assert step in names, step
    from apache_beam.portability.api import beam_runner_api_pb2

    images = {
        beam_runner_api_pb2.DockerPayload.FromString(e.payload).container_image
        for e in proto.components.environments.values()
        if e.urn == "beam:env:docker:v1"
    }
    assert images == {"europe-docker.pkg.dev/demo-project/cloud-ml-jobs/batch:latest"}
    pardo_envs = {
        t.environment_id for t in proto.components.transforms.values() if t.environment_id
    }
    assert pardo_envs, "transforms must run in the batch image's environment"


def test_job_spec_settings_reach_dataflow(trained, tmp_path):
    model_dir = trained["model_dir"]
    bucket = model_dir.split("/")[2]
    spec = tmp_path / "job.json"
    spec.write_text(
        '{"jobId": "Digits_batch_2026", "predictionInput": {"dataFormat": "JSON", '
        f'"inputPaths": ["gs://{bucket}/in/*.json"], "outputPath": "gs://{bucket}/o", '
        f'"uri": "{model_dir}", "maxWorkerCount": "4", "region": "us-east1", '
        '"modelName": "projects/p/models/m"}}'
    )
    pipeline_options, _ = _build(["--job-spec", str(spec), "--runner", "DataflowRunner",
                                  "--project", "demo-proj", "--no_auth"])  # fmt: skip
    opts = pipeline_options.get_all_options()
    assert opts["max_num_workers"] == 4 and opts["region"] == "us-east1"
    assert opts["job_name"] == "digits-batch-2026"
    assert opts["sdk_container_image"].startswith("us-docker.pkg.dev/demo-proj/")


def test_dataflow_needs_gcs_paths_and_a_project(trained, tmp_path):
    parser = options.build_parser()
    base = ["--input-paths", str(tmp_path / "a.json"), "--data-format", "JSON",
            "--output-path", "gs://bkt/out", "--model-dir", trained["model_dir"],
            "--runner", "DataflowRunner"]  # fmt: skip
    for extra, message in (([], "--project"), (["--project", "p"], "gs:// paths")):
        args, beam_args = parser.parse_known_args(base + extra)
        with pytest.raises(UsageError, match=message):
            dataflow.pipeline_options(options.resolve(args), beam_args)


def test_vertex_body_settings_reach_dataflow(trained, tmp_path):
    model_dir = trained["model_dir"]
    bucket = model_dir.split("/")[2]
    spec = tmp_path / "job.json"
    spec.write_text(
        json.dumps(
            {
                "displayName": "Digits_vertex_batch",
                "unmanagedContainerModel": {"artifactUri": model_dir},
                "inputConfig": {
                    "instancesFormat": "tf-record-gzip",
                    "gcsSource": {"uris": [f"gs://{bucket}/in/*.tfrecord.gz"]},
                },
                "outputConfig": {
                    "predictionsFormat": "jsonl",
                    "gcsDestination": {"outputUriPrefix": f"gs://{bucket}/vout"},
                },
                "dedicatedResources": {
                    "machineSpec": {"machineType": "n1-standard-4"},
                    "maxReplicaCount": 6,
                },
            }
        )  # fmt: skip
    )
    pipeline_options, pipeline = _build(
        ["--job-spec", str(spec), "--runner", "DataflowRunner", "--project", "demo-proj",
         "--region", "us-east1", "--no_auth"]
    )  # fmt: skip
    opts = pipeline_options.get_all_options()
    assert opts["max_num_workers"] == 6 and opts["job_name"] == "digits-vertex-batch"
    assert opts["temp_location"] == f"gs://{bucket}/tmp/batch-predict"
    assert opts["sdk_container_image"] == "us-docker.pkg.dev/demo-proj/cloud-ml-jobs/batch:latest"
