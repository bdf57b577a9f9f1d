""".ci/run: the test suite then the images, a closing summary, non-zero when either fails.

`make` is replaced by a script on PATH that prints what the real targets would and exits as
told: running the real suite and image build here would take most of an hour.
"""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE_MAKE = """#!/usr/bin/env bash
echo "make $* FRESH=${FRESH:-} KEEP_IMAGES=${KEEP_IMAGES:-}" >>"$FAKE_CALLS"
case "$1" in
  test) printf '%b\\n' "$FAKE_TEST_OUTPUT"; exit "$FAKE_TEST_RC" ;;
  images) printf '%b\\n' "$FAKE_IMAGES_OUTPUT"; exit "$FAKE_IMAGES_RC" ;;
esac
exit 99
"""
PASSED = "tests/test_a.py ...\n========== 3 passed, 1 warning in 12.34s =========="
NO_TESTS = "========== no tests ran in 0.01s =========="
IMAGES_OK = (
    "[images 12:00:00] step build-trainer passed in 100 s\n"
    "[images 12:02:00] step smoke-trainer passed in 9 s"
)
IMAGES_BAD = "[images 12:00:00] step build-trainer FAILED (exit 1) after 3 s"


def ci_run(tmp_path, test_out, test_rc, images_out=IMAGES_OK, images_rc=0, steps=None):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    make = bin_dir / "make"
    make.write_text(FAKE_MAKE)
    make.chmod(make.stat().st_mode | stat.S_IEXEC)
    env = os.environ | {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_CALLS": str(tmp_path / "calls"),
        "FAKE_TEST_OUTPUT": test_out,
        "FAKE_TEST_RC": str(test_rc),
        "FAKE_IMAGES_OUTPUT": images_out,
        "FAKE_IMAGES_RC": str(images_rc),
        "CI_LOG_DIR": str(tmp_path / "logs"),
    }
    if steps is not None:
        env["CI_STEPS"] = steps
    (tmp_path / "logs").mkdir(exist_ok=True)
    proc = subprocess.run(
        ["bash", os.path.join(REPO, ".ci", "run")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
    return proc, calls


def test_runs_the_tests_then_the_images_from_scratch_and_prints_pytests_closing_line(tmp_path):
    proc, calls = ci_run(tmp_path, PASSED, 0)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert calls == ["make test FRESH= KEEP_IMAGES=", "make images FRESH=1 KEEP_IMAGES=0"]
    assert "3 passed, 1 warning in 12.34s" in proc.stdout.splitlines()[-3]
    assert "make images exited 0" in proc.stdout
    assert "2 steps passed, 0 failed" in proc.stdout
    assert proc.stdout.rstrip().endswith("passed")


@pytest.mark.parametrize("make_rc", [2, 5, 0], ids=["make-reports-2", "exit-5", "exit-0"])
def test_no_tests_collected_is_a_failure(tmp_path, make_rc):
    proc, _ = ci_run(tmp_path, NO_TESTS, make_rc, steps="test")
    assert proc.returncode != 0
    assert "no tests ran" in proc.stdout
    assert "pytest collected no tests" in proc.stderr


def test_failing_tests_fail_ci_and_the_images_still_run(tmp_path):
    out = "========== 1 failed, 2 passed in 3.00s =========="
    proc, calls = ci_run(tmp_path, out, 2)
    assert proc.returncode != 0
    assert calls[-1].startswith("make images")
    assert "1 failed, 2 passed in 3.00s" in proc.stdout
    assert "FAILED" in proc.stdout.splitlines()[-1]


def test_a_failed_image_step_fails_ci_even_when_the_tests_pass(tmp_path):
    proc, _ = ci_run(tmp_path, PASSED, 0, images_out=IMAGES_BAD, images_rc=2)
    assert proc.returncode != 0
    assert "make images exited 2" in proc.stdout
    assert "0 steps passed, 1 failed" in proc.stdout
    assert "FAILED" in proc.stdout.splitlines()[-1]
