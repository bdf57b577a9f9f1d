"""Run one notebook: prepare parameters, execute with papermill, mirror, upload, report.

Example:
    >>> from executor import runner
    >>> req = runner.prepare("gs://bkt/in.ipynb", "gs://bkt/out/{run_id}.ipynb",
    ...                      params=[("epochs", "3")])  # doctest: +SKIP
    >>> result = runner.execute(req)  # doctest: +SKIP
    >>> result.state, result.exit_code  # doctest: +SKIP
    ('SUCCEEDED', 0)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from executor import exitcodes, kernels, outputs, status
from executor import params as paramlib
from executor.mirror import Deadline, Mirror, UploadFailed, bounded
from executor.options import RunOptions
from jobcommon import storage
from jobcommon.cli import EXIT_INTERRUPTED
from jobcommon.errors import BadInputError, JobError, UsageError

log = logging.getLogger(__name__)

PREEMPTED_UPLOAD_SECONDS = 15.0  # of the ~30 s Compute Engine gives a preempted VM


class Engine:
    """The papermill process of one run, started early: it imports papermill while the run
    is prepared, then waits for the spec (see :mod:`executor.engine_process`).

    >>> engine = Engine()  # doctest: +SKIP
    >>> req = prepare("in.ipynb", "out.ipynb", engine=engine)  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "executor.engine_process"],
            stdin=subprocess.PIPE,
            start_new_session=True,
            text=True,
        )

    def start(self, spec_path: str) -> subprocess.Popen:
        self.proc.stdin.write(spec_path + "\n")
        self.proc.stdin.close()
        return self.proc

    def cancel(self) -> None:
        """The run will not happen: let the process end."""
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _kill_tree(self.proc)


@dataclass
class RunRequest:
    """Everything one execution needs, already checked."""

    input: str
    output: str
    local_input: str
    parameters: dict[str, Any]
    kernel: str
    language: str
    run_id: str
    options: RunOptions = field(default_factory=RunOptions)
    log_format: str = "auto"
    log_level: str = "INFO"
    kill_grace: float = 10.0
    # Asked when the run is interrupted (SIGINT/SIGTERM): PREEMPTED when the interruption is
    # Compute Engine preempting the VM (vm-run asks the metadata server), else None.
    interruption: Callable[[], str | None] | None = field(default=None, repr=False)
    workdir: str = field(default="", repr=False)
    engine: Engine | None = field(default=None, repr=False)


@dataclass
class RunResult:
    state: str
    exit_code: int
    status: dict[str, Any]
    notebook_uploads: int = 0


def load_notebook(path: str, source: str):
    import nbformat

    try:
        return nbformat.read(path, as_version=4)
    except Exception as exc:
        raise BadInputError(
            f"{source} is not a readable Jupyter notebook ({type(exc).__name__}: {exc}); "
            "pass an .ipynb file saved by Jupyter"
        ) from exc


def _fetch(input_path: str, workdir: str):
    storage.validate(input_path)
    if not input_path.endswith(".ipynb"):
        raise UsageError(f"input {input_path!r} must be a notebook ending in .ipynb")
    local_input = os.path.join(workdir, "input.ipynb")
    storage.download_file(input_path, local_input)
    return local_input, load_notebook(local_input, input_path)


def collect_parameters(options: RunOptions) -> dict[str, paramlib.Given]:
    """The parameters the options' sources give (-b, -f, -y, -p, -r), merged."""
    return paramlib.collect(
        list(options.parameters_file),
        list(options.parameters_yaml),
        list(options.parameters),
        list(options.parameters_raw),
        list(options.parameters_base64),
    )


def prepare(
    input_path: str,
    output_template: str,
    options: RunOptions | None = None,
    *,
    given: dict[str, paramlib.Given] | None = None,
    workdir: str | None = None,
    log_format: str = "auto",
    log_level: str = "INFO",
    engine: Engine | None = None,
) -> RunRequest:
    """Fetch the input, pick a kernel, check and type the parameters, fill the OUTPUT template.

    ``given`` (already collected parameters, e.g. a sweep's run) is merged under the
    options' own sources. ``engine``, started before, is the process the run will use.
    """
    try:
        req = _prepare(input_path, output_template, options or RunOptions(), given, workdir)
    except BaseException:
        if engine is not None:
            engine.cancel()
        raise
    req.log_format, req.log_level, req.engine = log_format, log_level, engine
    return req


