"""Issue-found faults of ``executor run``: names that are code, YAML bombs, lost types,
cell numbers, missing kernelspecs and kernels, and exit codes that disagree."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import nbformat
import pytest
from executor_helpers import REPO, notebook, run_cli, train_notebook, write

from executor import exitcodes, params
from jobcommon import storage
from jobcommon.errors import UsageError

# "Billion laughs": under 400 bytes that expand to 9**9 strings.
BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
    "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"
)


def _local(nb, tmp_path, name: str = "in.ipynb") -> str:
    return write(nb, str(tmp_path / name))


def _status(output: str) -> dict:
    return json.loads(storage.read_text(output + ".status.json"))


def _one_clear_line(proc: subprocess.CompletedProcess) -> str:
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, text[-3000:]
    return text


CODE_NAME = 'import os; os.system("touch {marker}"); y'


@pytest.mark.parametrize("source", ["-p", "-r", "-f", "-y", "-b"])
def test_a_parameter_name_that_is_code_is_refused_from_every_source(tmp_path, gcs_env, source):
    marker = tmp_path / "pwned"
    name = CODE_NAME.format(marker=marker)
    yaml_text = json.dumps({name: 1})
    (tmp_path / "p.yaml").write_text(yaml_text)
    args = {
        "-p": ["-p", name, "1"],
        "-r": ["-r", name, "1"],
        "-f": ["-f", str(tmp_path / "p.yaml")],
        "-y": ["-y", yaml_text],
        "-b": ["-b", base64.b64encode(yaml_text.encode()).decode()],
    }[source]
    nb = _local(notebook(None, "print('ran')"), tmp_path)
    out = str(tmp_path / "out.ipynb")
    proc = run_cli(["run", nb, out, "--allow-unknown-params", *args], gcs_env)
    text = _one_clear_line(proc)
    assert proc.returncode == exitcodes.EXIT_USAGE, text[-3000:]
    assert "are not python identifiers" in text
    assert not marker.exists() and not os.path.exists(out)


@pytest.mark.parametrize("name", ["class", "1st", "a-b", "a b", "", "λ x"])
def test_python_names_must_be_identifiers_and_not_keywords(name):
    with pytest.raises(UsageError, match="not python identifiers"):
        params.apply_types({name: params.Given(1)}, None, allow_unknown=True)


def test_r_names_follow_r_rules():
    assert params.is_identifier("learning.rate", "R")
    assert not params.is_identifier("function", "r")
    assert not params.is_identifier("a;system('x')", "r")
    assert params.is_identifier("λ", "python")  # Python identifiers may be Unicode


def test_sweep_csv_header_that_is_code_is_refused(bucket, gcs_env, tmp_path):
    marker = tmp_path / "pwned"
    nb = _local(notebook("x = 1\n", "print(x)"), tmp_path)
    runs = tmp_path / "runs.csv"
    runs.write_text(f'x,"{CODE_NAME.format(marker=marker)}"\n1,2\n')
    proc = run_cli(
        ["batch", nb, str(tmp_path / "sweep"), "--runs", str(runs), "--allow-unknown-params"],
        gcs_env,
    )
    text = _one_clear_line(proc)
    assert proc.returncode == exitcodes.EXIT_USAGE and "not python identifiers" in text
    assert not marker.exists()


def test_billion_laughs_is_refused_at_once():
    assert len(BOMB) < 400
    started = time.monotonic()
    with pytest.raises(UsageError, match="aliases"):
        params.load_yaml_mapping(BOMB, "-f bomb.yaml")
    assert time.monotonic() - started < 30  # the unbounded version never returns


def test_billion_laughs_parameters_file_is_a_usage_error(tmp_path, gcs_env):
    (tmp_path / "bomb.yaml").write_text(BOMB)
    nb = _local(notebook('a = "x"\n', "print(a)"), tmp_path)
    proc = run_cli(
        ["run", nb, str(tmp_path / "o.ipynb"), "-f", str(tmp_path / "bomb.yaml")],
        gcs_env, timeout=120,
    )  # fmt: skip
    text = _one_clear_line(proc)
    assert proc.returncode == exitcodes.EXIT_USAGE and "aliases" in text


def test_aliases_within_the_bound_still_work():
    text = "base: &b {lr: 0.1}\nrun: *b\n"
    assert params.load_yaml_mapping(text, "-y") == {"base": {"lr": 0.1}, "run": {"lr": 0.1}}


def test_oversized_parameters_file_is_refused(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("x: '" + "a" * (params.MAX_PARAMETERS_BYTES + 10) + "'\n")
    with pytest.raises(UsageError, match="more than"):
        params.collect(files=[str(big)])


@pytest.mark.parametrize("value", ["{a: 1}", "[1, 2]"])
def test_a_yaml_mapping_or_list_is_not_a_str_value(value):
    declared = {"name": params.Declared("name", str, "base")}
    with pytest.raises(UsageError, match="must be a str"):
        params.apply_types(params.collect(yaml_strings=[f"name: {value}"]), declared)


def test_list_and_dict_parameters_keep_the_cells_type(tmp_path, gcs_env):
    nb = notebook(
        "items = [1, 2]\nconfig = {'a': 1}\n",
        "import scrapbook as sb\nsb.glue('types', [type(items).__name__, type(config).__name__])\n"
        "sb.glue('items', items)\nsb.glue('config', config)",
    )
    out = str(tmp_path / "out.ipynb")
    proc = run_cli(
        ["run", _local(nb, tmp_path), out, "-p", "items", "[3,4]", "-p", "config", "{'b': [2]}"],
        gcs_env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = _status(out)
    assert status["parameters"] == {"items": [3, 4], "config": {"b": [2]}}
    assert status["glued"]["types"] == ["list", "dict"]
    assert status["glued"]["items"] == [3, 4]


def test_a_list_parameter_that_is_not_a_list_names_the_form(tmp_path):
    declared = {"items": params.Declared("items", list, [1, 2])}
    with pytest.raises(UsageError, match=r"must be a list written as a Python literal"):
        params.apply_types(params.collect(params=[("items", "3,4]")]), declared)
    with pytest.raises(UsageError, match="must be a list"):
        params.apply_types(params.collect(params=[("items", "{'a': 1}")]), declared)


def test_failed_cell_index_is_the_cell_number_a_reader_counts(tmp_path, gcs_env):
    nb = notebook(None, "x = 1", "y = 2", "raise ValueError('third')", "z = 4")
    out = str(tmp_path / "out.ipynb")
    proc = run_cli(["run", _local(nb, tmp_path), out], gcs_env)
    assert proc.returncode == exitcodes.EXIT_FAILED
    status = _status(out)
    executed = nbformat.read(out, as_version=4)
    # papermill puts an error banner on top and another just above the failed cell, so
    # the third code cell is the 5th cell a reader scrolls past (counting from 1).
    assert status["failed_cell"]["index"] == 5
    assert "raise ValueError" in "".join(executed.cells[4].source)
    assert status["failed_cell"]["execution_count"] == 3  # papermill's banner: "In [3]"
    assert "at cell 5:" in proc.stdout + proc.stderr


def _bare(tmp_path, version: int) -> str:
    """A notebook saved without kernelspec or language_info, with a parameters cell."""
    if version == 3:
        cells = [
            {"cell_type": "code", "input": "n = 1", "language": "python", "outputs": [],
             "metadata": {"tags": ["parameters"]}},
            {"cell_type": "code", "input": "print('n is', n)", "language": "python",
             "outputs": [], "metadata": {}},
        ]  # fmt: skip
        doc = {"nbformat": 3, "nbformat_minor": 0, "metadata": {"name": "old"},
               "worksheets": [{"cells": cells, "metadata": {}}]}  # fmt: skip
    else:
        nb = nbformat.v4.new_notebook()
        nb.cells = [
            nbformat.v4.new_code_cell("n = 1", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell("print('n is', n)"),
        ]
        doc = json.loads(nbformat.writes(nb))
        doc["metadata"] = {}
    path = tmp_path / f"bare-v{version}.ipynb"
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.mark.parametrize("version", [3, 4])
def test_notebook_without_kernelspec_runs_with_k_python3(tmp_path, gcs_env, version):
    out = str(tmp_path / "out.ipynb")
    proc = run_cli(["run", _bare(tmp_path, version), out, "-k", "python3", "-p", "n", "5"], gcs_env)
    _one_clear_line(proc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _status(out)["parameters"] == {"n": 5}
    assert "n is 5" in json.dumps(nbformat.read(out, as_version=4).cells[-1].outputs)


def test_r_notebook_without_an_r_kernel_says_no_such_kernel(tmp_path, gcs_env):
    nb = notebook("n <- 1\n", "print(n)", kernel="ir", language="R")
    out = str(tmp_path / "o.ipynb")
    proc = run_cli(["run", _local(nb, tmp_path), out, "-p", "n", "2"], gcs_env)
    text = _one_clear_line(proc)
    assert proc.returncode == exitcodes.EXIT_USAGE
    assert "no such kernel is installed" in text and "'ir'" in text
    assert "defines []" not in text


def test_sigterm_exit_code_and_status_agree(tmp_path, gcs_env):
    nb = notebook(None, "print('started', flush=True)", "import time\ntime.sleep(120)")
    out = str(tmp_path / "out.ipynb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "executor", "run", _local(nb, tmp_path), out,
         "--mirror-interval", "1"],
        cwd=REPO, env=gcs_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if os.path.exists(out) and '"running"' in pathlib.Path(out).read_text():
            break
        time.sleep(0.3)
    os.kill(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=120)
    status = _status(out)
    assert proc.returncode == 130
    assert status["exit_code"] == proc.returncode


def test_prepare_failure_names_the_flag_that_relaxes_it(tmp_path):
    with pytest.raises(UsageError, match="--allow-unknown-params"):
        params.apply_types(params.collect(params=[("x", "1")]), {})
    nb = _local(train_notebook(), tmp_path)
    with pytest.raises(UsageError, match="-r epochs VALUE"):
        params.apply_types(
            params.collect(params=[("epochs", "abc")]), params.declared_parameters(nb)
        )
