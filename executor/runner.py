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
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import nbformat

from executor import exitcodes, kernels, outputs, status
from executor import params as paramlib
from executor.mirror import Mirror, UploadFailed
from jobcommon import storage
from jobcommon.errors import BadInputError, UsageError

log = logging.getLogger(__name__)


@dataclass
class RunRequest:
    """Everything one execution needs, already checked."""

    input: str
    output: str
    local_input: str
    parameters: dict[str, Any]
    kernel: str
    run_id: str
    cwd: str | None = None
    execution_timeout: float | None = None
    job_timeout: float | None = None
    start_timeout: float = 60.0
    mirror_interval: float = 10.0
    upload_deadline: float = 300.0
    kill_grace: float = 10.0
    log_output: bool = False
    log_format: str = "auto"
    log_level: str = "INFO"
    workdir: str = field(default="", repr=False)


@dataclass
class RunResult:
    state: str
    exit_code: int
    status: dict[str, Any]
    notebook_uploads: int = 0


def load_notebook(path: str, source: str):
    try:
        return nbformat.read(path, as_version=4)
    except Exception as exc:
        raise BadInputError(
            f"{source} is not a readable Jupyter notebook ({type(exc).__name__}: {exc}); "
            "pass an .ipynb file saved by Jupyter"
        ) from exc


def prepare(
    input_path: str,
    output_template: str,
    *,
    files: list[str] = (),
    yaml_strings: list[str] = (),
    params: list[tuple[str, str]] = (),
    raw: list[tuple[str, str]] = (),
    given: dict[str, paramlib.Given] | None = None,
    kernel: str | None = None,
    allow_unknown: bool = False,
    run_id: str | None = None,
    workdir: str | None = None,
    **options: Any,
) -> RunRequest:
    """Fetch the input, check and type the parameters, fill the OUTPUT template, pick a kernel.

    ``given`` (already collected parameters) is merged under ``files``/``-y``/``-p``/``-r``.
    """
    storage.validate(input_path)
    if not input_path.endswith(".ipynb"):
        raise UsageError(f"input {input_path!r} must be a notebook ending in .ipynb")
    workdir = workdir or tempfile.mkdtemp(prefix="executor-")
    local_input = os.path.join(workdir, "input.ipynb")
    storage.download_file(input_path, local_input)
    nb = load_notebook(local_input, input_path)
    merged = dict(given or {})
    merged.update(paramlib.collect(list(files), list(yaml_strings), list(params), list(raw)))
    declared = paramlib.declared_parameters(local_input)
    typed = paramlib.apply_types(merged, declared, allow_unknown)
    run_id = run_id or outputs.new_run_id()
    output = outputs.render_output(output_template, typed, run_id)
    chosen = kernels.choose_kernel(nb, kernel)
    return RunRequest(
        input=input_path,
        output=output,
        local_input=local_input,
        parameters=typed,
        kernel=chosen,
        run_id=run_id,
        workdir=workdir,
        **options,
    )


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


