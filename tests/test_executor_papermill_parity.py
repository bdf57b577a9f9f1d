"""``executor run`` against papermill's own ``papermill`` command, notebook by notebook.

Every notebook of :mod:`executor_corpus` (succeeding, failing, exiting, interrupted, without
a parameters cell, nbformat 3, another kernel, no kernelspec) and every papermill flag runs
through both commands; the executed notebooks must match cell for cell (sources, outputs,
papermill's cell states and its injected parameters).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import nbformat
import pytest
from executor_corpus import corpus
from executor_helpers import REPO

from executor import exitcodes

PAPERMILL = os.path.join(os.path.dirname(sys.executable), "papermill")

B64 = base64.b64encode(b"lr: 0.25\nname: from-b64\n").decode()

# case -> (notebook, papermill's arguments, ours when they differ: None = the same)
CASES = {
    "succeeds": ("succeeds", ["-p", "epochs", "3", "-y", "lr: 0.5", "-r", "name", "r1"], None),
    "succeeds-b64-and-inject-paths": ("succeeds", ["-b", B64, "--inject-paths"], None),
    "succeeds-inject-input-path": ("succeeds", ["--inject-input-path", "-p", "epochs", "2"], None),
    "succeeds-report-mode": ("succeeds", ["--report-mode"], None),
    "succeeds-prepare-only": ("succeeds", ["--prepare-only", "-p", "epochs", "7"], None),
    "succeeds-language": ("succeeds", ["-k", "python3", "-l", "python"], None),
    "fails": ("fails", ["-p", "threshold", "0.95"], None),
    "exits": ("exits", [], None),
    "interrupted": ("interrupted", [], None),
    "no-parameters-cell": ("no-parameters-cell", [], None),
    # Without a kernelspec papermill also needs -l; -k is enough here.
    "nbformat-3": (
        "nbformat-3",
        ["-k", "python3", "-l", "python", "-p", "n", "5"],
        ["-k", "python3", "-p", "n", "5"],
    ),
    # papermill needs -k for a kernel that is not installed; we fall back to python3.
    "other-kernel": ("other-kernel", ["-k", "python3", "-p", "n", "4"], ["-p", "n", "4"]),
    "no-kernelspec": (
        "no-kernelspec",
        ["-k", "python3", "-l", "python", "-p", "n", "3"],
        ["-k", "python3", "-p", "n", "3"],
    ),
}


def _normalized(path: str, out_path: str) -> dict:
    nb = nbformat.read(path, as_version=4)
    cells = []
    for cell in nb.cells:
        meta = cell.metadata
        entry = {
            "type": cell.cell_type,
            "source": cell.source.replace(out_path, "OUTPUT"),
            "tags": list(meta.get("tags", [])),
            "jupyter": dict(meta.get("jupyter", {})),
            "status": meta.get("papermill", {}).get("status"),
            "exception": meta.get("papermill", {}).get("exception"),
        }
        if cell.cell_type == "code":
            entry["execution_count"] = cell.get("execution_count")
            entry["outputs"] = [
                {
                    "type": o.output_type,
                    "name": o.get("name"),
                    "text": o.get("text"),
                    "data": {k: v for k, v in o.get("data", {}).items() if k.startswith("text/")},
                    "ename": o.get("ename"),
                    "evalue": o.get("evalue"),
                }
                for o in cell.get("outputs", [])
            ]
        cells.append(entry)
    pm = nb.metadata.get("papermill", {})
    parameters = {
        k: (v.replace(out_path, "OUTPUT") if isinstance(v, str) else v)
        for k, v in pm.get("parameters", {}).items()
    }
    return {"cells": cells, "parameters": parameters, "default": pm.get("default_parameters")}


def _papermill(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PAPERMILL, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def _ours(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "executor", "run", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_executed_notebook_matches_papermills(case, tmp_path, gcs_env):
    name, pm_args, our_args = CASES[case]
    source = tmp_path / f"{name}.ipynb"
    source.write_bytes(corpus()[name])
    pm_out, our_out = str(tmp_path / "papermill.ipynb"), str(tmp_path / "ours.ipynb")
    # The same output path for both, so injected paths compare equal.
    pm = _papermill([str(source), pm_out, *pm_args], gcs_env)
    assert os.path.exists(pm_out), pm.stderr[-3000:]
    os.replace(pm_out, str(tmp_path / "papermill-done.ipynb"))
    ours = _ours([str(source), pm_out, *(pm_args if our_args is None else our_args)], gcs_env)
    assert "Traceback" not in ours.stdout + ours.stderr, ours.stderr[-3000:]
    expected_code = {0: exitcodes.EXIT_OK, 1: exitcodes.EXIT_FAILED}[pm.returncode]
    assert ours.returncode == expected_code, (pm.stderr[-2000:], ours.stderr[-3000:])
    os.replace(pm_out, our_out)
    theirs = _normalized(str(tmp_path / "papermill-done.ipynb"), pm_out)
    mine = _normalized(our_out, pm_out)
    assert mine == theirs


def test_stdout_and_stderr_files_hold_what_papermills_do(tmp_path, gcs_env):
    source = tmp_path / "succeeds.ipynb"
    source.write_bytes(corpus()["succeeds"])
    files = {}
    for who, run in (("papermill", _papermill), ("ours", _ours)):
        out, err = tmp_path / f"{who}.out", tmp_path / f"{who}.err"
        proc = run([str(source), str(tmp_path / f"{who}.ipynb"),
                    "--stdout-file", str(out), "--stderr-file", str(err)], gcs_env)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        files[who] = (out.read_text(), err.read_text())
    assert files["ours"] == files["papermill"]
    assert "epochs 10" in files["ours"][0] and "to stderr" in files["ours"][1]


def test_help_notebook_lists_the_parameters_as_papermill_does(tmp_path, gcs_env):
    source = tmp_path / "succeeds.ipynb"
    source.write_bytes(corpus()["succeeds"])
    pm = _papermill([str(source), "--help-notebook"], gcs_env)
    ours = _ours([str(source), "--help-notebook"], gcs_env)
    assert ours.returncode == pm.returncode == 0

    def listing(text: str) -> list[str]:
        return text[text.index("Parameters inferred") :].splitlines()

    assert listing(ours.stdout) == listing(pm.stdout)
    assert "  epochs: Unknown type (default 10)" in ours.stdout  # no annotation in the cell


def test_help_notebook_without_parameters_cell_exits_1_like_papermill(tmp_path, gcs_env):
    source = tmp_path / "plain.ipynb"
    source.write_bytes(corpus()["no-parameters-cell"])
    pm = _papermill([str(source), "--help-notebook"], gcs_env)
    ours = _ours([str(source), "--help-notebook"], gcs_env)
    assert ours.returncode == pm.returncode == 1
    assert "No cell tagged 'parameters'" in ours.stdout


def test_log_output_and_progress_bar(tmp_path, gcs_env):
    source = tmp_path / "succeeds.ipynb"
    source.write_bytes(corpus()["succeeds"])
    env = dict(gcs_env, LOG_FORMAT="text")
    proc = _ours([str(source), str(tmp_path / "o.ipynb"), "--log-output"], env)
    assert proc.returncode == 0 and "epochs 10 lr 0.1" in proc.stdout + proc.stderr
    proc = _ours([str(source), str(tmp_path / "o.ipynb"), "--progress-bar"], env)
    assert proc.returncode == 0 and "Executing" in proc.stderr  # papermill's tqdm bar
    proc = _ours([str(source), str(tmp_path / "o.ipynb"), "--no-progress-bar"], env)
    assert proc.returncode == 0 and "Executing" not in proc.stderr


def test_stricter_defaults_name_the_flag_that_relaxes_them(tmp_path, gcs_env):
    source = tmp_path / "succeeds.ipynb"
    source.write_bytes(corpus()["succeeds"])
    unknown = _ours([str(source), str(tmp_path / "o.ipynb"), "-p", "epoch", "3"], gcs_env)
    assert unknown.returncode == 2 and "--allow-unknown-params" in unknown.stdout + unknown.stderr
    typed = _ours([str(source), str(tmp_path / "o.ipynb"), "-p", "epochs", "many"], gcs_env)
    assert typed.returncode == 2 and "-r epochs VALUE" in typed.stdout + typed.stderr
    allowed = _ours(
        [str(source), str(tmp_path / "o.ipynb"), "-p", "epoch", "3", "--allow-unknown-params"],
        gcs_env,
    )
    assert allowed.returncode == 0, allowed.stderr[-2000:]
