"""Cold start of each entry point's ``--help`` against a bare interpreter start.

A job's start-up is paid on every Vertex replica restart and every Dataflow worker; ``--help``
shows how much an entry point imports before it can even parse its flags.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Row, repeat, save, timed  # noqa: E402

ENTRY_POINTS = [
    ["-m", "trainer.task", "--help"],
    ["-m", "batch.predict", "--help"],
    ["-m", "executor", "--help"],
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times = 2 if args.quick else args.repeats

    def start(cmd: list[str]) -> float:
        return timed(
            lambda: subprocess.run([sys.executable, *cmd], check=True, capture_output=True)
        )

    baseline, _ = repeat(lambda: start(["-c", "pass"]), times)
    rows = []
    for cmd in ENTRY_POINTS:
        value, spread = repeat(lambda cmd=cmd: start(cmd), times)
        rows.append(Row("cold start", f"`python {' '.join(cmd)}`", value, baseline, "s",
                        spread=spread))  # fmt: skip
    save("startup", rows, "baseline: `python -c pass` on the same machine, same run.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
