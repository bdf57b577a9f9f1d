"""``python -m executor vm-run``: the image's default command on a run-once VM.

Reads the run from instance metadata (the keys Google's DLVM notebook executor uses, plus
ours), runs it like ``executor run``, and then, unless ``stay_alive`` is true, deletes its
own VM with the metadata server's token, after the outputs are uploaded, whatever the
outcome. Metadata values are data: ``parameters`` is split with :func:`shlex.split` and
parsed as options; nothing ever goes through a shell.

Metadata keys: ``input_notebook_path``, ``output_notebook_path`` (required), ``stay_alive``
and every run option as :meth:`executor.options.RunOptions.to_metadata` writes it
(``parameters`` as ``-p a 1 -p b 2``, ``parameters_file``, ``kernel``, ``job_timeout``, ...).
A run that fails before it starts (a missing parameters file, bad parameters, a missing
bucket) still writes a FAILED ``OUTPUT.status.json`` with the reason, then deletes the VM.

On a Spot VM that Compute Engine preempts, the container gets SIGTERM with a short grace:
the metadata server then says ``instance/preempted`` is ``TRUE``, so the run is stopped, the
notebook so far is uploaded with a ``PREEMPTED`` status (exit code 15), and the VM is left
for Compute Engine to delete (``instanceTerminationAction: DELETE``). Launching the same run
id again runs the notebook again into the same outputs.
"""

from __future__ import annotations

import json
import logging

from executor import compute_engine, exitcodes, outputs, runner, status
from executor.compute_engine_metadata import MetadataClient
from executor.options import RunOptions
from jobcommon import storage
from jobcommon.errors import JobError, UsageError

log = logging.getLogger(__name__)

TRUE = {"1", "true", "yes", "on"}


def _interruption(md: MetadataClient) -> str | None:
    return exitcodes.PREEMPTED if md.preempted() else None


def run_from_metadata(md: MetadataClient, log_format: str, log_level: str) -> int:
    """Run the notebook the metadata describes; returns the run's exit code."""
    input_path = (md.attribute("input_notebook_path") or "").strip()
    output_path = (md.attribute("output_notebook_path") or "").strip()
    if not input_path or not output_path:
        raise UsageError("instance metadata must set input_notebook_path and output_notebook_path")
    try:
        options = RunOptions.from_metadata(md.attribute)
        req = runner.prepare(
            input_path, output_path, options, log_format=log_format, log_level=log_level
        )
    except JobError as exc:
        _report_early_failure(input_path, output_path, exc)
        raise
    req.interruption = lambda: _interruption(md)
    return runner.execute(req).exit_code


def _report_early_failure(input_path: str, output_template: str, exc: JobError) -> None:
    """A run that fails before it starts still leaves a FAILED status, so a poller stops."""
    if "{" in output_template:
        log.error("cannot write a status file: the output %r is still a template", output_template)
        return
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    record = status.build_status(
        state=exitcodes.FAILED, run_id="", input_path=input_path, output_path=output_template,
        html="", parameters={}, kernel="", started=now, ended=now,
        error={"name": type(exc).__name__, "message": str(exc)},
    )  # fmt: skip
    record["exit_code"] = exc.exit_code
    try:
        storage.write_text(outputs.status_path(output_template), json.dumps(record, indent=2))
    except JobError as write_exc:
        log.error("could not write the FAILED status for %s: %s", output_template, write_exc)


def main(log_format: str = "auto", log_level: str = "INFO") -> int:
    md = MetadataClient()
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
    if code == exitcodes.EXIT_PREEMPTED:
        log.warning(
            "this Spot VM was preempted: Compute Engine deletes it; launch the same --run-id "
            "again to run the notebook again"
        )
        return code
    try:
        project, zone, name = md.instance()
        log.info("deleting this VM %s/%s/%s (run exit code %d)", project, zone, name, code)
        compute_engine.delete_instance(project, zone, name, md.token())
    except JobError as exc:
        log.error("could not delete this VM: %s", exc)
        return code or exitcodes.EXIT_SELF_DELETE_FAILED
    return code
