"""``python -m executor batch``: many parameter sets, 2 kernels at once, one metrics table."""

from __future__ import annotations

import csv
import io
import json

import pytest
from executor_helpers import TRAIN_CELLS, TRAIN_PARAMS, notebook, run_cli, write

from executor import exitcodes, sweep
from jobcommon import storage
from jobcommon.errors import UsageError


def test_batch_of_8_runs_with_2_kernels_writes_table_and_plot(bucket, gcs_env, tmp_path):
    nb = notebook(TRAIN_PARAMS, "assert lr > 0, f'lr must be positive, got {lr}'", *TRAIN_CELLS)
    storage.upload_file(write(nb, str(tmp_path / "train.ipynb")), f"{bucket}/train.ipynb")
    runs = [{"epochs": e, "lr": lr} for e in (1, 2, 3) for lr in (0.5, 1)] + [
        {"epochs": 4, "lr": 1, "name": "last"},
        {"epochs": 4, "lr": -1},  # fails in the notebook: reported, the others still run
    ]
    storage.write_text(f"{bucket}/runs.json", json.dumps(runs))
    proc = run_cli(
        ["batch", f"{bucket}/train.ipynb", f"{bucket}/sweep", "--runs", f"{bucket}/runs.json",
         "-j", "2", "-p", "use_gpu", "True"],
        gcs_env, timeout=400,
    )  # fmt: skip
    assert proc.returncode == exitcodes.EXIT_FAILED, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = list(csv.DictReader(io.StringIO(storage.read_text(f"{bucket}/sweep/metrics.csv"))))
    assert [r["run"] for r in rows] == [f"run-{i:03d}" for i in range(8)]
    assert [r["state"] for r in rows] == ["SUCCEEDED"] * 7 + ["FAILED"]
    for row, run in zip(rows[:7], runs[:7], strict=True):
        assert int(row["epochs"]) == run["epochs"] and float(row["lr"]) == run["lr"]
        assert float(row["glued.accuracy"]) == round(
            min(0.99, 0.5 + run["epochs"] * run["lr"] / 10), 4
        )
        assert row["use_gpu"] == "True" and storage.exists(row["output"])
    assert rows[6]["glued.name"] == "last"
    assert rows[7]["exit_code"] == str(exitcodes.EXIT_FAILED) and rows[7]["glued.accuracy"] == ""
    markdown = storage.read_text(f"{bucket}/sweep/metrics.md")
    assert markdown.count("\n") == 2 + 8 and "| run-007 | FAILED |" in markdown
    assert storage.read_bytes(f"{bucket}/sweep/summary.png")[:8] == b"\x89PNG\r\n\x1a\n"
    # Two kernels at once: some runs overlapped in time.
    spans = []
    for row in rows:
        status = json.loads(storage.read_text(row["output"] + ".status.json"))
        spans.append((status["started_at"], status["ended_at"]))
    spans.sort()
    assert any(spans[i + 1][0] < spans[i][1] for i in range(len(spans) - 1))


def test_grid_csv_and_list_specs(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("grid:\n  lr: [0.1, 0.01]\n  epochs: [5, 10, 20]\n")
    runs = sweep.load_runs(str(grid))
    assert len(runs) == 6
    assert {(r["lr"].value, r["epochs"].value) for r in runs} == {
        (lr, e) for lr in (0.1, 0.01) for e in (5, 10, 20)
    }
    table = tmp_path / "runs.csv"
    table.write_text("epochs,name\n3,007\n4,\n")
    rows = sweep.load_runs(str(table))
    assert rows[0]["epochs"].value == 3 and rows[0]["name"].raw == "007"
    assert "name" not in rows[1]  # an empty cell keeps the notebook's default
    listed = tmp_path / "runs.yaml"
    listed.write_text("runs:\n  - {epochs: 1}\n  - {epochs: 2}\n")
    assert [r["epochs"].value for r in sweep.load_runs(str(listed))] == [1, 2]


@pytest.mark.parametrize(
    "text", ["{}", "grid: {lr: []}", "- 1\n- 2\n", "grid: [1]", "!!python/object:os.system {}"]
)
def test_bad_run_specs_are_usage_errors(tmp_path, text):
    path = tmp_path / "runs.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match="--runs"):
        sweep.load_runs(str(path))
