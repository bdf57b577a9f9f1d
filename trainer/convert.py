"""Convert numpy (.npz) or CSV data to sharded TFRecords plus ``schema.json``.

Example::

    python -m trainer.convert --input sklearn:digits --output-dir gs://demo/digits \\
        --feature-name pixels --num-shards 4 --eval-fraction 0.2
    python -m trainer.convert --input data.csv --label species --output-dir ./data --gzip

Writes ``train-0000i-of-0000N.tfrecord[.gz]``, ``eval-…`` and ``schema.json`` below
``--output-dir`` (local or ``gs://``). ``sklearn:NAME`` reads one of scikit-learn's bundled
data sets (digits, wine, breast_cancer, iris, diabetes), offline.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging

import numpy as np

from jobcommon import cli, storage
from jobcommon.errors import BadInputError, UsageError
from jobcommon.logs import add_logging_flags, setup_logging
from trainer import data

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


def _csv_columns(path: str, label: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    text = storage.read_text(path)
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise BadInputError(f"{path}: no data rows below the header")
    if label not in rows[0]:
        raise BadInputError(f"{path}: no column {label!r} (columns: {list(rows[0])}); pass --label")
    columns: dict[str, np.ndarray] = {}
    for name in rows[0]:
        values = [r[name] for r in rows]
        try:
            columns[name] = np.array([float(v) for v in values], dtype=np.float32)
        except (TypeError, ValueError):
            columns[name] = np.array(values, dtype=object)
    y = columns.pop(label)
    return columns, y


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
    parser.add_argument("--label", default="label", help="CSV label column / schema label name")
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
    add_logging_flags(parser)
    args = parser.parse_args(argv)
    setup_logging("trainer.convert", args.log_level, args.log_format)
    if args.num_shards < 1:
        raise UsageError("--num-shards must be at least 1")

    task = args.task or ("regression" if args.input == "sklearn:diabetes" else "classification")
    if args.input.startswith("sklearn:"):
        x, y = _sklearn(args.input.split(":", 1)[1])
        features = {args.feature_name: x}
    elif args.input.endswith(".csv"):
        features, y = _csv_columns(args.input, args.label)
    elif args.input.endswith(".npz"):
        x, y = data.load_arrays(args.input, args.x_key, args.y_key)
        features = {args.feature_name: x}
    else:
        raise UsageError(f"--input {args.input}: give a .npz file, a .csv file or sklearn:NAME")
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
    )
    print(json.dumps({"schema": info.schema_path, "counts": info.counts, "files": info.splits}))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
