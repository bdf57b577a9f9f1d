"""cloudbuild.yaml: tests gate the builds, each image is built, tagged, pushed and listed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("trainer", "batch", "executor")
REGISTRY = "${_REGION}-docker.pkg.dev/$PROJECT_ID/${_REPOSITORY}/"
# Substitutions Cloud Build fills in itself (for every build, or for triggered builds).
BUILTINS = {
    "PROJECT_ID",
    "PROJECT_NUMBER",
    "BUILD_ID",
    "LOCATION",
    "COMMIT_SHA",
    "SHORT_SHA",
    "REVISION_ID",
    "REPO_NAME",
    "REPO_FULL_NAME",
    "BRANCH_NAME",
    "TAG_NAME",
    "REF_NAME",
    "TRIGGER_NAME",
    "TRIGGER_BUILD_CONFIG_PATH",
    "SERVICE_ACCOUNT_EMAIL",
    "SERVICE_ACCOUNT",
}
# $NAME or ${NAME...}, but not $$NAME (an escaped dollar for the step's own shell).
VARIABLE = re.compile(r"(?<!\$)\$(?:\{([A-Za-z_][A-Za-z0-9_]*)|([A-Za-z_][A-Za-z0-9_]*))")


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())


@pytest.fixture(scope="module")
def steps(config) -> dict[str, dict]:
    by_id = {s["id"]: s for s in config["steps"]}
    assert len(by_id) == len(config["steps"]), "step ids must be unique"
    return by_id


def strings(node):
    """Every string inside a parsed YAML tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def variables(text: str) -> set[str]:
    return {a or b for a, b in VARIABLE.findall(text)}


def build_step(steps: dict, target: str) -> dict:
    matches = [
        s
        for s in steps.values()
        if s.get("args", [None])[0] == "build" and f"--target={target}" in s["args"]
    ]
    assert len(matches) == 1, f"expected one build step for {target}"
    return matches[0]


def test_every_substitution_used_has_a_default(config):
    defaults = config.get("substitutions", {})
    used = set()
    for text in strings({k: v for k, v in config.items() if k != "substitutions"}):
        used |= variables(text)
    for value in defaults.values():
        used |= variables(value)
    user_defined = {v for v in used if v.startswith("_")}
    missing = user_defined - set(defaults)
    assert not missing, f"substitutions without a default: {sorted(missing)}"
    unknown = {v for v in used if not v.startswith("_")} - BUILTINS
    assert not unknown, f"not Cloud Build substitutions (escape shell variables as $$): {unknown}"
    # Defaults that refer to other substitutions need dynamic substitutions.
    if any(variables(v) for v in defaults.values()):
        assert config["options"]["dynamicSubstitutions"] is True


def test_variable_scanner_sees_what_it_should():
    # Guards the test above: it must find both spellings and skip escaped shell variables.
    assert variables("${_REGION}-x/$PROJECT_ID/$${target} ${SHORT_SHA:-$BUILD_ID}") == {
        "_REGION",
        "PROJECT_ID",
        "SHORT_SHA",
        "BUILD_ID",
    }


def test_tag_is_the_commit_or_else_the_build_id(config):
    assert config["substitutions"]["_TAG"] == "${SHORT_SHA:-$BUILD_ID}"


def test_unit_tests_run_before_any_image_is_built(steps):
    tests = steps["unit-tests"]
    script = " ".join(strings(tests))
    assert "pytest" in script
    assert "requirements/dev.txt" in script
    for target in TARGETS:
        assert "unit-tests" in build_step(steps, target)["waitFor"]


def test_the_three_images_build_in_parallel(steps):
    build_ids = {build_step(steps, t)["id"] for t in TARGETS}
    assert len(build_ids) == 3
    for target in TARGETS:
        step = build_step(steps, target)
        assert "waitFor" in step, "without waitFor, steps run one after another"
        assert not set(step["waitFor"]) & build_ids, f"{target} waits for another build"


@pytest.mark.parametrize("target", TARGETS)
def test_each_image_is_built_tagged_pushed_and_listed(config, steps, target: str):
    image = REGISTRY + target
    step = build_step(steps, target)
    args = step["args"]
    assert step["name"].startswith("gcr.io/cloud-builders/docker")
    assert "--file=docker/Dockerfile" in args
    assert args[-1] == "."
    tags = {a.split("=", 1)[1] for a in args if a.startswith("--tag=")}
    assert tags == {f"{image}:${{_TAG}}", f"{image}:latest"}
    assert f"--cache-from={image}:latest" in args
    # With BuildKit, --cache-from only works if the cached image carries inline cache metadata.
    assert "--build-arg=BUILDKIT_INLINE_CACHE=1" in args
    assert "--build-arg=BASE_IMAGE=${_BASE_IMAGE}" in args

    pushes = [
        s for s in steps.values() if s.get("args", [None])[0] == "push" and image in s["args"]
    ]
    assert len(pushes) == 1, f"expected one push step for {image}"
    assert "--all-tags" in pushes[0]["args"]
    assert step["id"] in pushes[0]["waitFor"]

    assert f"{image}:${{_TAG}}" in config["images"]
    assert f"{image}:latest" in config["images"]

    cache = " ".join(strings(steps["pull-cache"]))
    assert "docker pull" in cache and "|| true" in cache
    assert step_waits_for(step, "pull-cache")


def step_waits_for(step: dict, other: str) -> bool:
    return other in step.get("waitFor", [])


def test_build_args_are_declared_in_the_dockerfile(steps):
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    declared = set(re.findall(r"^ARG\s+([A-Z_][A-Z0-9_]*)", dockerfile, re.MULTILINE))
    declared.add("BUILDKIT_INLINE_CACHE")  # read by BuildKit itself
    for target in TARGETS:
        stage = re.search(rf"^FROM\s+\S+\s+AS\s+{target}$", dockerfile, re.MULTILINE)
        assert stage, f"docker/Dockerfile has no {target} target"
        for arg in build_step(steps, target)["args"]:
            if arg.startswith("--build-arg="):
                name = arg.split("=", 2)[1]
                assert name in declared, f"--build-arg {name} is not an ARG of the Dockerfile"


def test_machine_and_timeout_fit_tensorflow_images(config):
    assert config["options"]["machineType"] in {"E2_HIGHCPU_8", "E2_HIGHCPU_32", "N1_HIGHCPU_32"}
    assert config["options"].get("diskSizeGb", 100) >= 100
    timeout = config["timeout"]
    assert timeout.endswith("s") and int(timeout[:-1]) >= 3600
    assert "DOCKER_BUILDKIT=1" in config["options"]["env"]


def test_dataflow_default_image_is_the_one_cloud_build_pushes(config):
    # `batch.predict --runner DataflowRunner` without --sdk_container_image uses this image.
    from batch.predict import DEFAULT_IMAGE_TEMPLATE

    pushed = DEFAULT_IMAGE_TEMPLATE.format(location="${_REGION}", project="$PROJECT_ID").replace(
        "/cloud-ml-jobs/", "/${_REPOSITORY}/"
    )
    assert pushed in config["images"]
    assert config["substitutions"]["_REPOSITORY"] == "cloud-ml-jobs"
