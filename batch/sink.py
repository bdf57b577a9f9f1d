"""Write a PCollection of lines as ``<prefix>-SSSSS-of-NNNNN`` files through our storage layer.

Beam's ``WriteToText`` finalizes ``gs://`` output with batched copy/delete requests; the GCS
emulator answers those with "not multi-part", and :mod:`jobcommon.storage` is the one place
that talks to Cloud Storage anyway. So each bundle writes its lines to temporary files below
``<output>/.tmp-<run>/`` (rolling over every :data:`PART_BYTES`), and one finalizing step
moves the parts it was handed to their numbered names and removes the temporary directory.
A retried bundle leaves its first attempt's part unnamed, and that part is removed with the
directory, so no line is written twice. Empty input still gives one empty ``-00000-of-00001``
file, so a job without errors has an (empty) errors file to show for it.

Example:
    >>> lines | WriteShards("gs://b/out/prediction.results")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from jobcommon import storage

PART_BYTES = 64 * 2**20


def shard_name(prefix: str, index: int, total: int) -> str:
    return f"{prefix}-{index:05d}-of-{total:05d}"


class _WriteParts(beam.DoFn):
    """Lines -> part files of about PART_BYTES; yields each part's path.

    A full part is written by a background thread while the bundle goes on (file and
    network writes release the GIL, so decoding and inference keep running meanwhile);
    the bundle only finishes once all its parts are written, and fails if one was not.
    """

    def __init__(self, tmp_dir: str) -> None:
        self._tmp_dir = tmp_dir

    def setup(self) -> None:
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="write-parts")

    def teardown(self) -> None:
        self._writer.shutdown(wait=True)

    def start_bundle(self) -> None:
        self._lines: list[bytes] = []
        self._size = 0
        self._pending: list[Future] = []

    def process(self, line: bytes | str):
        data = line.encode("utf-8") if isinstance(line, str) else line
        self._lines.append(data)
        self._size += len(data) + 1
        if self._size >= PART_BYTES:
            path, lines = self._take()
            # At most one part in flight: bounds memory to about two parts.
            self._wait()
            self._pending.append(self._writer.submit(_write_part, path, lines))
            yield path

    def finish_bundle(self):
        if self._lines:
            path, lines = self._take()
            self._pending.append(self._writer.submit(_write_part, path, lines))
            self._wait()
            yield WindowedValue(path, MIN_TIMESTAMP, [GlobalWindow()])
        self._wait()

    def _take(self) -> tuple[str, list[bytes]]:
        path = storage.join(self._tmp_dir, uuid.uuid4().hex)
        lines, self._lines, self._size = self._lines, [], 0
        return path, lines

    def _wait(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()  # re-raises a failed write here, failing the bundle


def _write_part(path: str, lines: list[bytes]) -> None:
    lines.append(b"")
    storage.write_bytes(path, b"\n".join(lines))


def _move(src: str, dst: str) -> None:
    if not storage.is_gcs(src) and not storage.is_gcs(dst):
        os.replace(src, dst)
    else:
        storage.copy(src, dst)


def _finalize(parts: list[str], prefix: str, tmp_dir: str) -> list[str]:
    parts = sorted(parts)
    total = max(1, len(parts))
    names = [shard_name(prefix, i, total) for i in range(total)]
    if not parts:
        storage.write_bytes(names[0], b"")
    for part, name in zip(parts, names, strict=False):
        _move(part, name)
    storage.delete(tmp_dir, recursive=True)
    return names


class WriteShards(beam.PTransform):
    """Lines (bytes or str) -> numbered files ``<prefix>-SSSSS-of-NNNNN``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self._prefix = prefix

    def expand(self, lines):
        directory, _, _ = self._prefix.rpartition("/")
        tmp_dir = storage.join(directory, f".tmp-{uuid.uuid4().hex[:12]}")
        return (
            lines
            | "WriteParts" >> beam.ParDo(_WriteParts(tmp_dir))
            | "CollectParts" >> beam.combiners.ToList()
            | "NameShards" >> beam.Map(_finalize, self._prefix, tmp_dir)
        )
