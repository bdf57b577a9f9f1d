"""Notebook parameters: papermill-style options in, values typed like the ``parameters`` cell out.

Sources merge in papermill's order, later wins: ``-b`` base64 YAML, ``-f`` YAML files,
``-y`` YAML strings, ``-p NAME VALUE`` (converted: ``True``/``False``/``None``/int/float,
else a string) and ``-r NAME VALUE`` (always a string). Then each value is checked against
the notebook's ``parameters`` cell: every name must be an identifier of the notebook's
language (a name is pasted into code), names the cell does not define are an error (unless
allowed), and values take the type of the cell's default, so ``-p epochs 40`` stays an int
for ``epochs = 10``, ``-p lr 1`` becomes ``1.0`` for ``lr = 0.1`` and ``-p items [3,4]`` a
list for ``items = [1, 2]``.

YAML is read with the safe loader, dates kept as text (as papermill does), aliases that
expand past :data:`MAX_YAML_NODES` nodes refused (a "billion laughs" file is a few hundred
bytes) and parameter texts over :data:`MAX_PARAMETERS_BYTES` refused.

Example:
    >>> given = collect(params=[("epochs", "40"), ("lr", "1")])
    >>> declared = {"epochs": Declared("epochs", int, 10), "lr": Declared("lr", float, 0.1)}
    >>> apply_types(given, declared)
    {'epochs': 40, 'lr': 1.0}
"""

from __future__ import annotations

import ast
import base64
import binascii
import keyword
import logging
import re
from dataclasses import dataclass
from typing import Any

import yaml

from jobcommon import storage
from jobcommon.errors import UsageError, first_line

log = logging.getLogger(__name__)

YAML_SUFFIXES = (".yaml", ".yml")
MAX_PARAMETERS_BYTES = 1 << 20  # a parameters file is a few lines; more is a mistake
MAX_YAML_NODES = 100_000  # nodes after alias expansion: ample for any real parameters file

R_RESERVED = frozenset(
    [
        "if",
        "else",
        "repeat",
        "while",
        "function",
        "for",
        "in",
        "next",
        "break",
        "TRUE",
        "FALSE",
        "NULL",
        "Inf",
        "NaN",
        "NA",
        "NA_integer_",
        "NA_real_",
        "NA_character_",
        "NA_complex_",
    ]
)
_R_NAME = re.compile(r"(?:[A-Za-z]|\.(?![0-9]))[A-Za-z0-9._]*|\.")
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_identifier(name: Any, language: str = "python") -> bool:
    """Whether ``name`` can be assigned to in the notebook's language.

    Python: :meth:`str.isidentifier` and not a keyword; R: R's syntactic names; other
    languages: letters, digits and ``_``, not starting with a digit.

    >>> is_identifier("lr"), is_identifier("import os; y"), is_identifier("class")
    (True, False, False)
    >>> is_identifier("my.rate", "r"), is_identifier("my.rate")
    (True, False)
    """
    if not isinstance(name, str):
        return False
    language = (language or "python").lower()
    if language == "python":
        return name.isidentifier() and not keyword.iskeyword(name)
    if language == "r":
        return bool(_R_NAME.fullmatch(name)) and name not in R_RESERVED
    return bool(_PLAIN_NAME.fullmatch(name))


