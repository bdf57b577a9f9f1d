"""One options type for every executor command: flags, defaults, checks, VM metadata."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from executor_helpers import REPO, notebook, run_cli, write

from executor import cli, launch, options
from executor.options import RunOptions
from jobcommon import storage

# Every run option, each set to something other than its default.
EVERY_OPTION = [
    "-p", "epochs", "40", "-p", "cmd", '"; rm -rf / #',
    "-r", "raw", "it's `id`", "-f", "gs://bkt/a.yaml", "-f", "gs://bkt/b.yaml",
    "-y", "lr: 0.5\nname: x y", "-b", "ZXBvY2hzOiAz",
    "--allow-unknown-params", "--inject-input-path", "--inject-output-path", "--inject-paths",
    "-k", "python3", "-l", "python", "--cwd", "/work dir",
    "--execution-timeout", "30", "--job-timeout", "3600", "--start-timeout", "90",
    "--mirror-interval", "5", "--upload-deadline", "45",
    "--prepare-only", "--report-mode", "--log-output", "--no-progress-bar",
    "--stdout-file", "gs://bkt/out.txt", "--stderr-file", "gs://bkt/err.txt",
    "--run-id", "r7",
]  # fmt: skip
VM = [
    "--zone", "us-central1-b", "--project", "proj-1",
    "--image-uri", "us-docker.pkg.dev/proj-1/repo/executor:1",
]  # fmt: skip


def _parse(command: list[str]) -> RunOptions:
    return RunOptions.from_args(cli.build_parser().parse_args(command))


def test_every_run_option_travels_from_launch_to_vm_run_unchanged(bucket, tmp_path):
    # launch checks the run before it builds the request: the input and -f files must exist.
    every = [a.replace("gs://bkt", bucket) for a in EVERY_OPTION]
    nb = notebook('epochs = 1\ncmd = ""\nlr = 0.1\nname = ""\n', "print(epochs)")
    storage.upload_file(write(nb, str(tmp_path / "in.ipynb")), f"{bucket}/in.ipynb")
    storage.write_text(f"{bucket}/a.yaml", "epochs: 2\n")
    storage.write_text(f"{bucket}/b.yaml", "lr: 0.2\n")
    ran = _parse(["run", f"{bucket}/in.ipynb", f"{bucket}/out.ipynb", *every])
    defaults = RunOptions()
    # The list above covers every field: a new option must be added to it (and so travel).
    untested = [
        f.name for f in dataclasses.fields(RunOptions)
        if getattr(ran, f.name) == getattr(defaults, f.name)
    ]  # fmt: skip
    assert untested == []
    args = cli.build_parser().parse_args(
        ["launch", f"{bucket}/in.ipynb", f"{bucket}/out/{{run_id}}.ipynb", *VM, *every]
    )
    _, body = launch.build_request(args)
    items = {i["key"]: i["value"] for i in body["metadata"]["items"]}
    assert all(isinstance(v, str) for v in items.values())  # metadata values are text
    on_vm = RunOptions.from_metadata(items.get)
    assert on_vm == ran


def test_metadata_holds_only_what_differs_from_the_defaults():
    assert RunOptions().to_metadata() == {}
    assert RunOptions.from_metadata({}.get) == RunOptions()


def test_dlvm_parameters_file_key_is_merged_first():
    got = RunOptions.from_metadata(
        {"parameters_file": " gs://b/p.yaml ", "parameters": "-f gs://b/q.yaml -p a 1"}.get
    )
    assert got.parameters_file == ("gs://b/p.yaml", "gs://b/q.yaml")
    assert got.parameters == (("a", "1"),)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("job_timeout", "soon", "must be a number of seconds"),
        ("job_timeout", "-5", "must be more than 0 seconds"),
        ("upload_deadline", "0", "must be more than 0 seconds"),
        ("allow_unknown_params", "maybe", "must be true or false"),
    ],
)
def test_bad_metadata_values_are_usage_errors(key, value, message):
    with pytest.raises(options.UsageError, match=message):
        RunOptions.from_metadata({key: value}.get)


def test_launch_checks_seconds_like_run(gcs_env):
    for command in (["run", "a.ipynb", "b.ipynb"], ["launch", "gs://b/a.ipynb", "gs://b/o.ipynb"]):
        proc = run_cli([*command, "--job-timeout", "-1"], gcs_env)
        assert proc.returncode == 2
        assert "--job-timeout" in proc.stderr and "more than 0 seconds" in proc.stderr


def test_mirror_interval_has_a_floor_of_one_second():
    assert RunOptions(mirror_interval=0.2).mirror_interval == options.MIN_MIRROR_INTERVAL


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["run", "--help"], ["run", "--job-timeout", "x", "a.ipynb", "b.ipynb"],
     ["launch", "--help"], ["batch", "--help"]],
    ids=["help", "run-help", "flag-error", "launch-help", "batch-help"],
)  # fmt: skip
def test_help_and_flag_errors_load_no_notebook_machinery(argv):
    probe = (
        "import sys\n"
        "from executor import cli\n"
        "try:\n"
        f"    cli.main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('papermill', 'nbformat', 'nbconvert', 'jupyter_client', 'nbclient',"
        " 'requests') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert "HEAVY []" in proc.stderr, proc.stderr[-2000:]


def test_version_names_executor_and_papermill():
    proc = subprocess.run(
        [sys.executable, "-m", "executor", "--version"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0
    assert proc.stdout.startswith("executor ") and "papermill 2." in proc.stdout
