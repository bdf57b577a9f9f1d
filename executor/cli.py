"""Command line of ``python -m executor``: run, batch (alias sweep), vm-run and launch.

Only argparse and :mod:`executor.options` are imported here: papermill, nbformat, nbconvert
and jupyter_client load when a command needs them, so ``--help`` and flag errors are instant.
"""

from __future__ import annotations

import argparse
import logging
import platform
import signal
import threading
from typing import TYPE_CHECKING

from executor import exitcodes
from executor.options import RunOptions, add_execution_flags, add_parameter_flags
from jobcommon.errors import UsageError
from jobcommon.logs import add_logging_flags, setup_logging

if TYPE_CHECKING:
    from executor.runner import Engine

log = logging.getLogger("executor")


class _Version(argparse.Action):
    """``--version``: ours, papermill's and Python's, like papermill's own flag."""

    def __init__(self, option_strings, dest, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from importlib.metadata import PackageNotFoundError, version

        import executor

        try:
            papermill_version = version("papermill")
        except PackageNotFoundError:
            papermill_version = "not installed"
        print(
            f"executor {executor.__version__} (papermill {papermill_version}, "
            f"Python {platform.python_version()})"
        )
        parser.exit()


def _subparser(sub, name: str, **kwargs) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        epilog=exitcodes.HELP_TEXT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m executor",
        description="Run Jupyter notebooks unattended with papermill, from and to gs://.",
        epilog=exitcodes.HELP_TEXT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True)

    run = _subparser(
        sub,
        "run",
        help="execute one notebook",
        description="Execute INPUT into OUTPUT (local or gs://). OUTPUT may use {run_id} and "
        "parameter names, e.g. gs://bkt/out/{run_id}/result.ipynb. Also writes OUTPUT as HTML "
        "(.html) and OUTPUT.status.json.",
    )
    run.add_argument("--version", action=_Version)
    run.add_argument("input", help="the notebook to run (.ipynb, local or gs://)")
    run.add_argument(
        "output", nargs="?", help="where the executed notebook goes (template allowed)"
    )
    run.add_argument(
        "--help-notebook",
        action="store_true",
        help="print the parameters the notebook's parameters cell defines, and exit",
    )
    add_parameter_flags(run)
    add_execution_flags(run)
    add_logging_flags(run)

    batch = _subparser(
        sub,
        "batch",
        aliases=["sweep"],
        help="execute one notebook with many parameter sets, in parallel",
        description="Run INPUT once per parameter set in --runs (a YAML/JSON list, "
        '{"grid": {"lr": [...], ...}} or a CSV with one column per parameter); each run '
        "writes OUTPUT_PREFIX/<run>/output.ipynb; then metrics.csv, metrics.md and "
        "summary.png in OUTPUT_PREFIX. Exit code 0 when every run succeeded, else 10.",
    )
    batch.add_argument("input", help="the notebook to run (.ipynb, local or gs://)")
    batch.add_argument("output_prefix", help="directory or gs:// prefix for all outputs")
    batch.add_argument(
        "--runs",
        required=True,
        metavar="FILE",
        help="parameter sets: .yaml/.yml/.json list or grid, or .csv",
    )
    batch.add_argument(
        "-j",
        "--parallel",
        type=int,
        default=None,
        metavar="N",
        help="kernels at once (default: what the machine's cores and memory hold)",
    )
    add_parameter_flags(batch)
    add_execution_flags(batch)
    from executor import follow, vertex  # light: their heavy imports are inside functions

    vertex.add_flags(batch)
    add_logging_flags(batch)

    vm = _subparser(
        sub,
        "vm-run",
        help="on a VM: run what the instance metadata says, then delete the VM",
        description="Read input_notebook_path, output_notebook_path, stay_alive and every "
        "run option (as `executor launch` writes them: parameters ('-p a 1 -p b 2'), "
        "parameters_file, kernel, job_timeout, ...) from the instance metadata "
        "(GCE_METADATA_HOST overrides the server), run the notebook, upload the outputs and, "
        "unless stay_alive is true, delete this VM through the Compute Engine API "
        "(COMPUTE_API_ENDPOINT overrides the endpoint).",
    )
    add_logging_flags(vm)

    launch = _subparser(
        sub,
        "launch",
        help="create a GPU VM that runs the notebook and deletes itself",
        description="Create a Compute Engine VM whose startup script installs the GPU driver "
        "if needed and starts the executor image (python -m executor vm-run) with the run in "
        "the instance metadata. Nothing here deletes the VM: it deletes itself when done.",
    )
    launch.add_argument("input", help="the notebook (gs://)")
    launch.add_argument("output", help="the executed notebook (gs://, template allowed)")
    from executor import launch as launch_flags  # light: its heavy imports are inside functions

    launch_flags.add_flags(launch)
    add_parameter_flags(launch)
    add_execution_flags(launch)
    add_logging_flags(launch)

    status_cmd = _subparser(
        sub,
        "status",
        help="print a run's state from its status file",
        description="Print the state of the run whose output notebook is RUN_OUTPUT, from "
        "RUN_OUTPUT.status.json (written when the run starts and when it ends).",
    )
    follow.add_status_flags(status_cmd)
    add_logging_flags(status_cmd)
    wait_cmd = _subparser(
        sub,
        "wait",
        help="wait for a run to end; exit with its exit code",
        description="Poll RUN_OUTPUT.status.json until the run's state is final (also while "
        "no status file exists yet), print it, and exit with the run's exit code; "
        f"--timeout ends the wait with exit code {exitcodes.EXIT_WAIT_TIMED_OUT}.",
    )
    follow.add_wait_flags(wait_cmd)
    add_logging_flags(wait_cmd)
    return parser


def _cmd_run(args: argparse.Namespace, engine: Engine | None) -> int:
    from executor import runner

    options = RunOptions.from_args(args)
    if args.help_notebook:
        text, code = runner.notebook_help(args.input, options)
        print(text, end="")
        return code
    req = runner.prepare(
        args.input, args.output, options,
        log_format=args.log_format, log_level=args.log_level, engine=engine,
    )  # fmt: skip
    return runner.execute(req).exit_code


def _terminate(signum, frame) -> None:
    # `docker stop` and VM shutdown send SIGTERM: unwind like Ctrl-C, so the kernel is
    # stopped and the notebook so far is uploaded.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run" and not args.output and not args.help_notebook:
        parser.error("run: the OUTPUT argument is required (unless --help-notebook)")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    engine = None
    if args.command == "run" and not args.help_notebook:
        from executor.runner import Engine

        # Started first: papermill's imports overlap with setting up logging and with
        # fetching and checking the input.
        engine = Engine()
    setup_logging("executor", args.log_level, args.log_format)
    if args.command == "run":
        return _cmd_run(args, engine)
    if args.command in ("batch", "sweep"):
        from executor import sweep

        return sweep.main(args)
    if args.command == "vm-run":
        from executor import vm

        return vm.main(args.log_format, args.log_level)
    if args.command == "launch":
        from executor import launch

        return launch.main(args)
    if args.command in ("status", "wait"):
        from executor import follow

        return follow.status_main(args) if args.command == "status" else follow.wait_main(args)
    raise UsageError(f"unknown command {args.command!r}")
