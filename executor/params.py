"""Notebook parameters: papermill-style options in, values typed like the ``parameters`` cell out.

Sources merge in papermill's order, later wins: ``-f`` YAML files, ``-y`` YAML strings,
``-p NAME VALUE`` (converted: ``True``/``False``/``None``/int/float, else a string) and
``-r NAME VALUE`` (always a string). Then each value is checked against the notebook's
``parameters`` cell: names it does not define are an error (unless allowed), and values
take the type of the cell's default, so ``-p epochs 40`` stays an int for ``epochs = 10``
and ``-p lr 1`` becomes ``1.0`` for ``lr = 0.1``.

Example:
    >>> given = collect(params=[("epochs", "40"), ("lr", "1")])
    >>> declared = {"epochs": Declared("epochs", int, 10), "lr": Declared("lr", float, 0.1)}
    >>> apply_types(given, declared)
    {'epochs': 40, 'lr': 1.0}
"""

from __future__ import annotations

import ast
import logging
from dataclasses import dataclass
from typing import Any

import yaml

from jobcommon import storage
from jobcommon.errors import UsageError

log = logging.getLogger(__name__)

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Given:
    """One parameter value and, for ``-p``, the text it was converted from."""

    value: Any
    raw: str | None = None
    source: str = "-p"


@dataclass(frozen=True)
class Declared:
    """A parameter the notebook's ``parameters`` cell defines; ``type`` None when unknown."""

    name: str
    type: type | None
    default: Any = None


def convert_cli_value(text: str) -> Any:
    """Papermill's ``-p`` conversion: ``True``/``False``/``None``, int, float, else the text."""
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def load_yaml_mapping(text: str, source: str) -> dict[str, Any]:
    """Parse YAML (``safe_load`` only: no object tags) that must be a mapping of names."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise UsageError(f"{source}: parameters must be a YAML mapping of name: value")
    return data


def _looks_like_yaml_file(text: str) -> bool:
    stripped = text.strip()
    return (
        "\n" not in stripped
        and ":" not in stripped.replace("gs://", "", 1)
        and (stripped.lower().endswith(YAML_SUFFIXES))
    )


def collect(
    files: list[str] = (),
    yaml_strings: list[str] = (),
    params: list[tuple[str, str]] = (),
    raw: list[tuple[str, str]] = (),
) -> dict[str, Given]:
    """Merge parameter sources in papermill's order (later wins); files may be ``gs://``.

    A ``-y`` value that is a path ending in ``.yaml``/``.yml`` is read as a file, with a
    warning: papermill would take it as the YAML string ``params.yaml``.
    """
    merged: dict[str, Given] = {}
    for path in files:
        text = storage.read_text(path)
        for name, value in load_yaml_mapping(text, f"-f {path}").items():
            merged[name] = Given(value, source=f"-f {path}")
    for text in yaml_strings:
        source = "-y"
        if _looks_like_yaml_file(text):
            path = text.strip()
            log.warning(
                "-y %s looks like a file name: reading it as a YAML file (use -f FILE for files)",
                path,
            )
            text = storage.read_text(path)
            source = f"-y {path}"
        for name, value in load_yaml_mapping(text, source).items():
            merged[name] = Given(value, source=source)
    for name, text in params:
        merged[name] = Given(convert_cli_value(text), raw=text, source="-p")
    for name, text in raw:
        merged[name] = Given(text, raw=None, source="-r")
    return merged


_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}


def declared_parameters(notebook_path: str) -> dict[str, Declared] | None:
    """Parameters of the notebook's ``parameters`` cell, or None when it has no such cell."""
    import nbformat
    from papermill.inspection import inspect_notebook

    nb = nbformat.read(notebook_path, as_version=4)
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells):
        return None
    # papermill logs the notebook's path at INFO on every inspection: noise here.
    papermill_log = logging.getLogger("papermill")
    level = papermill_log.level
    papermill_log.setLevel(logging.WARNING)
    try:
        found = inspect_notebook(notebook_path)
    finally:
        papermill_log.setLevel(level)
    out: dict[str, Declared] = {}
    for name, info in found.items():
        annotated = str(info.get("inferred_type_name") or "None").strip()
        default: Any = None
        kind: type | None = _TYPES.get(annotated)
        try:
            default = ast.literal_eval(str(info.get("default")))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            default = None
        else:
            if kind is None and default is not None:
                kind = type(default) if type(default) in _TYPES.values() else None
        out[name] = Declared(name, kind, default)
    return out


def _bad(name: str, given: Given, kind: type) -> UsageError:
    shown = given.raw if given.raw is not None else given.value
    article = "an" if kind is int else "a"
    return UsageError(
        f"parameter {name}={shown!r} ({given.source}) must be {article} {kind.__name__}, like the "
        "default in the notebook's parameters cell"
    )


def coerce(name: str, given: Given, kind: type | None) -> Any:
    """Give one value the declared type; raise UsageError when it cannot be converted."""
    value = given.value
    if kind is None or value is None or given.source == "-r":
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(given.raw if given.raw is not None else value).strip().lower()
        if text in ("true", "yes", "1"):
            return True
        if text in ("false", "no", "0"):
            return False
        raise _bad(name, given, kind)
    if kind is int:
        if isinstance(value, bool):
            raise _bad(name, given, kind)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _bad(name, given, kind)
    if kind is float:
        if isinstance(value, bool):
            raise _bad(name, given, kind)
        if isinstance(value, int | float):
            return float(value)
        raise _bad(name, given, kind)
    if kind is str:
        if given.raw is not None:
            return given.raw
        if isinstance(value, int | float | bool):
            return str(value)
        return value
    return value


def apply_types(
    given: dict[str, Given],
    declared: dict[str, Declared] | None,
    allow_unknown: bool = False,
) -> dict[str, Any]:
    """Check names against the notebook and give values the parameters cell's types."""
    if declared is None:
        if given and not allow_unknown:
            raise UsageError(
                f"the notebook has no cell tagged 'parameters', so {sorted(given)} cannot be "
                "set: tag the cell holding the defaults 'parameters', or pass "
                "--allow-unknown-params"
            )
        return {name: g.value for name, g in given.items()}
    unknown = sorted(set(given) - set(declared))
    if unknown and not allow_unknown:
        raise UsageError(
            f"unknown parameters {unknown}: the notebook's parameters cell defines "
            f"{sorted(declared)} (fix the names, or pass --allow-unknown-params)"
        )
    out: dict[str, Any] = {}
    for name, g in given.items():
        kind = declared[name].type if name in declared else None
        out[name] = coerce(name, g, kind)
    return out
