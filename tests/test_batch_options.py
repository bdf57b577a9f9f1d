"""The batch command's options: one parser, checked once, without loading Beam or TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import pytest

from batch import options
from jobcommon.errors import UsageError
from tests.batch_helpers import repo_root

# Runs the entry point as ``python -m`` does, then lists the heavy modules it loaded (its
# os._exit, which skips interpreter teardown, is turned back into a SystemExit here).
LIGHT = (
    "import os, runpy, sys\n"
    "def _exit(code):\n"
    "    raise SystemExit(code)\n"
    "os._exit = _exit\n"
    "sys.argv = ['batch.predict', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_module('batch.predict', run_name='__main__')\n"
    "except SystemExit as exit:\n"
    "    heavy = [m for m in ('apache_beam', 'tensorflow', 'keras', 'gcsfs') if m in sys.modules]\n"
    "    print('HEAVY', heavy, 'CODE', exit.code)\n"
)


@pytest.mark.parametrize(
    "argv, code",
    [
        (["--help"], 0),
        (["--batch-size", "0"], 2),
        (["--data-format", "JSON", "--log-format", "text"], 2),
    ],
)
def test_help_and_flag_errors_load_neither_beam_nor_tensorflow(argv, code):
    proc = subprocess.run(
        [sys.executable, "-c", LIGHT, *argv], cwd=repo_root(), capture_output=True, text=True
    )
    assert f"HEAVY [] CODE {code}" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]


def _resolve(*argv: str) -> options.BatchOptions:
    args, _ = options.build_parser().parse_known_args(
        ["--input-paths", "gs://bkt/in/*", "--output-path", "gs://bkt/out",
         "--model-dir", "gs://bkt/m", *argv]
    )  # fmt: skip
    return options.resolve(args)


def test_every_spelling_of_a_format_is_one_format():
    for spelling, want in (
        ("JSON", "JSON"), ("TEXT", "JSON"), ("jsonl", "JSON"), ("csv", "CSV"),
        ("TF_RECORD", "TF_RECORD"), ("tf-record", "TF_RECORD"),
        ("tf-record-gzip", "TF_RECORD_GZIP"), ("file-list", "FILE_LIST"),
    ):  # fmt: skip
        assert _resolve("--data-format", spelling).data_format == want


def test_settings_that_cannot_run_are_named():
    with pytest.raises(UsageError, match="bigquery is not supported"):
        _resolve("--data-format", "bigquery")
    with pytest.raises(UsageError, match="not both"):
        _resolve("--data-format", "jsonl", "--included-fields", "a", "--excluded-fields", "b")
    with pytest.raises(UsageError, match="apply to jsonl and csv"):
        _resolve("--data-format", "tf-record", "--instance-type", "array")
    opts = _resolve("--data-format", "csv", "--included-fields", "b,a", "--key-field", "id")
    assert opts.included_fields == ("b", "a") and opts.key_field == "id"
    assert opts.batch_size == options.DEFAULT_BATCH_SIZE and opts.layout == options.LEGACY
