"""The embedded GCS launcher: CLI, buckets, persistence across restarts, clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from jobcommon import storage
from jobcommon.localgcs import LocalGCS


def test_data_dir_persists_across_restarts(tmp_path, monkeypatch):
    data = str(tmp_path / "store")
    with LocalGCS(data, ["keep"]) as gcs:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.endpoint)
        storage.write_text("gs://keep/a.txt", "kept")
    with LocalGCS(data, ["keep"]) as gcs:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.endpoint)
        assert storage.read_text("gs://keep/a.txt") == "kept"


def test_cli_prints_endpoint_and_stops_on_interrupt(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobcommon.localgcs", "--data-dir", str(tmp_path)]
        + ["--bucket", "bkt"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("export STORAGE_EMULATOR_HOST=http://localhost:")
        endpoint = line.strip().split("=", 1)[1]
        env = os.environ | {"STORAGE_EMULATOR_HOST": endpoint}
        subprocess.run(
            [sys.executable, "-m", "jobcommon.gsutil", "cp", __file__, "gs://bkt/t.py"],
            env=env,
            check=True,
        )
        assert os.path.isfile(tmp_path / "bkt" / "t.py")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0


def test_cli_stops_on_a_signal_sent_right_after_the_endpoint(tmp_path):
    """The stop signal can come at once (a script that only needed the URL): not missed."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobcommon.localgcs", "--data-dir", str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline().startswith("export STORAGE_EMULATOR_HOST=")
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == 0
