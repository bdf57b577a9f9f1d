"""Every option of one notebook run, in one place: flags, defaults, checks, VM metadata.

:class:`RunOptions` holds what ``executor run`` accepts besides INPUT and OUTPUT. The same
flags are added to ``run``, ``batch`` and ``launch`` by :func:`add_parameter_flags` and
:func:`add_execution_flags`, read back by :meth:`RunOptions.from_args`, and carried to a VM
as instance metadata by :meth:`RunOptions.to_metadata` / :meth:`RunOptions.from_metadata`, so
``launch`` cannot drop or rename an option on its way to ``vm-run``.

Metadata keys are Google's DLVM executor's where it has one (``parameters`` is a command
line of ``-p/-r/-f/-y/-b`` options, ``parameters_file``), else the option's name.

This module imports nothing heavy, so ``--help`` and flag errors come back at once.

Example:
    >>> opts = RunOptions(parameters=(("epochs", "40"),), job_timeout=3600.0)
    >>> items = opts.to_metadata()
    >>> items
    {'parameters': '-p epochs 40', 'job_timeout': '3600.0'}
    >>> RunOptions.from_metadata(items.get) == opts
    True
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jobcommon.errors import UsageError

DEFAULT_START_TIMEOUT = 60.0
DEFAULT_MIRROR_INTERVAL = 10.0
DEFAULT_UPLOAD_DEADLINE = 300.0
MIN_MIRROR_INTERVAL = 1.0  # about one write per second is what one GCS object takes

# The parameter sources, in papermill's merge order (later wins), with their flags.
PARAMETER_SOURCES = (
    ("parameters_base64", "-b"),
    ("parameters_file", "-f"),
    ("parameters_yaml", "-y"),
    ("parameters", "-p"),
    ("parameters_raw", "-r"),
)
_PAIRS = ("parameters", "parameters_raw")
_SECONDS = ("execution_timeout", "job_timeout", "start_timeout", "mirror_interval",
            "upload_deadline")  # fmt: skip
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class RunOptions:
    """The options of one run (``executor run`` minus INPUT and OUTPUT), checked.

    Parameter sources keep their command-line form (pairs of strings, file names, YAML
    text); :mod:`executor.params` reads and types them.
    """

    parameters: tuple[tuple[str, str], ...] = ()
    parameters_raw: tuple[tuple[str, str], ...] = ()
    parameters_file: tuple[str, ...] = ()
    parameters_yaml: tuple[str, ...] = ()
    parameters_base64: tuple[str, ...] = ()
    allow_unknown_params: bool = False
    inject_input_path: bool = False
    inject_output_path: bool = False
    inject_paths: bool = False
    kernel: str | None = None
    language: str | None = None
    cwd: str | None = None
    execution_timeout: float | None = None
    job_timeout: float | None = None
    start_timeout: float = DEFAULT_START_TIMEOUT
    mirror_interval: float = DEFAULT_MIRROR_INTERVAL
    upload_deadline: float = DEFAULT_UPLOAD_DEADLINE
    prepare_only: bool = False
    report_mode: bool = False
    log_output: bool = False
    progress_bar: bool | None = None
    stdout_file: str | None = None
    stderr_file: str | None = None
    run_id: str | None = None

    def __post_init__(self) -> None:
        for name in _SECONDS:
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise UsageError(f"--{_flag(name)} {value!r} must be more than 0 seconds")
        for name in _PAIRS:
            object.__setattr__(self, name, tuple(tuple(p) for p in getattr(self, name)))
        for name in ("parameters_file", "parameters_yaml", "parameters_base64"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        # Faster mirroring would only earn 429s from GCS.
        object.__setattr__(self, "mirror_interval", max(MIN_MIRROR_INTERVAL, self.mirror_interval))

    @property
    def injects_input_path(self) -> bool:
        return self.inject_input_path or self.inject_paths

    @property
    def injects_output_path(self) -> bool:
        return self.inject_output_path or self.inject_paths

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunOptions:
        """The options from flags added by :func:`add_parameter_flags` and
        :func:`add_execution_flags` (flags a parser lacks keep their defaults)."""
        given = {f.name: getattr(args, f.name) for f in _FIELDS if hasattr(args, f.name)}
        return cls(**given)

    def to_metadata(self) -> dict[str, str]:
        """Instance metadata items (key -> text) for every option that is not the default."""
        tokens: list[str] = []
        for name, flag in PARAMETER_SOURCES:
            for item in getattr(self, name):
                tokens += [flag, *item] if name in _PAIRS else [flag, item]
        items = {"parameters": shlex.join(tokens)} if tokens else {}
        for f in _FIELDS:
            if f.name in _SOURCE_NAMES:
                continue
            value = getattr(self, f.name)
            if value == f.default:
                continue
            items[f.name] = (
                ("true" if value else "false") if isinstance(value, bool) else str(value)
            )
        return items

    @classmethod
    def from_metadata(cls, get: Callable[[str], str | None]) -> RunOptions:
        """The options from instance metadata; ``get(key)`` returns a value or None.

        Also reads the DLVM executor's ``parameters_file`` key and our ``parameters_yaml``
        (merged before the ones in ``parameters``).
        """
        sources = parse_parameters(get("parameters") or "")
        values: dict[str, Any] = {name: list(getattr(sources, name)) for name in _SOURCE_NAMES}
        for key in ("parameters_file", "parameters_yaml"):
            text = get(key)
            if text and text.strip():
                values[key].insert(0, text.strip() if key == "parameters_file" else text)
        for f in _FIELDS:
            if f.name in _SOURCE_NAMES:
                continue
            text = get(f.name)
            if text is None or not text.strip():
                continue
            values[f.name] = _from_text(f.name, text.strip())
        return cls(**values)


_FIELDS = dataclasses.fields(RunOptions)
_SOURCE_NAMES = tuple(name for name, _ in PARAMETER_SOURCES)
_BOOLS = tuple(f.name for f in _FIELDS if f.type in ("bool", "bool | None"))


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _from_text(name: str, text: str) -> Any:
    if name in _BOOLS:
        lowered = text.lower()
        if lowered in _TRUE | _FALSE:
            return lowered in _TRUE
        raise UsageError(f"metadata {name}={text!r} must be true or false")
    if name in _SECONDS:
        try:
            return float(text)
        except ValueError as exc:
            raise UsageError(f"metadata {name}={text!r} must be a number of seconds") from exc
    return text


def positive_seconds(text: str) -> float:
    """argparse type: a number of seconds above 0.

    >>> positive_seconds("2.5")
    2.5
    """
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from exc
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 seconds")
    return value


def _add_sources(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "-p", "--parameters", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
        help="a parameter; True/False/None/int/float are converted, then given the type of "
        "the default in the notebook's parameters cell",
    )  # fmt: skip
    parser.add_argument(
        "-r", "--parameters_raw", "--parameters-raw", dest="parameters_raw", nargs=2,
        action="append", default=[], metavar=("NAME", "VALUE"),
        help="a parameter kept as a string",
    )  # fmt: skip
    parser.add_argument(
        "-f", "--parameters_file", "--parameters-file", dest="parameters_file",
        action="append", default=[], metavar="FILE",
        help="a YAML file of parameters, local or gs://",
    )  # fmt: skip
    parser.add_argument(
        "-y", "--parameters_yaml", "--parameters-yaml", dest="parameters_yaml",
        action="append", default=[], metavar="YAML",
        help="a YAML string of parameters; a value that is a path ending in .yaml/.yml is "
        "read as a file, with a warning",
    )  # fmt: skip
    parser.add_argument(
        "-b", "--parameters_base64", "--parameters-base64", dest="parameters_base64",
        action="append", default=[], metavar="BASE64",
        help="a base64-encoded YAML string of parameters",
    )  # fmt: skip


def add_parameter_flags(parser: argparse.ArgumentParser) -> None:
    """Papermill's parameter options, merged in its order (later wins): -b, -f, -y, -p, -r."""
    group = parser.add_argument_group("parameters (merged -b, -f, -y, -p, -r; later wins)")
    _add_sources(group)
    group.add_argument(
        "--allow-unknown-params", action="store_true",
        help="accept parameters the notebook's parameters cell does not define",
    )  # fmt: skip
    group.add_argument(
        "--inject-input-path", action="store_true",
        help="set the parameter PAPERMILL_INPUT_PATH to the input notebook's path",
    )  # fmt: skip
    group.add_argument(
        "--inject-output-path", action="store_true",
        help="set the parameter PAPERMILL_OUTPUT_PATH to the output notebook's path",
    )  # fmt: skip
    group.add_argument(
        "--inject-paths", action="store_true",
        help="both --inject-input-path and --inject-output-path",
    )  # fmt: skip


