"""``python -m batch.predict``: score JSON lines, CSV, TFRecords or listed files with a
SavedModel, in batch.

Runs Beam's local runner by default (in this process; one model copy per worker process) or
Dataflow with ``--runner DataflowRunner`` (workers run the project's batch image, see
:mod:`batch.dataflow`). Flags not listed in ``--help`` are passed to Beam as pipeline
options (``--project``, ``--region``, ``--temp_location``, ``--machine_type``,
``--direct_num_workers``, ...). Flags and defaults: :mod:`batch.options`; job bodies:
:mod:`batch.jobspec`. Beam and TensorFlow are imported only once the flags are checked.

Example::

    python -m batch.predict --input-paths 'gs://b/in/*.jsonl' --data-format jsonl \\
        --output-path gs://b/out --model-dir gs://b/job/keras_export
    python -m batch.predict --job-spec job.json   # an AI Platform or Vertex AI job body
    python -m batch.predict ... --runner DataflowRunner --project P --region us-central1 \\
        --accelerator nvidia-tesla-t4:1 --machine_type n1-standard-8
"""

from __future__ import annotations

import logging
import os
import sys

from batch import options as optionslib
from batch.dataflow import DEFAULT_IMAGE_TEMPLATE  # noqa: F401  (the image tests use it)
from jobcommon import cli
from jobcommon.logs import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = optionslib.build_parser()
    args, beam_args = parser.parse_known_args(argv)
    setup_logging("batch", args.log_level, args.log_format)
    opts = optionslib.resolve(args)
    from batch import job  # Beam, TensorFlow and the storage layer load from here on

    return job.run(opts, beam_args, args.log_level)


def exit_now(code: int) -> None:
    """End the command without tearing down TensorFlow and Beam.

    Interpreter teardown after a finished job took 2-3 s on 2 cores (TensorFlow's and Beam's
    objects and threads), longer than the job's own start-up target; every output is
    written by then, so only what was logged and printed is flushed.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(cli.run(main))
