"""Cold start of each entry point's ``--help`` against a bare interpreter start.

A job's start-up is paid on every Vertex replica restart and every Dataflow worker; ``--help``
shows how much an entry point imports before it can even parse its flags. Target (issue
#13): each ``--help`` back in under 0.5 s; the bare interpreter start is shown beside it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Row, repeat, save, timed  # noqa: E402

HELP_TARGET_SECONDS = 0.5
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
                        target=HELP_TARGET_SECONDS, lower_is_better=True, target_on="value",
                        spread=spread))  # fmt: skip
    save(
        "startup",
        rows,
        f"Target: each `--help` under {HELP_TARGET_SECONDS} s (wall time of the whole command, "
        f"median of {times}); baseline: `python -c pass` on the same machine, same run.",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