def add_execution_flags(parser: argparse.ArgumentParser) -> None:
    """Kernel, limits, output and logging options of a run."""
    group = parser.add_argument_group("execution")
    group.add_argument(
        "-k", "--kernel", default=None,
        help="kernel name (default: the notebook's, or an installed kernel of its language)",
    )  # fmt: skip
    group.add_argument(
        "-l", "--language", default=None,
        help="the notebook's language, instead of the one in its metadata",
    )  # fmt: skip
    group.add_argument("--cwd", default=None, help="working directory of the kernel")
    group.add_argument(
        "--execution-timeout", type=positive_seconds, default=None, metavar="S",
        help="seconds one cell may run (default: no limit)",
    )  # fmt: skip
    group.add_argument(
        "--job-timeout", type=positive_seconds, default=None, metavar="S",
        help="seconds the whole run may take (default: no limit)",
    )  # fmt: skip
    group.add_argument(
        "--start-timeout", "--start_timeout", dest="start_timeout", type=positive_seconds,
        default=DEFAULT_START_TIMEOUT, metavar="S",
        help="seconds to wait for the kernel to start (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--mirror-interval", type=positive_seconds, default=DEFAULT_MIRROR_INTERVAL, metavar="S",
        help="upload the running notebook at most once per S seconds, floor "
        f"{MIN_MIRROR_INTERVAL:g} (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--upload-deadline", type=positive_seconds, default=DEFAULT_UPLOAD_DEADLINE,
        metavar="S",
        help="seconds all uploads after the run (notebook, HTML, status) may take together "
        "(default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--prepare-only", action="store_true",
        help="write the notebook with the parameters injected, without running it",
    )  # fmt: skip
    group.add_argument(
        "--report-mode", action="store_true", help="hide the code of every cell in the output"
    )
    group.add_argument(
        "--log-output", action=argparse.BooleanOptionalAction, default=False,
        help="also log the notebook's cell output",
    )  # fmt: skip
    group.add_argument(
        "--progress-bar", action=argparse.BooleanOptionalAction, default=None,
        help="show a progress bar of the cells (default: on unless --log-output)",
    )  # fmt: skip
    group.add_argument(
        "--stdout-file", default=None, metavar="FILE",
        help="also write the notebook's stdout to FILE (local or gs://)",
    )  # fmt: skip
    group.add_argument(
        "--stderr-file", default=None, metavar="FILE",
        help="also write the notebook's stderr to FILE (local or gs://)",
    )  # fmt: skip
    group.add_argument("--run-id", default=None, help="run id (default: time + random suffix)")


class _MetadataParser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print usage and exit
        raise UsageError(f"metadata 'parameters': {message}")


def parse_parameters(text: str) -> argparse.Namespace:
    """Split the ``parameters`` metadata value like a command line, without a shell,
    accepting only the parameter sources (-p, -r, -f, -y, -b).

    >>> parse_parameters("-p a 1 -r b 'x y'").parameters_raw
    [['b', 'x y']]
    """
    parser = _MetadataParser(prog="parameters", add_help=False)
    _add_sources(parser)
    try:
        tokens = shlex.split(text or "")
    except ValueError as exc:
        raise UsageError(f"metadata 'parameters' cannot be split: {exc}") from exc
    return parser.parse_args(tokens)
