"""Convert numpy (.npz), CSV or JSON-lines data to sharded TFRecords plus ``schema.json``.

Example::

    python -m trainer.convert --input sklearn:digits --output-dir gs://demo/digits \\
        --feature-name pixels --num-shards 4 --eval-fraction 0.2
    python -m trainer.convert --input data.csv --label species --output-dir ./data --gzip

Writes ``train-0000i-of-0000N.tfrecord[.gz]``, ``eval-…`` and ``schema.json`` below
``--output-dir`` (local or ``gs://``). ``sklearn:NAME`` reads one of scikit-learn's bundled
data sets (digits, wine, breast_cancer, iris, diabetes), offline. A table's schema is
inferred as the trainer infers it from a CSV (see :mod:`trainer.tabular`): the trainer
also reads such files directly, without this step.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile

import numpy as np

from jobcommon import cli
from jobcommon.errors import UsageError
from jobcommon.logs import add_logging_flags, setup_logging
from trainer import data, tabular

log = logging.getLogger("trainer.convert")

SKLEARN_SETS = ("digits", "wine", "breast_cancer", "iris", "diabetes")


def _sklearn(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name not in SKLEARN_SETS:
        raise UsageError(f"--input sklearn:{name}: choose one of {', '.join(SKLEARN_SETS)}")
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    x = bunch.data.astype(np.float32)
    if name == "digits":
        x = x / 16.0  # pixel intensities 0..16 -> 0..1
    return x, bunch.target


def _table(path: str, label: str, task: str, skip_bad: bool):
    """A CSV or JSON-lines file (optionally gzipped): its inferred schema and columns."""
    staging = tempfile.mkdtemp(prefix="convert-in-")
    try:
        sources = data.stage_sources(path, staging, what="--input")
        schema = tabular.infer_schema(sources, label, task, skip_bad)
        table = tabular.read_columns(sources, schema, skip_bad)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    features = {f.name: table.features[f.input_name] for f in schema.features}
    return schema, features, table.labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.convert",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--input", required=True, help="a .npz file (arrays x, y), a .csv file, or sklearn:NAME"
    )
    parser.add_argument("--output-dir", required=True, help="local directory or gs:// prefix")
    parser.add_argument(
        "--task",
        choices=["classification", "regression"],
        default=None,
        help="default: classification, regression for sklearn:diabetes",
    )
    parser.add_argument(
        "--label",
        "--target-column",
        dest="label",
        default="label",
        help="the table's target column / the schema's label name (default: %(default)s)",
    )
    parser.add_argument(
        "--feature-name",
        default="features",
        help="feature name for a .npz/sklearn array (default: %(default)s)",
    )
    parser.add_argument("--x-key", help="array name of the features in a .npz (default x)")
    parser.add_argument("--y-key", help="array name of the labels in a .npz (default y)")
    parser.add_argument("--num-shards", type=int, default=4, help="shards per split")
    parser.add_argument(
        "--eval-fraction",
        type=float,
        default=0.2,
        help="share of rows held out as the eval split (default: %(default)s)",
    )
    parser.add_argument("--gzip", action="store_true", help="GZIP-compress the shards")
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed for the split")
    parser.add_argument(
        "--skip-bad-records",
        action="store_true",
        help="skip (and count) table rows that cannot be read instead of failing",
    )
    add_logging_flags(parser)
    args = parser.parse_args(argv)
    setup_logging("trainer.convert", args.log_level, args.log_format)
    if args.num_shards < 1:
        raise UsageError("--num-shards must be at least 1")

    task = args.task or ("regression" if args.input == "sklearn:diabetes" else "classification")
    schema = None
    if args.input.startswith("sklearn:"):
        x, y = _sklearn(args.input.split(":", 1)[1])
        features = {args.feature_name: x}
    elif data.format_of(args.input) in ("csv", "jsonl"):
        schema, features, y = _table(args.input, args.label, task, args.skip_bad_records)
    elif args.input.endswith(".npz"):
        x, y = data.load_arrays(args.input, args.x_key, args.y_key)
        features = {args.feature_name: x}
    else:
        raise UsageError(
            f"--input {args.input}: give a .npz file, a .csv or .jsonl file (optionally .gz) "
            "or sklearn:NAME"
        )
    info = data.write_dataset(
        features,
        y,
        args.output_dir,
        task=task,
        label_name=args.label,
        num_shards=args.num_shards,
        eval_fraction=args.eval_fraction,
        gzip=args.gzip,
        seed=args.seed,
        schema=schema,
    )
    print(json.dumps({"schema": info.schema_path, "counts": info.counts, "files": info.splits}))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
