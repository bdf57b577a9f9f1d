"""``python -m executor vm-run``: the image's default command on a run-once VM.

Reads the run from instance metadata (the keys Google's DLVM notebook executor uses, plus
ours), runs it like ``executor run``, and then, unless ``stay_alive`` is true, deletes its
own VM with the metadata server's token, after the outputs are uploaded, whatever the
outcome. Metadata values are data: ``parameters`` is split with :func:`shlex.split` and
parsed as options; nothing ever goes through a shell.

Metadata keys: ``input_notebook_path``, ``output_notebook_path`` (required),
``parameters_file``, ``parameters`` (``-p a 1 -p b 2``), ``parameters_yaml``, ``kernel``,
``execution_timeout``, ``job_timeout``, ``start_timeout``, ``mirror_interval``,
``stay_alive``.
"""

from __future__ import annotations

import argparse
import logging
import shlex

from executor import exitcodes, metadata, runner
from jobcommon.errors import JobError, UsageError

log = logging.getLogger(__name__)

TRUE = {"1", "true", "yes", "on"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print usage and exit
        raise UsageError(f"metadata 'parameters': {message}")


def parse_parameters(text: str) -> argparse.Namespace:
    """Split the ``parameters`` metadata value like a command line, without a shell,
    accepting only parameter options (-p, -r, -f, -y)."""
    parser = _Parser(prog="parameters", add_help=False)
    parser.add_argument("-p", "--parameters", nargs=2, action="append", default=[])
    parser.add_argument(
        "-r",
        "--parameters_raw",
        "--parameters-raw",
        dest="raw",
        nargs=2,
        action="append",
        default=[],
    )
    parser.add_argument(
        "-f", "--parameters_file", "--parameters-file", dest="files", action="append", default=[]
    )
    parser.add_argument(
        "-y", "--parameters_yaml", "--parameters-yaml", dest="yaml", action="append", default=[]
    )
    try:
        tokens = shlex.split(text or "")
    except ValueError as exc:
        raise UsageError(f"metadata 'parameters' cannot be split: {exc}") from exc
    return parser.parse_args(tokens)


def _seconds(md: metadata.MetadataClient, key: str) -> float | None:
    value = md.attribute(key)
    if value is None or not value.strip():
        return None
    try:
        return float(value)
    except ValueError as exc:
        raise UsageError(f"metadata {key}={value!r} must be a number of seconds") from exc


def run_from_metadata(md: metadata.MetadataClient, log_format: str, log_level: str) -> int:
    """Run the notebook the metadata describes; returns the run's exit code."""
    input_path = md.attribute("input_notebook_path")
    output_path = md.attribute("output_notebook_path")
    if not input_path or not output_path:
        raise UsageError("instance metadata must set input_notebook_path and output_notebook_path")
    parsed = parse_parameters(md.attribute("parameters") or "")
    files = [f for f in [(md.attribute("parameters_file") or "").strip()] if f] + parsed.files
    yaml_strings = [y for y in [md.attribute("parameters_yaml")] if y] + parsed.yaml
    options = {
        "execution_timeout": _seconds(md, "execution_timeout"),
        "job_timeout": _seconds(md, "job_timeout"),
        "start_timeout": _seconds(md, "start_timeout") or 60.0,
        "mirror_interval": max(1.0, _seconds(md, "mirror_interval") or 10.0),
        "upload_deadline": _seconds(md, "upload_deadline") or 300.0,
        "log_format": log_format,
        "log_level": log_level,
    }
    req = runner.prepare(
        input_path.strip(),
        output_path.strip(),
        files=files,
        yaml_strings=yaml_strings,
        params=[tuple(p) for p in parsed.parameters],
        raw=[tuple(p) for p in parsed.raw],
        kernel=(md.attribute("kernel") or "").strip() or None,
        allow_unknown=(md.attribute("allow_unknown_params") or "").strip().lower() in TRUE,
        **options,
    )
    return runner.execute(req).exit_code


def main(log_format: str = "auto", log_level: str = "INFO") -> int:
    md = metadata.MetadataClient()
    stay_alive = (md.attribute("stay_alive") or "").strip().lower() in TRUE
    try:
        code = run_from_metadata(md, log_format, log_level)
    except JobError as exc:
        log.error("%s", exc)
        code = exc.exit_code
    except Exception:
        log.exception("the run crashed")
        code = exitcodes.EXIT_FAILED
    if stay_alive:
        log.info("stay_alive is set: leaving this VM running (exit code %d)", code)
        return code
    try:
        project, zone, name = md.instance()
        log.info("deleting this VM %s/%s/%s (run exit code %d)", project, zone, name, code)
        metadata.delete_instance(project, zone, name, md.token())
    except JobError as exc:
        log.error("could not delete this VM: %s", exc)
        return code or exitcodes.EXIT_SELF_DELETE_FAILED
    return code
