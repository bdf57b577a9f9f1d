"""Parameters, output templates and kernel choice: the checks that happen before a kernel starts."""

from __future__ import annotations

import logging

import pytest
from executor_helpers import notebook, train_notebook, write

from executor import kernels, outputs, params
from jobcommon import storage
from jobcommon.errors import UsageError


@pytest.fixture
def declared(tmp_path):
    return params.declared_parameters(write(train_notebook(), str(tmp_path / "t.ipynb")))


def test_declared_types_come_from_the_parameters_cell(declared):
    assert {n: d.type for n, d in declared.items()} == {
        "epochs": int, "lr": float, "name": str, "use_gpu": bool,
    }  # fmt: skip


def test_annotations_win_over_defaults(tmp_path):
    nb = notebook("threshold: float = 1\nlabel = None\n", "pass")
    found = params.declared_parameters(write(nb, str(tmp_path / "a.ipynb")))
    assert found["threshold"].type is float and found["label"].type is None


def test_cli_values_take_the_cells_types(declared):
    given = params.collect(
        params=[("epochs", "40"), ("lr", "1"), ("name", "007"), ("use_gpu", "true")]
    )
    assert params.apply_types(given, declared) == {
        "epochs": 40, "lr": 1.0, "name": "007", "use_gpu": True,
    }  # fmt: skip
    typed = params.apply_types(given, declared)
    assert type(typed["epochs"]) is int and type(typed["lr"]) is float


def test_merge_order_is_file_yaml_p_r(tmp_path, declared):
    f = tmp_path / "p.yaml"
    f.write_text("epochs: 1\nlr: 0.5\nname: file\n")
    given = params.collect(
        files=[str(f)], yaml_strings=["epochs: 2\nname: yaml"], params=[("epochs", "3")],
        raw=[("name", "None")],
    )  # fmt: skip
    assert params.apply_types(given, declared) == {"epochs": 3, "lr": 0.5, "name": "None"}


def test_none_and_raw_strings_are_kept(declared):
    given = params.collect(params=[("name", "None")], raw=[("lr", "1e-3")])
    assert params.apply_types(given, declared, allow_unknown=True) == {"name": None, "lr": "1e-3"}


def test_y_with_a_yaml_path_reads_the_file_with_a_warning(gcs, bucket, caplog):
    storage.write_text(f"{bucket}/params.yml", "epochs: 7\n")
    with caplog.at_level(logging.WARNING):
        given = params.collect(yaml_strings=[f"{bucket}/params.yml"])
    assert given["epochs"].value == 7
    assert "looks like a file name" in caplog.text
    # A real YAML string that happens to end in .yaml is still a string.
    assert params.collect(yaml_strings=["config: a.yaml"])["config"].value == "a.yaml"


@pytest.mark.parametrize(
    ("name", "value", "kind"),
    [("epochs", "ten", "int"), ("epochs", "True", "int"), ("lr", "fast", "float"),
     ("use_gpu", "maybe", "bool")],
)  # fmt: skip
def test_values_that_do_not_fit_the_type_are_errors_naming_them(declared, name, value, kind):
    with pytest.raises(UsageError, match=rf"{name}='{value}' \(-p\) must be an? {kind}"):
        params.apply_types(params.collect(params=[(name, value)]), declared)


def test_unknown_names_are_listed_unless_allowed(declared):
    given = params.collect(params=[("epoch", "1"), ("batch", "2")])
    with pytest.raises(UsageError, match=r"unknown parameters \['batch', 'epoch'\]"):
        params.apply_types(given, declared)
    assert params.apply_types(given, declared, allow_unknown=True) == {"epoch": 1, "batch": 2}


def test_notebook_without_parameters_cell(tmp_path):
    path = write(notebook(None, "x = 1"), str(tmp_path / "n.ipynb"))
    assert params.declared_parameters(path) is None
    with pytest.raises(UsageError, match="no cell tagged 'parameters'"):
        params.apply_types(params.collect(params=[("x", "2")]), None)
    assert params.apply_types({}, None) == {}


def test_yaml_is_loaded_safely():
    with pytest.raises(UsageError, match="not valid YAML"):
        params.load_yaml_mapping("!!python/object/apply:os.system ['touch /tmp/x']", "-y")


def test_output_templates():
    assert (
        outputs.render_output("gs://bkt/out/{run_id}/e{epochs}.ipynb", {"epochs": 3}, "r1")
        == "gs://bkt/out/r1/e3.ipynb"
    )
    for template, values, message in [
        ("gs://bkt/{nope}/x.ipynb", {}, "unknown fields"),
        ("gs://bkt/out/{name}/x.ipynb", {"name": ".."}, "contains '..'"),
        ("gs://bkt/out/{name}/x.ipynb", {"name": "../../other"}, "contains '..'"),
        ("gs://bkt/out/{name.__class__}/x.ipynb", {"name": "a"}, "only plain"),
        ("gs://bkt/out/x.txt", {}, "must end in .ipynb"),
    ]:
        with pytest.raises(UsageError, match=message):
            outputs.render_output(template, values, "r1")


def test_missing_kernel_falls_back_to_the_same_language(caplog):
    nb = notebook(None, "pass", kernel="conda-env-tf-py", language="python")
    with caplog.at_level(logging.WARNING):
        assert kernels.choose_kernel(nb) == ("python3", "python")
    assert "'conda-env-tf-py' is not installed" in caplog.text


def test_missing_kernel_of_another_language_fails_clearly():
    nb = notebook(None, "x <- 1", kernel="ir", language="R")
    with pytest.raises(UsageError, match="no installed kernel runs r"):
        kernels.choose_kernel(nb)
    with pytest.raises(UsageError, match="kernel 'julia-1.9' \\(-k\\) is not installed"):
        kernels.choose_kernel(nb, "julia-1.9")
