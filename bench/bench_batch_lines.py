"""Batch input reading: seconds per MB for a 50 MB line and for a file of 1 MB records.

The batch job frames lines itself (batch.lines) because Beam's ``ReadFromText`` is quadratic
in a line's length. Rows: our reader against reading the same bytes raw (both through
Beam's filesystems, as the job reads), and against ``ReadFromText`` on a 5 MB line (a
longer one takes ReadFromText minutes).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import Row, repeat, save, timed  # noqa: E402

MB = 2**20


def _write(path: str, lines: list[bytes]) -> float:
    with open(path, "wb") as f:
        for line in lines:
            f.write(line + b"\n")
    return os.path.getsize(path) / MB


def _ours(path: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    from batch.lines import iter_line_batches

    with FileSystems.open(path) as stream:
        for _ in iter_line_batches(stream, path, 64, 2**31):
            pass


def _raw(path: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as stream:
        while stream.read(4 * MB):
            pass


def _read_from_text(path: str) -> None:
    import apache_beam as beam
    from apache_beam.coders import coders
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    with beam.Pipeline(runner=fn_runner.FnApiRunner()) as pipeline:
        _ = pipeline | beam.io.ReadFromText(path, coder=coders.BytesCoder()) | beam.Map(len)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    times = 2 if args.quick else 3
    tmp = tempfile.mkdtemp(prefix="bench-lines-")
    one_line = os.path.join(tmp, "line-50mb.jsonl")
    size_line = _write(one_line, [b'{"b64": "' + b"A" * (50 * MB - 12) + b'"}'])
    records = os.path.join(tmp, "records-1mb.jsonl")
    size_records = _write(records, [b'{"b64": "' + b"B" * (MB - 12) + b'"}'] * 50)
    short = os.path.join(tmp, "line-5mb.jsonl")
    size_short = _write(short, [b'{"b64": "' + b"C" * (5 * MB - 12) + b'"}'])

    rows = []
    for label, path, size in (
        ("one 50 MB line", one_line, size_line),
        ("50 records of 1 MB", records, size_records),
    ):
        ours, spread = repeat(lambda p=path: timed(lambda: _ours(p)), times)
        raw, _ = repeat(lambda p=path: timed(lambda: _raw(p)), times)
        rows.append(
            Row("batch input", f"{label}: s/MB, framed vs raw read", ours / size, raw / size,
                "s/MB", lower_is_better=True, spread=spread)
        )  # fmt: skip
    ours, spread = repeat(lambda: timed(lambda: _ours(short)), times)
    beam_text, _ = repeat(lambda: timed(lambda: _read_from_text(short)), 1)
    rows.append(
        Row("batch input", "one 5 MB line: s/MB, framed vs Beam ReadFromText", ours / size_short,
            beam_text / size_short, "s/MB", target=0.1, lower_is_better=True, spread=spread)
    )  # fmt: skip
    save(
        "batch_lines",
        rows,
        "local temporary files, read through Beam's filesystems as the job reads them.",
    )
    for row in rows:
        print(f"{row.measure}: {row.value:.4f} vs {row.baseline:.4f} {row.unit}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