def check_names(names, language: str = "python") -> None:
    """Raise UsageError naming every parameter name that is not an identifier."""
    bad = [n for n in names if not is_identifier(n, language)]
    if bad:
        shown = ", ".join(repr(n) for n in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise UsageError(
            f"parameter names {shown} are not {language} identifiers: a name is assigned to "
            "in the parameters cell, so it must be a plain variable name like learning_rate"
        )


class _ParametersLoader(yaml.SafeLoader):
    """The safe loader with YAML timestamps left as text, like papermill's parameters."""


_ParametersLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _expanded_size(node: yaml.Node, limit: int) -> int:
    """Nodes in the document once every alias is expanded, counting up to ``limit``."""
    sizes: dict[int, int] = {}

    def size(n: yaml.Node) -> int:
        if id(n) in sizes:
            return sizes[id(n)]
        sizes[id(n)] = limit + 1  # a node reached again while being counted: a cycle
        if isinstance(n, yaml.SequenceNode):
            children = n.value
        elif isinstance(n, yaml.MappingNode):
            children = [part for pair in n.value for part in pair]
        else:
            children = []
        total = 1
        for child in children:
            total += size(child)
            if total > limit:
                break
        sizes[id(n)] = min(total, limit + 1)
        return sizes[id(n)]

    return size(node)


def safe_yaml(text: str | bytes, source: str) -> Any:
    """Parse YAML for parameters: safe tags only, bounded alias expansion and size.

    >>> safe_yaml("lr: 0.1\\nday: 2024-01-01", "-y")
    {'lr': 0.1, 'day': '2024-01-01'}
    """
    if len(text) > MAX_PARAMETERS_BYTES:
        raise UsageError(
            f"{source}: {len(text)} bytes of parameters is more than the "
            f"{MAX_PARAMETERS_BYTES} allowed; pass data as a file path parameter instead"
        )
    loader = None
    try:
        loader = _ParametersLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise UsageError(
                f"{source}: the YAML expands to more than {MAX_YAML_NODES} values through "
                "its aliases (&/*); write the values out, without aliases"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise UsageError(f"{source}: not valid YAML ({first_line(exc)})") from exc
    except RecursionError as exc:
        raise UsageError(f"{source}: the YAML is nested too deeply") from exc
    finally:
        if loader is not None:
            loader.dispose()


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
    """Parse YAML (:func:`safe_yaml`: no object tags) that must be a mapping of names."""
    data = safe_yaml(text, source)
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


def _read_parameters_file(path: str, source: str) -> str:
    data = storage.read_bytes(path)
    if len(data) > MAX_PARAMETERS_BYTES:
        raise UsageError(
            f"{source}: the file has {len(data)} bytes, more than the {MAX_PARAMETERS_BYTES} "
            "a parameters file may have"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{source}: not UTF-8 text ({exc.reason})") from exc


def _decode_base64(text: str) -> str:
    try:
        data = base64.b64decode(text, validate=True)
        return data.decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise UsageError(
            f"-b {text[:40]!r}: not base64-encoded UTF-8 YAML ({exc}); encode with "
            "`base64 -w0 params.yaml`"
        ) from exc


def collect(
    files: list[str] = (),
    yaml_strings: list[str] = (),
    params: list[tuple[str, str]] = (),
    raw: list[tuple[str, str]] = (),
    base64_strings: list[str] = (),
) -> dict[str, Given]:
    """Merge parameter sources in papermill's order (later wins); files may be ``gs://``.

    A ``-y`` value that is a path ending in ``.yaml``/``.yml`` is read as a file, with a
    warning: papermill would take it as the YAML string ``params.yaml``.
    """
    merged: dict[str, Given] = {}
    for text in base64_strings:
        for name, value in load_yaml_mapping(_decode_base64(text), "-b").items():
            merged[name] = Given(value, source="-b")
    for path in files:
        text = _read_parameters_file(path, f"-f {path}")
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
            source = f"-y {path}"
            text = _read_parameters_file(path, source)
        for name, value in load_yaml_mapping(text, source).items():
            merged[name] = Given(value, source=source)
    for name, text in params:
        merged[name] = Given(convert_cli_value(text), raw=text, source="-p")
    for name, text in raw:
        merged[name] = Given(text, raw=None, source="-r")
    return merged


_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}


def has_parameters_cell(nb) -> bool:
    return any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells)


def declared_parameters(
    notebook, kernel: str | None = None, language: str | None = None
) -> dict[str, Declared] | None:
    """Parameters of the notebook's ``parameters`` cell, or None when it has no such cell.

    ``notebook`` is a path or a notebook node. ``kernel``/``language`` choose papermill's
    translator; by default the notebook's own (Python when it names none), so a notebook
    without a kernelspec (nbformat 3, a bare v4 file) is inspected too.
    """
    if isinstance(notebook, str):
        import nbformat

        notebook = nbformat.read(notebook, as_version=4)
    nb = notebook
    cell = next(
        (c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])), None
    )
    if cell is None:
        return None  # and papermill, a second to import, is not needed here
    from papermill.exceptions import PapermillException
    from papermill.translators import papermill_translators

    from executor.kernels import notebook_kernel

    own_kernel, own_language = notebook_kernel(nb)
    kernel = kernel or own_kernel
    language = language or own_language or "python"
    try:
        translator = papermill_translators.find_translator(kernel, language)
    except PapermillException as exc:
        raise UsageError(
            f"papermill cannot write parameters for kernel {kernel!r} ({language}): {exc}"
        ) from exc
    out: dict[str, Declared] = {}
    for found in translator.inspect(cell):
        info = found._asdict()
        name = info["name"]
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
        f"default in the notebook's parameters cell (-r {name} VALUE passes a string unchecked)"
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
        if not isinstance(value, str):
            raise _bad(name, given, kind)
        return value
    if kind in (list, dict):
        if isinstance(value, str):
            value = _literal(name, given, kind)
        if not isinstance(value, kind):
            raise _bad(name, given, kind)
        return value
    return value


def _literal(name: str, given: Given, kind: type) -> Any:
    """``-p items [3,4]``: the text as a Python literal, as the parameters cell writes it."""
    text = given.value
    if len(text) > MAX_PARAMETERS_BYTES:
        raise _bad(name, given, kind)
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        example = "[1, 2]" if kind is list else "{'a': 1}"
        raise UsageError(
            f"parameter {name}={text!r} ({given.source}) must be a {kind.__name__} written "
            f"as a Python literal like {example}, like the default in the notebook's "
            "parameters cell"
        ) from exc


def apply_types(
    given: dict[str, Given],
    declared: dict[str, Declared] | None,
    allow_unknown: bool = False,
    language: str = "python",
) -> dict[str, Any]:
    """Check names against the notebook and give values the parameters cell's types."""
    check_names(given, language)
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
