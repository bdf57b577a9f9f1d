"""The process that runs papermill for one notebook; the parent can stop it at any time.

Started by :mod:`executor.runner` as ``python -m executor.engine_process SPEC.json``, in its
own session so that a job timeout can interrupt and, if need be, kill it with its kernel.
Started without SPEC.json it imports papermill at once and then reads the spec's path from
stdin: ``executor run`` starts it so before preparing the run, so that papermill's imports
overlap with that work (an empty stdin means the run was called off).
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


class _LoggingOnFirstRecord(logging.Handler):
    """Sets up the real logging when the first record comes, then hands it over.

    JSON logging takes most of a second to import, and a run that goes well often logs
    nothing from this process (papermill is quiet below WARNING unless --log-output).
    """

    def __init__(self, spec: dict) -> None:
        super().__init__()
        self.spec = spec

    def emit(self, record: logging.LogRecord) -> None:
        from jobcommon.logs import setup_logging

        setup_logging(
            "executor",
            self.spec.get("log_level", "INFO"),
            self.spec.get("log_format", "auto"),
            {"run_id": self.spec.get("run_id", "")},
        )  # replaces this handler on the root logger
        for handler in logging.getLogger().handlers:
            if record.levelno >= handler.level:
                handler.handle(record)


def main(argv: list[str]) -> int:
    if argv:
        spec_path = argv[0]
    else:
        import papermill  # noqa: F401  (the slow part of starting, done while the run is prepared)

        spec_path = sys.stdin.readline().strip()
        if not spec_path:
            return 0
    with open(spec_path) as f:
        spec = json.load(f)
    root = logging.getLogger()
    root.addHandler(_LoggingOnFirstRecord(spec))
    root.setLevel(spec.get("log_level", "INFO"))
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
    code = main(sys.argv[1:])
    # The result is on disk and the kernel is gone: end now, without the second or so an
    # orderly interpreter shutdown spends tearing down papermill's and zmq's objects, which
    # the parent would wait for.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
