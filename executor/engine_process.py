"""The process that runs papermill for one notebook; the parent can stop it at any time.

Started by :mod:`executor.runner` as ``python -m executor.engine_process SPEC.json``, in its
own session so that a job timeout can interrupt and, if need be, kill it with its kernel.
It writes the local output notebook (papermill saves it at every cell start and end) and,
at the end, ``SPEC["result"]``: the state and the error papermill or nbclient raised.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from executor import exitcodes


def classify(exc: BaseException) -> dict:
    """Map what papermill/nbclient raised to a run state and an error name and message."""
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    message = str(exc).strip()
    if isinstance(exc, PapermillExecutionError):
        return {
            "state": exitcodes.FAILED,
            "ename": exc.ename,
            "evalue": exc.evalue,
            "execution_count": exc.exec_count,
        }
    if isinstance(exc, CellTimeoutError):
        return {
            "state": exitcodes.TIMED_OUT,
            "timeout": "cell",
            "ename": "CellTimeoutError",
            "evalue": message.splitlines()[0] if message else "cell timed out",
        }
    if isinstance(exc, DeadKernelError) or "kernel died" in message.lower():
        return {"state": exitcodes.KERNEL_DIED, "ename": type(exc).__name__, "evalue": message}
    return {"state": exitcodes.FAILED, "ename": type(exc).__name__, "evalue": message}


def execute(spec: dict) -> dict:
    import contextlib

    import papermill

    with contextlib.ExitStack() as files:
        streams = {
            f"{name}_file": files.enter_context(open(spec[f"{name}_file"], "w", encoding="utf-8"))
            for name in ("stdout", "stderr")
            if spec.get(f"{name}_file")
        }
        try:
            papermill.execute_notebook(
                spec["input"],
                spec["output"],
                parameters=spec["parameters"],
                kernel_name=spec["kernel"],
                language=spec.get("language"),
                cwd=spec.get("cwd"),
                start_timeout=spec.get("start_timeout", 60),
                execution_timeout=spec.get("execution_timeout"),
                prepare_only=spec.get("prepare_only", False),
                report_mode=spec.get("report_mode", False),
                progress_bar=spec.get("progress_bar", False),
                log_output=spec.get("log_output", False),
                **streams,
            )
        except Exception as exc:  # every failure is a result to report, not a crash
            return classify(exc)
    return {"state": exitcodes.SUCCEEDED}


def main(argv: list[str]) -> int:
    from jobcommon.logs import setup_logging

    with open(argv[0]) as f:
        spec = json.load(f)
    setup_logging(
        "executor",
        spec.get("log_level", "INFO"),
        spec.get("log_format", "auto"),
        {"run_id": spec.get("run_id", "")},
    )
    # papermill logs every cell start at INFO; keep that only when cell output is wanted.
    if not spec.get("log_output"):
        logging.getLogger("papermill").setLevel(logging.WARNING)
    result = execute(spec)
    tmp = spec["result"] + ".partial"
    with open(tmp, "w") as f:
        json.dump(result, f, default=str)
    os.replace(tmp, spec["result"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
