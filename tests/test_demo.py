"""`make demo` with reduced sizes, so the end-to-end flow cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _demo(tmp_path, *extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "STORAGE_EMULATOR_HOST"}
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "demo", "run.py"),
         "--workdir", str(tmp_path / "work"), "--output", str(tmp_path / "out"), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    headline = next(
        line for line in result.stdout.splitlines() if line.startswith("[demo] headline: ")
    )
    steps = [line for line in result.stdout.splitlines() if line.startswith("[demo]   ")]
    return json.loads(headline.split(": ", 1)[1]) | {"_steps": steps}


def test_demo_end_to_end_then_reuses_everything(tmp_path):
    first = _demo(tmp_path, "--epochs", "4")
    assert first["report_state"] == "SUCCEEDED"
    # Exactly the planted bad records are reported, and every good one is scored.
    assert first["records_failed_json"] == first["planted_bad_json"] == 5
    assert first["records_failed_tfrecord"] == first["planted_bad_tfrecord"] == 1
    assert first["records_scored"] == 359
    assert first["accuracy"] >= 0.85  # 4 epochs only; the full demo reaches >= 0.95
    for name in ("report.html", "confusion.png", "training.png", "report.ipynb.status.json"):
        assert (tmp_path / "out" / name).stat().st_size > 0, name
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Confusion" in html and "accuracy" in html

    second = _demo(tmp_path, "--epochs", "4")
    assert all("(reused)" in line for line in second["_steps"]), second["_steps"]
    assert second["export"] == first["export"]
    assert second["accuracy"] == first["accuracy"]
