"""A small ``gsutil``-like command over the storage layer, handy in images and tests.

Example::

    python -m jobcommon.gsutil ls 'gs://demo/data/*.tfrecord'
    python -m jobcommon.gsutil cp -r ./export gs://demo/models/export
    python -m jobcommon.gsutil cat gs://demo/jobs/run1/metrics.json
"""

from __future__ import annotations

import argparse
import sys

from jobcommon import cli, storage
from jobcommon.logs import add_logging_flags, setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobcommon.gsutil", description=__doc__)
    add_logging_flags(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("ls", help="list files matching a glob, or below a prefix")
    ls.add_argument("path")
    cat = sub.add_parser("cat", help="print a file or object")
    cat.add_argument("path")
    cp = sub.add_parser("cp", help="copy a file, or a tree with -r")
    cp.add_argument("-r", "--recursive", action="store_true")
    cp.add_argument("src")
    cp.add_argument("dst")
    rm = sub.add_parser("rm", help="remove a file, or a tree with -r")
    rm.add_argument("-r", "--recursive", action="store_true")
    rm.add_argument("path")
    args = parser.parse_args(argv)
    setup_logging("gsutil", args.log_level, args.log_format)

    if args.command == "ls":
        has_glob = any(c in args.path for c in "*?[")
        paths = storage.glob(args.path) if has_glob else storage.list_dir(args.path)
        if not has_glob and not paths and not storage.exists(args.path):
            raise storage.NotFoundError(args.path)
        print("\n".join(paths))
    elif args.command == "cat":
        sys.stdout.buffer.write(storage.read_bytes(args.path))
    elif args.command == "cp":
        if args.recursive:
            storage.copy_tree(args.src, args.dst)
        else:
            storage.copy(args.src, args.dst)
    elif args.command == "rm":
        storage.delete(args.path, recursive=args.recursive)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
