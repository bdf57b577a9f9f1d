"""Notebooks shaped like the ones users bring, for comparing ``executor run`` with papermill.

Each entry is written as a user's Jupyter would save it (nbformat 4.5 JSON, or nbformat 3
for the old one), with a kernelspec and language_info unless the case is about their absence.
"""

from __future__ import annotations

import json

import nbformat

PYTHON_SPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
LANGUAGE_INFO = {
    "name": "python",
    "version": "3.11.7",
    "mimetype": "text/x-python",
    "file_extension": ".py",
    "codemirror_mode": {"name": "ipython", "version": 3},
    "pygments_lexer": "ipython3",
    "nbconvert_exporter": "python",
}


def _v4(cells: list, kernelspec: dict | None = PYTHON_SPEC) -> bytes:
    nb = nbformat.v4.new_notebook()
    if kernelspec is not None:
        nb.metadata["kernelspec"] = kernelspec
        nb.metadata["language_info"] = LANGUAGE_INFO
    nb.cells = cells
    return nbformat.writes(nb).encode()


def _params(source: str):
    return nbformat.v4.new_code_cell(source, metadata={"tags": ["parameters"]})


def _code(source: str):
    return nbformat.v4.new_code_cell(source)


def _md(source: str):
    return nbformat.v4.new_markdown_cell(source)


def _v3(cells: list[tuple[str, str, list[str]]]) -> bytes:
    """An nbformat 3 notebook (IPython 2 era): cells as (type, source, tags)."""
    out = []
    for kind, source, tags in cells:
        if kind == "code":
            out.append({
                "cell_type": "code", "collapsed": False, "input": source,
                "language": "python", "metadata": {"tags": tags}, "outputs": [],
            })  # fmt: skip
        else:
            out.append({"cell_type": "markdown", "metadata": {}, "source": source})
    doc = {
        "metadata": {"name": "", "signature": ""},
        "nbformat": 3,
        "nbformat_minor": 0,
        "worksheets": [{"cells": out, "metadata": {}}],
    }
    return json.dumps(doc, indent=1).encode()


TRAIN_PARAMS = 'epochs = 10\nlr = 0.1\nname = "base"\nitems = [1, 2]\n'


def corpus() -> dict[str, bytes]:
    """Case name -> notebook file bytes."""
    return {
        "succeeds": _v4(
            [
                _md("# Train\nA small report."),
                _params(TRAIN_PARAMS),
                _code(
                    "import sys\nprint('epochs', epochs, 'lr', lr, name, items)\n"
                    "print('to stderr', file=sys.stderr)"
                ),
                _code("{'score': round(epochs * lr, 3)}"),
                _code("from IPython.display import Markdown\nMarkdown(f'**{name}**')"),
            ]
        ),
        "fails": _v4(
            [
                _params("threshold = 0.5\n"),
                _code("values = [0.1, 0.9]\nprint('checking', values)"),
                _code("assert max(values) < threshold, f'{max(values)} is over {threshold}'"),
                _code("print('never printed')"),
            ]
        ),
        "exits": _v4(
            [
                _params("code = 3\n"),
                _code("print('about to exit')"),
                _code("import sys\nsys.exit(code)"),
                _code("print('after exit')"),
            ]
        ),
        "interrupted": _v4(
            [
                _code("print('working')"),
                _code("raise KeyboardInterrupt"),
                _code("print('not reached')"),
            ]
        ),
        "no-parameters-cell": _v4(
            [
                _code("total = sum(range(10))\nprint(total)"),
                _md("Done."),
            ]
        ),
        "nbformat-3": _v3(
            [
                ("markdown", "An IPython 2 notebook", []),
                ("code", "n = 2", ["parameters"]),
                ("code", "print('n squared', n * n)", []),
            ]
        ),
        "other-kernel": _v4(
            [_params("n = 1\n"), _code("print('n is', n)")],
            kernelspec={
                "name": "conda-env-ml-py",
                "display_name": "Python [conda env:ml]",
                "language": "python",
            },
        ),  # fmt: skip
        "no-kernelspec": _v4([_params("n = 1\n"), _code("print('n is', n)")], kernelspec=None),
    }
