"""One logging set-up: Cloud Logging JSON lines off a terminal, readable text on one."""

from __future__ import annotations

import io
import json
import subprocess
import sys

from jobcommon.logs import resolve_format

SCRIPT = """
import logging, sys
from jobcommon.logs import setup_logging
setup_logging("trainer", "INFO", sys.argv[1], {"model": "mlp"})
logging.getLogger("trainer.task").info("epoch %d done", 3)
logging.getLogger("trainer.task").error("bad shard gs://b/x")
logging.getLogger("trainer.task").debug("hidden")
logging.getLogger("trainer.task").info("metrics", extra={"json_fields": {"accuracy": 0.97}})
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("trainer.task").exception("step failed")
"""


def _run(fmt: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-c", SCRIPT, fmt],
        env=os.environ | env_extra,
        capture_output=True,
        text=True,
        check=True,
    )


def test_json_lines_on_stdout_with_labels():
    result = _run("json", {"CLOUD_ML_JOB_ID": "job-42", "CLOUD_ML_TRIAL_ID": "7"})
    assert result.stderr == ""
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["severity"] for r in records] == ["INFO", "ERROR", "INFO", "ERROR"]
    assert records[0]["message"] == "epoch 3 done"
    assert records[0]["logging.googleapis.com/sourceLocation"]["line"] == 5
    assert records[0]["time"].endswith("+00:00")
    assert records[2]["accuracy"] == 0.97  # json_fields land at the top, as Cloud Logging reads
    assert "ZeroDivisionError" in records[3]["message"]  # the traceback stays in the entry
    labels = records[1]["logging.googleapis.com/labels"]
    assert labels["component"] == "trainer"
    assert labels["job_id"] == "job-42"
    assert labels["trial_id"] == "7"
    assert labels["model"] == "mlp"


def test_text_lines_on_stderr():
    result = _run("text", {})
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert "INFO" in lines[0] and "epoch 3 done" in lines[0]
    assert "ERROR" in lines[1]
    assert "metrics" in lines[2] and "step failed" in lines[3] and "ZeroDivisionError" in lines[-1]
    assert not any("hidden" in line for line in lines)  # below --log-level


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_is_text_on_a_terminal_and_json_elsewhere():
    assert resolve_format("auto", _Tty()) == "text"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("json", _Tty()) == "json"