def _prepare(
    input_path: str,
    output_template: str,
    options: RunOptions,
    given: dict[str, paramlib.Given] | None,
    workdir: str | None,
) -> RunRequest:
    workdir = workdir or tempfile.mkdtemp(prefix="executor-")
    local_input, nb = _fetch(input_path, workdir)
    kernel, language = kernels.choose_kernel(nb, options.kernel, options.language)
    merged = dict(given or {})
    merged.update(collect_parameters(options))
    declared = paramlib.declared_parameters(nb, kernel, language)
    typed = paramlib.apply_types(merged, declared, options.allow_unknown_params, language)
    run_id = options.run_id or outputs.new_run_id()
    output = outputs.render_output(output_template, typed, run_id)
    # Injected paths are asked for by flag, so the parameters cell need not declare them;
    # like papermill, given parameters of the same name win.
    injected = {}
    if options.injects_input_path:
        injected["PAPERMILL_INPUT_PATH"] = input_path
    if options.injects_output_path:
        injected["PAPERMILL_OUTPUT_PATH"] = output
    return RunRequest(
        input=input_path,
        output=output,
        local_input=local_input,
        parameters={**injected, **typed},
        kernel=kernel,
        language=language,
        run_id=run_id,
        options=options,
        workdir=workdir,
    )


def notebook_help(input_path: str, options: RunOptions) -> tuple[str, int]:
    """``--help-notebook``: the parameters the notebook's parameters cell defines, as
    papermill's flag prints them, and the exit code (1 without a parameters cell)."""
    with tempfile.TemporaryDirectory(prefix="executor-") as workdir:
        _, nb = _fetch(input_path, workdir)
    lines = [f"Parameters inferred for notebook '{input_path}':"]
    if not paramlib.has_parameters_cell(nb):
        return "\n".join([*lines, "", "  No cell tagged 'parameters'", ""]), 1
    kernel, language = kernels.choose_kernel(nb, options.kernel, options.language)
    from papermill.translators import papermill_translators

    translator = papermill_translators.find_translator(kernel, language)
    cell = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
    found = translator.inspect(cell)
    if not found:
        lines += ["", "  Can't infer anything about this notebook's parameters. "
                  "It may not have any parameter defined."]  # fmt: skip
    for p in found:
        kind = "Unknown type" if p.inferred_type_name == "None" else p.inferred_type_name
        definition = f"  {p.name}: {kind} (default {p.default})"
        if len(definition) > 30:
            lines.append(f"{definition}\n{34 * ' '}{p.help}" if p.help else definition)
        else:
            lines.append(f"{definition:<34}{p.help}")
    return "\n".join(lines) + "\n", 0


