"""Command line of ``python -m executor``: run, batch, vm-run and launch."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

from executor import exitcodes
from jobcommon.errors import UsageError
from jobcommon.logs import add_logging_flags, setup_logging

log = logging.getLogger("executor")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 seconds")
    return value


def add_parameter_flags(parser: argparse.ArgumentParser) -> None:
    """Papermill's parameter options, merged in this order (later wins): -f, -y, -p, -r."""
    group = parser.add_argument_group("parameters (merged -f, -y, -p, -r; later wins)")
    group.add_argument(
        "-p", "--parameters", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
        help="a parameter; True/False/None/int/float are converted, then given the type of "
        "the default in the notebook's parameters cell",
    )  # fmt: skip
    group.add_argument(
        "-r", "--parameters_raw", "--parameters-raw", dest="parameters_raw", nargs=2,
        action="append", default=[], metavar=("NAME", "VALUE"),
        help="a parameter kept as a string",
    )  # fmt: skip
    group.add_argument(
        "-f", "--parameters_file", "--parameters-file", dest="parameters_file",
        action="append", default=[], metavar="FILE",
        help="a YAML file of parameters, local or gs://",
    )  # fmt: skip
    group.add_argument(
        "-y", "--parameters_yaml", "--parameters-yaml", dest="parameters_yaml",
        action="append", default=[], metavar="YAML",
        help="a YAML string of parameters; a value that is a path ending in .yaml/.yml is "
        "read as a file, with a warning",
    )  # fmt: skip
    parser.add_argument(
        "--allow-unknown-params", action="store_true",
        help="accept parameters the notebook's parameters cell does not define",
    )  # fmt: skip


def add_execution_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("execution")
    group.add_argument(
        "-k",
        "--kernel",
        default=None,
        help="kernel name (default: the notebook's, or an installed kernel of the same language)",
    )
    group.add_argument("--cwd", default=None, help="working directory of the kernel")
    group.add_argument(
        "--execution-timeout",
        type=_positive,
        default=None,
        metavar="S",
        help="seconds one cell may run (default: no limit)",
    )
    group.add_argument(
        "--job-timeout",
        type=_positive,
        default=None,
        metavar="S",
        help="seconds the whole run may take (default: no limit)",
    )
    group.add_argument(
        "--start-timeout",
        type=_positive,
        default=60.0,
        metavar="S",
        help="seconds to wait for the kernel to start (default: %(default)s)",
    )
    group.add_argument(
        "--mirror-interval",
        type=_positive,
        default=10.0,
        metavar="S",
        help="upload the running notebook at most once per S seconds, "
        "floor 1 (default: %(default)s)",
    )
    group.add_argument(
        "--upload-deadline",
        type=_positive,
        default=300.0,
        metavar="S",
        help="keep retrying the final upload this long (default: %(default)s)",
    )
    group.add_argument(
        "--log-output", action="store_true", help="also log the notebook's cell output"
    )


def execution_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "cwd": args.cwd,
        "execution_timeout": args.execution_timeout,
        "job_timeout": args.job_timeout,
        "start_timeout": args.start_timeout,
        "mirror_interval": max(1.0, args.mirror_interval),
        "upload_deadline": args.upload_deadline,
        "log_output": args.log_output,
        "log_format": args.log_format,
        "log_level": args.log_level,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m executor",
        description="Run Jupyter notebooks unattended with papermill, from and to gs://.",
        epilog=exitcodes.HELP_TEXT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="execute one notebook",
        description="Execute INPUT into OUTPUT (local or gs://). OUTPUT may use {run_id} and "
        "parameter names, e.g. gs://bkt/out/{run_id}/result.ipynb. Also writes OUTPUT as HTML "
        "(.html) and OUTPUT.status.json.",
        epilog=exitcodes.HELP_TEXT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("input", help="the notebook to run (.ipynb, local or gs://)")
    run.add_argument("output", help="where the executed notebook goes (template allowed)")
    run.add_argument("--run-id", default=None, help="run id (default: time + random suffix)")
    add_parameter_flags(run)
    add_execution_flags(run)
    add_logging_flags(run)

    batch = sub.add_parser(
        "batch",
        help="execute one notebook with many parameter sets, in parallel",
        description="Run INPUT once per parameter set in --runs (a YAML/JSON list, "
        '{"grid": {"lr": [...], ...}} or a CSV with one column per parameter); each run '
        "writes OUTPUT_PREFIX/<run>/output.ipynb; then metrics.csv, metrics.md and "
        "summary.png in OUTPUT_PREFIX. Exit code 0 when every run succeeded, else 10.",
        epilog=exitcodes.HELP_TEXT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    add_logging_flags(batch)

    vm = sub.add_parser(
        "vm-run",
        help="on a VM: run what the instance metadata says, then delete the VM",
        description="Read input_notebook_path, output_notebook_path, parameters_file, "
        "parameters ('-p a 1 -p b 2'), parameters_yaml, kernel, execution_timeout, "
        "job_timeout, mirror_interval and stay_alive from the instance metadata "
        "(GCE_METADATA_HOST overrides the server), run the notebook, upload the outputs and, "
        "unless stay_alive is true, delete this VM through the Compute Engine API "
        "(COMPUTE_API_ENDPOINT overrides the endpoint).",
        epilog=exitcodes.HELP_TEXT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_logging_flags(vm)

    launch = sub.add_parser(
        "launch",
        help="create a GPU VM that runs the notebook and deletes itself",
        description="Create a Compute Engine VM whose startup script installs the GPU driver "
        "if needed and starts the executor image (python -m executor vm-run) with the run in "
        "the instance metadata. Nothing here deletes the VM: it deletes itself when done.",
        epilog=exitcodes.HELP_TEXT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    launch.add_argument("input", help="the notebook (gs://)")
    launch.add_argument("output", help="the executed notebook (gs://, template allowed)")
    from executor import launch as launch_mod

    launch_mod.add_flags(launch)
    add_parameter_flags(launch)
    add_logging_flags(launch)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from executor import runner

    req = runner.prepare(
        args.input,
        args.output,
        files=args.parameters_file,
        yaml_strings=args.parameters_yaml,
        params=[tuple(p) for p in args.parameters],
        raw=[tuple(p) for p in args.parameters_raw],
        kernel=args.kernel,
        allow_unknown=args.allow_unknown_params,
        run_id=args.run_id,
        **execution_options(args),
    )
    return runner.execute(req).exit_code


def _terminate(signum, frame) -> None:
    # `docker stop` and VM shutdown send SIGTERM: unwind like Ctrl-C, so the kernel is
    # stopped and the notebook so far is uploaded.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    setup_logging("executor", args.log_level, args.log_format)
    if args.command == "run":
        return _cmd_run(args)
    if args.command == "batch":
        from executor import batch

        return batch.main(args)
    if args.command == "vm-run":
        from executor import vm

        return vm.main(args.log_format, args.log_level)
    if args.command == "launch":
        from executor import launch

        return launch.main(args)
    raise UsageError(f"unknown command {args.command!r}")
