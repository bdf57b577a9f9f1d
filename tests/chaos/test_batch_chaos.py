"""Batch prediction under GCS faults: every record ends up exactly once in the results or
the errors, and the results equal those of a run without faults."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import orjson
import pytest
from chaos_helpers import RATE, SEEDS
from faultproxy import TRANSIENT, UPLOADS, Rule

from jobcommon import storage

N = 240
BAD_EVERY = 20  # every 20th line has the wrong shape: a counted error row, not a failure
BEAM_ARGS = ["--direct_num_workers=1", "--direct_running_mode=in_memory"]


@pytest.fixture(scope="module")
def batch_job(chaos_gcs):
    """A really trained digits model exported to the chaos server, and JSON input lines."""
    from batch_helpers import train_digits_model

    from trainer.export import export_model

    model, schema, x, _ = train_digits_model(epochs=2)
    bucket = chaos_gcs.new_bucket("batch-chaos")
    lines = []
    for i in range(N):
        pixels = x[i].tolist() if i % BAD_EVERY else x[i][:10].tolist()
        lines.append(orjson.dumps({"id": i, "pixels": pixels}))
    with chaos_gcs.direct():
        export_model(model, schema, f"{bucket}/job")
        for part in range(2):
            chunk = lines[part * N // 2 : (part + 1) * N // 2]
            storage.write_bytes(f"{bucket}/in/part-{part}.jsonl", b"\n".join(chunk) + b"\n")
    return {"bucket": bucket, "model_dir": f"{bucket}/job/keras_export"}


def _predict(gcs, job: dict, out: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "batch.predict",
        "--input-paths", f"{job['bucket']}/in/*.jsonl", "--data-format", "JSON",
        "--output-path", out, "--model-dir", job["model_dir"], "--key-field", "id",
        "--batch-size", "16", "--log-format", "json", *BEAM_ARGS,
    ]  # fmt: skip
    from batch_helpers import repo_root

    env = gcs.env() | {"PYTHONPATH": repo_root(), "TF_NUM_INTRAOP_THREADS": "1"}
    return subprocess.run(
        cmd, env=env, cwd=repo_root(), capture_output=True, text=True, timeout=400
    )


def _rows(prefix: str) -> list[dict]:
    rows = []
    for path in storage.glob(prefix + "-*"):
        rows += [json.loads(ln) for ln in storage.read_text(path).splitlines() if ln.strip()]
    return rows


def _outputs(out: str) -> tuple[dict[int, dict], list[int], dict]:
    results = _rows(f"{out}/prediction.results")
    errors = _rows(f"{out}/prediction.errors")
    (stats,) = _rows(f"{out}/prediction.errors_stats")
    keys = [r["key"] for r in results]
    assert len(keys) == len(set(keys)), "a record was written twice to the results"
    error_keys = [r["key"] for r in errors]
    assert len(error_keys) == len(set(error_keys)), "a record was written twice to the errors"
    assert not set(keys) & set(error_keys)
    assert sorted(keys + error_keys) == list(range(N)), "records lost"
    assert stats["records_read"] == N
    assert stats["predictions"] == len(keys) and stats["errors"] == len(error_keys)
    assert not storage.glob(f"{out}/.tmp-*/*"), "temporary parts left behind"
    return {r["key"]: r["prediction"] for r in results}, sorted(error_keys), stats


@pytest.fixture(scope="module")
def baseline(chaos_gcs, batch_job):
    chaos_gcs.proxy.configure([])
    out = f"{batch_job['bucket']}/out-baseline"
    proc = _predict(chaos_gcs, batch_job, out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with chaos_gcs.direct():
        return _outputs(out)


@pytest.mark.parametrize("seed", SEEDS)
def test_faults_during_read_and_write_lose_and_duplicate_nothing(
    faulty_gcs, batch_job, baseline, seed
):
    expected, expected_errors, _ = baseline
    assert len(expected) == N - N // BAD_EVERY
    assert expected_errors == list(range(0, N, BAD_EVERY))
    # The first two uploads always fail, so every seed exercises the write path too.
    write_faults = Rule(rate=1.0, faults=TRANSIENT, method="POST|PUT", path=UPLOADS, limit=2)
    gcs = faulty_gcs([write_faults, Rule(rate=RATE, faults=TRANSIENT)], seed)
    out = f"{batch_job['bucket']}/out-faults-{seed}"
    started = time.monotonic()
    proc = _predict(gcs, batch_job, out)
    elapsed = time.monotonic() - started
    faulted = [(m, p) for m, p, f in gcs.proxy.log if f]
    counts = dict(gcs.proxy.counts)
    gcs.proxy.configure([])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Faults hit the input reads (Beam's GCS client) and the output writes (our storage).
    assert any(m == "GET" for m, _ in faulted), counts
    assert any(m in ("POST", "PUT") for m, _ in faulted), counts
    with gcs.direct():
        predictions, errors, stats = _outputs(out)
    assert errors == expected_errors
    assert stats["errors_by_kind"] == {"wrong_shape": len(expected_errors)}
    assert predictions.keys() == expected.keys()
    for key, prediction in predictions.items():
        assert prediction["class_id"] == expected[key]["class_id"]
        np.testing.assert_allclose(
            prediction["probabilities"], expected[key]["probabilities"], rtol=1e-5, atol=1e-6
        )
    assert elapsed < 300