def _process_tree(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _interrupt_kernels(proc: subprocess.Popen) -> bool:
    """Send SIGINT to the kernels so the running cell stops with a traceback showing where."""
    import psutil

    sent = False
    for child in _process_tree(proc.pid):
        with contextlib.suppress(psutil.Error):
            if any("ipykernel" in part or "kernel" in part for part in child.cmdline()):
                child.send_signal(signal.SIGINT)
                sent = True
    return sent


def _kill_tree(proc: subprocess.Popen) -> None:
    import psutil

    for child in _process_tree(proc.pid):
        with contextlib.suppress(psutil.Error):
            child.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _stream_files(req: RunRequest) -> dict[str, tuple[str, str]]:
    """``--stdout-file``/``--stderr-file``: stream -> (local file the engine writes, target).
    A gs:// target is written locally, then uploaded with the other outputs."""
    out = {}
    for stream in ("stdout", "stderr"):
        target = getattr(req.options, f"{stream}_file")
        if target:
            storage.validate(target)
            local = os.path.join(req.workdir, f"{stream}.txt") if storage.is_gcs(target) else target
            out[stream] = (local, target)
    return out


@dataclass
class _RunFiles:
    """The run's local files, its stream targets and the status fields every record shares."""

    workdir: str
    local_output: str
    result_path: str
    streams: dict[str, tuple[str, str]]
    common: dict[str, Any]


@dataclass
class _Outcome:
    """How the run ended: state, engine result, interruption, preemption, timeout, end time."""

    result: dict
    state: str
    interrupted: bool
    preempted: bool
    timeout: dict | None
    ended: datetime

    @property
    def plain_interrupt(self) -> bool:
        """Interrupted, not by a preemption: the run exits as interrupted and re-raises."""
        return self.interrupted and not self.preempted

    @property
    def exit_code(self) -> int:
        """The exit code the state gives, before any upload failure.

        >>> ended = datetime.now(UTC)
        >>> _Outcome({}, exitcodes.FAILED, True, False, None, ended).exit_code  # Ctrl-C
        130
        >>> _Outcome({}, exitcodes.PREEMPTED, True, True, None, ended).exit_code
        15
        """
        if self.plain_interrupt:
            return EXIT_INTERRUPTED
        return exitcodes.EXIT_CODE_BY_STATE[self.state]


def _run_engine(req: RunRequest, files: _RunFiles) -> tuple[dict, bool]:
    """Start papermill in its own process; stop it at the job timeout. Returns
    (the engine's result, whether the job timeout fired)."""
    proc = _start_engine(req, _engine_spec(req, files))
    # The report's libraries load while the kernel runs, not before it starts.
    threading.Thread(target=status.load_report_libraries, daemon=True).start()
    try:
        proc.wait(timeout=req.options.job_timeout)
        job_timed_out = False
    except subprocess.TimeoutExpired:
        job_timed_out = True
        _stop_at_job_timeout(req, proc)
    except KeyboardInterrupt:
        # Interrupted ourselves (Ctrl-C, or SIGTERM from `docker stop` / a VM shutdown):
        # stop the kernel; the caller still uploads what ran, then re-raises.
        _kill_tree(proc)
        return {
            "state": exitcodes.FAILED,
            "ename": "Interrupted",
            "evalue": "the executor was interrupted (SIGINT/SIGTERM) while the notebook ran",
            "interrupted": True,
        }, False
    return _engine_result(files.result_path, proc, job_timed_out), job_timed_out


def _engine_spec(req: RunRequest, files: _RunFiles) -> dict[str, Any]:
    """What the engine process is told to run (see :mod:`executor.engine_process`)."""
    opts = req.options
    progress_bar = opts.progress_bar
    if progress_bar is None:  # papermill's default, but never into a log file or collector
        progress_bar = not opts.log_output and sys.stderr.isatty()
    return {
        "input": req.local_input,
        "output": files.local_output,
        "parameters": req.parameters,
        "kernel": req.kernel,
        "language": req.language,
        "cwd": opts.cwd,
        "start_timeout": opts.start_timeout,
        "execution_timeout": opts.execution_timeout,
        "prepare_only": opts.prepare_only,
        "report_mode": opts.report_mode,
        "progress_bar": progress_bar,
        "log_output": opts.log_output,
        "stdout_file": files.streams.get("stdout", (None,))[0],
        "stderr_file": files.streams.get("stderr", (None,))[0],
        "log_format": req.log_format,
        "log_level": req.log_level,
        "run_id": req.run_id,
        "result": files.result_path,
    }


def _start_engine(req: RunRequest, spec: dict[str, Any]) -> subprocess.Popen:
    """The running engine process: the one started early if any, else a new one."""
    spec_path = os.path.join(req.workdir, "engine-spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f, default=str)
    if req.engine is not None:
        return req.engine.start(spec_path)
    return subprocess.Popen(
        [sys.executable, "-m", "executor.engine_process", spec_path], start_new_session=True
    )


def _stop_at_job_timeout(req: RunRequest, proc: subprocess.Popen) -> None:
    """At --job-timeout: interrupt the kernel, kill it if it outlives the kill grace."""
    log.error("job timeout of %s s reached: interrupting the kernel", req.options.job_timeout)
    if _interrupt_kernels(proc):
        try:
            proc.wait(timeout=req.kill_grace)
        except subprocess.TimeoutExpired:
            log.error("the kernel did not stop within %s s: killing it", req.kill_grace)
            _kill_tree(proc)
    else:
        _kill_tree(proc)


def _engine_result(result_path: str, proc: subprocess.Popen, job_timed_out: bool) -> dict:
    """The engine's result file; else a failure naming its exit code ({} at a job timeout)."""
    if os.path.exists(result_path):
        with open(result_path) as f:
            return json.load(f)
    if job_timed_out:
        return {}
    return {
        "state": exitcodes.FAILED,
        "ename": "ExecutorError",
        "evalue": f"the papermill process exited with code {proc.returncode}",
    }


def _upload_outputs(
    req: RunRequest,
    mirror: Mirror,
    data: bytes,
    html: str | None,
    streams: dict[str, tuple[str, str]],
    record: dict[str, Any],
) -> tuple[int, list[str]]:
    """Every upload after the run, within one --upload-deadline: the notebook, the HTML, the
    stream files, then the status. Returns (notebook uploads, what could not be uploaded).

    The last part of the deadline is kept for the status file: a poller (``executor wait``)
    must learn how the run ended even when the notebook's retries used up their share."""
    overall = Deadline(req.options.upload_deadline)
    reserve = min(max(req.options.upload_deadline / 4, 1.0), 30.0)
    deadline = Deadline(max(req.options.upload_deadline - reserve, req.options.upload_deadline / 2))
    failed: list[str] = []
    try:
        uploads = mirror.final_upload(deadline, data=data)
    except UploadFailed as exc:
        log.error("%s", exc)
        failed.append(f"notebook {req.output}")
        uploads = mirror.uploads
    extra = []
    if html is not None:
        extra.append(("HTML rendering", outputs.html_path(req.output), html.encode()))
    for stream, (local, target) in streams.items():
        if storage.is_gcs(target) and os.path.exists(local):
            with open(local, "rb") as f:
                extra.append((f"{stream} file", target, f.read()))
    for what, remote, payload in extra:
        try:
            bounded(lambda r=remote, p=payload: storage.write_bytes(r, p), deadline, what)
        except (JobError, UploadFailed) as exc:
            log.error("could not upload the %s to %s: %s", what, remote, exc)
            failed.append(f"{what} {remote}")
    record["exit_code"] = record["exit_code"] or (exitcodes.EXIT_UPLOAD_FAILED if failed else 0)
    record["notebook_uploads"] = uploads
    record["upload_failed"] = failed
    status_remote = outputs.status_path(req.output)
    try:
        text = json.dumps(record, indent=2)
        bounded(lambda: storage.write_text(status_remote, text), overall, "the status file")
    except (JobError, UploadFailed) as exc:
        log.error("could not write the status file %s: %s", status_remote, exc)
        failed.append(f"status {status_remote}")
    return uploads, failed


def execute(req: RunRequest) -> RunResult:
    """Execute a prepared run; outputs are uploaded whatever the outcome.

    Writes OUTPUT (mirrored while running), OUTPUT as HTML, ``OUTPUT.status.json`` and the
    --stdout-file/--stderr-file targets.
    """
    files = _start_run(req)
    mirror = Mirror(files.local_output, req.output, req.options.mirror_interval).start()
    try:
        result, job_timed_out = _run_engine(req, files)
    except BaseException:
        mirror.stop(0)
        raise
    outcome = _outcome(req, result, job_timed_out)
    nb, stopped, data = _finish_notebook(files.local_output, mirror, req.local_input, outcome)
    record = _final_status(outcome, stopped, files)
    uploads, failed = _upload_outputs(req, mirror, data, _render_html(nb), files.streams, record)
    exit_code = outcome.exit_code
    if failed and not exit_code:
        exit_code = exitcodes.EXIT_UPLOAD_FAILED
    _log_summary(req, record, failed, exit_code)
    shutil.rmtree(files.workdir, ignore_errors=True)
    if outcome.plain_interrupt:
        raise KeyboardInterrupt
    return RunResult(outcome.state, exit_code, record, uploads)


def _start_run(req: RunRequest) -> _RunFiles:
    """Set up the work dir and the stream files, log the run and write its RUNNING status."""
    workdir = req.workdir or tempfile.mkdtemp(prefix="executor-")
    req.workdir = workdir
    streams = _stream_files(req)
    common = dict(
        run_id=req.run_id,
        input_path=req.input,
        output_path=req.output,
        html=outputs.html_path(req.output),
        parameters=req.parameters,
        kernel=req.kernel,
        started=datetime.now(UTC),
    )
    log.info("run %s: %s -> %s with %s", req.run_id, req.input, req.output, req.parameters)
    storage.write_text(
        outputs.status_path(req.output),
        json.dumps(status.build_status(state=exitcodes.RUNNING, ended=None, **common), indent=2),
    )
    return _RunFiles(
        workdir=workdir,
        local_output=os.path.join(workdir, "output.ipynb"),
        result_path=os.path.join(workdir, "engine-result.json"),
        streams=streams,
        common=common,
    )


def _outcome(req: RunRequest, result: dict, job_timed_out: bool) -> _Outcome:
    """Interrupted / preempted / job or cell timeout; an interrupt shortens --upload-deadline."""
    opts = req.options
    interrupted = bool(result.get("interrupted"))
    preempted = (
        interrupted and req.interruption is not None and (req.interruption() == exitcodes.PREEMPTED)
    )
    if interrupted:
        # Shutting down: keep the final uploads short (a preempted VM has about 30 s left).
        limit = PREEMPTED_UPLOAD_SECONDS if preempted else 20.0
        req.options = dataclasses.replace(opts, upload_deadline=min(opts.upload_deadline, limit))
    if preempted:
        result.update(
            state=exitcodes.PREEMPTED,
            ename="Preempted",
            evalue="Compute Engine preempted this Spot VM; launch the same --run-id again to "
            "run the notebook again",
        )
    ended = datetime.now(UTC)
    state = result.get("state", exitcodes.FAILED)
    timeout = None
    if job_timed_out:
        state = exitcodes.TIMED_OUT
        timeout = {"kind": "job", "seconds": opts.job_timeout}
        raised = result.get("ename")  # what the interrupted cell raised, if it got that far
        result["evalue"] = f"the run exceeded --job-timeout of {opts.job_timeout} s" + (
            f" (the interrupted cell raised {raised})" if raised else ""
        )
        result["ename"] = "JobTimeout"
    elif state == exitcodes.TIMED_OUT:
        timeout = {"kind": "cell", "seconds": opts.execution_timeout}
    return _Outcome(result, state, interrupted, preempted, timeout, ended)


def _finish_notebook(
    local_output: str, mirror: Mirror, local_input: str, outcome: _Outcome
) -> tuple[Any, tuple[int, Any] | None, bytes]:
    """The final notebook, stopped cell marked if cut short, written: (nb, stopped, bytes)."""
    import nbformat

    nb = _final_notebook(local_output, mirror, local_input)
    state = outcome.state
    if state in (exitcodes.TIMED_OUT, exitcodes.KERNEL_DIED) or outcome.interrupted:
        status.mark_stopped(nb, state, outcome.result.get("evalue") or state)
        stopped = status.stopped_cell(nb, unfinished=True)
    else:
        stopped = status.stopped_cell(nb)
    nbformat.write(nb, local_output)
    with open(local_output, "rb") as f:
        data = f.read()
    return nb, stopped, data


def _final_status(
    outcome: _Outcome, stopped: tuple[int, Any] | None, files: _RunFiles
) -> dict[str, Any]:
    """The final status record: state, error, stopped cell, timeout, glued values, exit code."""
    exit_code = outcome.exit_code
    stopped_at = None
    if stopped is not None and outcome.state != exitcodes.SUCCEEDED:
        number, cell = stopped
        stopped_at = {
            "index": number,
            "execution_count": cell.get("execution_count"),
            "source": "".join(cell.get("source", ""))[:300],
        }
    error = None
    if outcome.state != exitcodes.SUCCEEDED:
        error = {"name": outcome.result.get("ename"), "message": outcome.result.get("evalue")}
    record = status.build_status(
        state=outcome.state,
        ended=outcome.ended,
        error=error,
        stopped_at=stopped_at,
        timeout=outcome.timeout,
        glued=status.glued_values(files.local_output),
        **files.common,
    )
    record["exit_code"] = exit_code
    return record


def _render_html(nb: Any) -> str | None:
    """The notebook as HTML, or None when it cannot be rendered."""
    try:
        return status.render_html(nb)
    except Exception as exc:  # the notebook itself is uploaded; HTML is a convenience
        log.warning("could not render the notebook as HTML: %s", exc)
        return None


def _log_summary(
    req: RunRequest, record: dict[str, Any], failed: list[str], exit_code: int
) -> None:
    """One line saying how the run ended, where it stopped and what could not be uploaded."""
    state, stopped_at, error = record["state"], record["failed_cell"], record["error"]
    summary = f"run {req.run_id} {state} in {record['duration_seconds']:.1f} s"
    if stopped_at and error:
        summary += f" at cell {stopped_at['index']}: {error['name']}: {error['message']}"
    if failed:
        log.error(
            "%s, but the upload failed for %s within --upload-deadline %g s (exit code %d)",
            summary, "; ".join(failed), req.options.upload_deadline, exit_code,
        )  # fmt: skip
    else:
        level = logging.INFO if state == exitcodes.SUCCEEDED else logging.ERROR
        log.log(level, "%s; output %s", summary, req.output)


def _final_notebook(local_output: str, mirror: Mirror, local_input: str):
    """The last whole notebook papermill wrote; a kill mid-write falls back to the last
    copy the mirror saw, then to the input."""
    import nbformat

    try:
        return nbformat.read(local_output, as_version=4)
    except Exception:
        if mirror.last_valid:
            return nbformat.reads(mirror.last_valid.decode(), as_version=4)
        log.warning("no executed notebook was written; uploading the input notebook")
        return nbformat.read(local_input, as_version=4)
