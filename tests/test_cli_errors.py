"""A CLI turns bad paths and missing credentials into one line naming the input."""

from __future__ import annotations

import json
import subprocess
import sys


def _gcs_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobcommon.gsutil", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _assert_one_line(result: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    text = result.stdout + result.stderr
    assert result.returncode == code, text
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def test_malformed_uri(gcs_env):
    env = gcs_env | {"LOG_FORMAT": "text"}
    result = _gcs_cli(["cat", "gs://Not_A_Bucket!/x.json"], env)
    _assert_one_line(result, 2, "gs://Not_A_Bucket!/x.json", "bucket name")


def test_missing_object_text_and_json(gcs_env, bucket):
    uri = f"{bucket}/missing/file.ipynb"
    _assert_one_line(_gcs_cli(["cat", uri], gcs_env | {"LOG_FORMAT": "text"}), 3, uri, "not found")
    line = _assert_one_line(_gcs_cli(["cat", uri], gcs_env | {"LOG_FORMAT": "json"}), 3, uri)
    record = json.loads(line)
    # Vertex shows stderr as ERROR: errors must go to stdout with their own severity.
    assert record["severity"] == "ERROR"
    assert uri in record["message"]


def test_missing_credentials(tmp_path, gcs_env):
    env = {k: v for k, v in gcs_env.items() if k not in ("STORAGE_EMULATOR_HOST",)}
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    env |= {
        "HOME": str(tmp_path),
        "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
        # Point the GCE metadata probe at a closed loopback port so it fails fast.
        "GCE_METADATA_HOST": "127.0.0.1:9",
        "GCE_METADATA_IP": "127.0.0.1:9",
        "LOG_FORMAT": "text",
    }
    result = _gcs_cli(["cat", "gs://some-bucket/data.json"], env)
    _assert_one_line(
        result,
        5,
        "gs://some-bucket/data.json",
        "gcloud auth application-default login",
        "GOOGLE_APPLICATION_CREDENTIALS",
    )