def _run_engine(req: RunRequest, local_output: str, result_path: str) -> tuple[dict, bool]:
    """Start papermill in its own process; stop it at the job timeout. Returns
    (the engine's result, whether the job timeout fired)."""
    spec = {
        "input": req.local_input,
        "output": local_output,
        "parameters": req.parameters,
        "kernel": req.kernel,
        "cwd": req.cwd,
        "start_timeout": req.start_timeout,
        "execution_timeout": req.execution_timeout,
        "log_output": req.log_output,
        "log_format": req.log_format,
        "log_level": req.log_level,
        "run_id": req.run_id,
        "result": result_path,
    }
    spec_path = os.path.join(req.workdir, "engine-spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f, default=str)
    proc = subprocess.Popen(
        [sys.executable, "-m", "executor.engine_process", spec_path], start_new_session=True
    )
    job_timed_out = False
    try:
        proc.wait(timeout=req.job_timeout)
    except subprocess.TimeoutExpired:
        job_timed_out = True
        log.error("job timeout of %s s reached: interrupting the kernel", req.job_timeout)
        if _interrupt_kernels(proc):
            try:
                proc.wait(timeout=req.kill_grace)
            except subprocess.TimeoutExpired:
                log.error("the kernel did not stop within %s s: killing it", req.kill_grace)
                _kill_tree(proc)
        else:
            _kill_tree(proc)
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
    result: dict = {}
    if os.path.exists(result_path):
        with open(result_path) as f:
            result = json.load(f)
    elif not job_timed_out:
        result = {
            "state": exitcodes.FAILED,
            "ename": "ExecutorError",
            "evalue": f"the papermill process exited with code {proc.returncode}",
        }
    return result, job_timed_out


def execute(req: RunRequest) -> RunResult:
    """Execute a prepared run; outputs are uploaded whatever the outcome.

    Writes OUTPUT (mirrored while running), OUTPUT as HTML and ``OUTPUT.status.json``.
    """
    workdir = req.workdir or tempfile.mkdtemp(prefix="executor-")
    req.workdir = workdir
    local_output = os.path.join(workdir, "output.ipynb")
    result_path = os.path.join(workdir, "engine-result.json")
    html_remote = outputs.html_path(req.output)
    status_remote = outputs.status_path(req.output)
    started = datetime.now(UTC)
    common = dict(
        run_id=req.run_id,
        input_path=req.input,
        output_path=req.output,
        html=html_remote,
        parameters=req.parameters,
        kernel=req.kernel,
        started=started,
    )
    log.info("run %s: %s -> %s with %s", req.run_id, req.input, req.output, req.parameters)
    storage.write_text(
        status_remote,
        json.dumps(status.build_status(state=exitcodes.RUNNING, ended=None, **common), indent=2),
    )
    mirror = Mirror(local_output, req.output, req.mirror_interval).start()
    try:
        result, job_timed_out = _run_engine(req, local_output, result_path)
    except BaseException:
        mirror.stop()
        raise
    interrupted = bool(result.get("interrupted"))
    if interrupted:
        # Shutting down: keep the final upload short.
        req.upload_deadline = min(req.upload_deadline, 20.0)
    ended = datetime.now(UTC)
    state = result.get("state", exitcodes.FAILED)
    timeout = None
    if job_timed_out:
        state = exitcodes.TIMED_OUT
        timeout = {"kind": "job", "seconds": req.job_timeout}
        raised = result.get("ename")  # what the interrupted cell raised, if it got that far
        result["evalue"] = f"the run exceeded --job-timeout of {req.job_timeout} s" + (
            f" (the interrupted cell raised {raised})" if raised else ""
        )
        result["ename"] = "JobTimeout"
    elif state == exitcodes.TIMED_OUT:
        timeout = {"kind": "cell", "seconds": req.execution_timeout}

    mirror.stop()
    nb = _final_notebook(local_output, mirror, req.local_input)
    stopped = status.stopped_cell(nb)
    if state in (exitcodes.TIMED_OUT, exitcodes.KERNEL_DIED) or interrupted:
        reason = result.get("evalue") or state
        status.mark_stopped(nb, state, reason)
        stopped = status.stopped_cell(nb, unfinished=True)
    nbformat.write(nb, local_output)
    with open(local_output, "rb") as f:
        data = f.read()

    exit_code = exitcodes.EXIT_CODE_BY_STATE[state]
    try:
        uploads = mirror.final_upload(req.upload_deadline, data=data)
    except UploadFailed as exc:
        log.error("%s", exc)
        exit_code = exitcodes.EXIT_UPLOAD_FAILED
        uploads = mirror.uploads

    stopped_at = None
    if stopped is not None and state != exitcodes.SUCCEEDED:
        index, cell = stopped
        stopped_at = {
            "index": index,
            "execution_count": cell.get("execution_count"),
            "source": "".join(cell.get("source", ""))[:300],
        }
    error = None
    if state != exitcodes.SUCCEEDED:
        error = {"name": result.get("ename"), "message": result.get("evalue")}
    record = status.build_status(
        state=state,
        ended=ended,
        error=error,
        stopped_at=stopped_at,
        timeout=timeout,
        glued=status.glued_values(local_output),
        **common,
    )
    record["exit_code"] = exit_code
    record["notebook_uploads"] = uploads
    try:
        storage.write_text(html_remote, status.render_html(nb))
    except Exception as exc:  # the notebook itself is uploaded; HTML is a convenience
        log.warning("could not write the HTML rendering %s: %s", html_remote, exc)
    try:
        storage.write_text(status_remote, json.dumps(record, indent=2))
    except Exception as exc:
        log.error("could not write the status file %s: %s", status_remote, exc)
        exit_code = exit_code or exitcodes.EXIT_UPLOAD_FAILED
    level = logging.INFO if state == exitcodes.SUCCEEDED else logging.ERROR
    log.log(
        level,
        "run %s %s in %.1f s%s; output %s",
        req.run_id,
        state,
        record["duration_seconds"],
        f" at cell {stopped_at['index']}: {error['name']}: {error['message']}"
        if stopped_at and error
        else "",
        req.output,
    )
    shutil.rmtree(workdir, ignore_errors=True)
    if interrupted:
        raise KeyboardInterrupt
    return RunResult(state, exit_code, record, uploads)


def _final_notebook(local_output: str, mirror: Mirror, local_input: str):
    """The last whole notebook papermill wrote; a kill mid-write falls back to the last
    copy the mirror saw, then to the input."""
    try:
        return nbformat.read(local_output, as_version=4)
    except Exception:
        if mirror.last_valid:
            return nbformat.reads(mirror.last_valid.decode(), as_version=4)
        log.warning("no executed notebook was written; uploading the input notebook")
        return nbformat.read(local_input, as_version=4)
