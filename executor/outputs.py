"""Where a run's outputs go: the OUTPUT template and the files written beside it."""

from __future__ import annotations

import string
from typing import Any

from jobcommon import storage
from jobcommon.clock import unique_stamp
from jobcommon.errors import UsageError


def new_run_id() -> str:
    """A sortable, unique run id: ``20260101T120000Z-1a2b3c``."""
    return unique_stamp()


def render_output(template: str, parameters: dict[str, Any], run_id: str) -> str:
    """Fill ``{run_id}`` and ``{parameter}`` fields of an OUTPUT path.

    Raises UsageError for unknown fields and for results with a ``..`` segment, which
    would escape the template's prefix.

    Example:
        >>> render_output("gs://bkt/out/{run_id}/lr-{lr}.ipynb", {"lr": 0.1}, "r1")
        'gs://bkt/out/r1/lr-0.1.ipynb'
    """
    try:
        fields = {n for _, n, _, _ in string.Formatter().parse(template) if n is not None}
    except ValueError as exc:
        raise UsageError(
            f"output path {template!r} is not a valid template: {exc} (write a literal brace "
            "as {{ or }})"
        ) from exc
    values = {"run_id": run_id, **parameters}
    unknown = sorted(f for f in fields if f.split(".")[0].split("[")[0] not in values)
    if unknown:
        raise UsageError(
            f"output path {template!r} uses unknown fields {unknown}: use {{run_id}} or "
            f"parameter names {sorted(parameters)}"
        )
    if any(f != f.split(".")[0].split("[")[0] for f in fields):
        raise UsageError(f"output path {template!r}: only plain {{name}} fields are allowed")
    try:
        path = template.format_map(values)
    except (ValueError, IndexError) as exc:
        raise UsageError(f"output path {template!r} is not a valid template: {exc}") from exc
    rest = path[len(storage.GCS_PREFIX) :] if storage.is_gcs(path) else path
    if ".." in rest.replace("\\", "/").split("/"):
        raise UsageError(
            f"output path {path!r} (from {template!r}) contains '..': parameter values must "
            "not move the output outside the template's prefix"
        )
    if not path.endswith(".ipynb"):
        raise UsageError(f"output path {path!r} must end in .ipynb")
    return storage.validate(path)


def html_path(output: str) -> str:
    """``.../result.ipynb`` -> ``.../result.html``."""
    return output[: -len(".ipynb")] + ".html"


def status_path(output: str) -> str:
    """``.../result.ipynb`` -> ``.../result.ipynb.status.json``."""
    return output + ".status.json"
