"""Write a PCollection of lines as numbered files (see :class:`batch.outputs.Shards`).

Beam's ``WriteToText`` finalizes ``gs://`` output with batched copy/delete requests; the GCS
emulator answers those with "not multi-part", and :mod:`jobcommon.storage` is the one place
that writes the job's outputs (Beam's own client only reads the input, see
:mod:`batch.beam_gcs`). So each bundle writes its lines to temporary files below
``<output>/.tmp-<run>/`` (rolling over every :data:`PART_BYTES`), and one finalizing step
moves the parts it was handed to their numbered names and removes the temporary directory.
A retried bundle leaves its first attempt's part unnamed, and that part is removed with the
directory, so no line is written twice. Empty input still gives one empty first shard when
the naming says so (the legacy layout's errors file of a job without errors).

Example:
    >>> lines | WriteShards("gs://b/out", Shards("prediction.results"))  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import os
import tempfile
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from batch.outputs import Shards
from jobcommon import storage

PART_BYTES = 64 * 2**20
# Writes queued for the writer thread before the bundle waits (about 70 MB of TFRecord
# results at 64 records a batch).
MAX_PENDING_WRITES = 256


class _WriteParts(beam.DoFn):
    """Lines -> part files of about PART_BYTES; yields each part's path.

    Lines are appended to the part as they come, by one background thread (file and network
    writes release the GIL, so decoding and inference go on meanwhile); a full ``gs://``
    part is uploaded from a local spool file by the same thread. The bundle only finishes
    once all its parts are written, and fails if one was not.
    """

    def __init__(self, tmp_dir: str) -> None:
        self._tmp_dir = tmp_dir

    def setup(self) -> None:
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="write-parts")

    def teardown(self) -> None:
        self._writer.shutdown(wait=True)

    def start_bundle(self) -> None:
        self._part: _Part | None = None
        self._pending: collections.deque[Future] = collections.deque()

    def process(self, line: bytes | str):
        data = line.encode("utf-8") if isinstance(line, str) else line
        if self._part is None:
            self._part = _Part(storage.join(self._tmp_dir, uuid.uuid4().hex))
        part = self._part
        part.size += len(data) + 1
        self._submit(part.write, data)
        if part.size >= PART_BYTES:
            self._part = None
            self._submit(part.close)
            yield part.path

    def finish_bundle(self):
        part, self._part = self._part, None
        if part is not None:
            self._submit(part.close)
        while self._pending:
            self._pending.popleft().result()  # re-raises a failed write here
        if part is not None:
            yield WindowedValue(part.path, MIN_TIMESTAMP, [GlobalWindow()])

    def _submit(self, fn, *args) -> None:
        self._pending.append(self._writer.submit(fn, *args))
        # Bound what waits in memory when the disk or network is slower than the job.
        while len(self._pending) > MAX_PENDING_WRITES or (
            self._pending and self._pending[0].done()
        ):
            self._pending.popleft().result()


class _Part:
    """One part file being written: straight to its place when local, else to a local spool
    file that is uploaded when the part is closed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.size = 0
        if storage.is_gcs(path):
            fd, self._local = tempfile.mkstemp(prefix="part-", suffix=".jsonl")
            self._file = os.fdopen(fd, "wb")
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._local = path
            self._file = open(path, "wb")  # noqa: SIM115  (closed by close())

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._file.write(b"\n")

    def close(self) -> None:
        self._file.close()
        if self._local != self.path:
            try:
                storage.upload_file(self._local, self.path)
            finally:
                os.unlink(self._local)


def _move(src: str, dst: str) -> None:
    if not storage.is_gcs(src) and not storage.is_gcs(dst):
        os.replace(src, dst)
    else:
        storage.copy(src, dst)


def _finalize_once(
    _impulse: bytes, parts: list[str], directory: str, shards: Shards, tmp_dir: str
) -> list[str]:
    return _finalize(parts, directory, shards, tmp_dir)


def _finalize(parts: list[str], directory: str, shards: Shards, tmp_dir: str) -> list[str]:
    parts = sorted(parts)
    total = max(1, len(parts)) if shards.always else len(parts)
    names = [shards.name(directory, i, total) for i in range(total)]
    if not parts and names:
        storage.write_bytes(names[0], b"")
    for part, name in zip(parts, names, strict=False):
        _move(part, name)
    storage.delete(tmp_dir, recursive=True)
    return names


class WriteShards(beam.PTransform):
    """Lines (bytes or str) -> numbered files in ``directory``, named by ``shards``; the
    output is one element, the list of file names written."""

    def __init__(self, directory: str, shards: Shards) -> None:
        super().__init__()
        self._directory = directory
        self._shards = shards

    def expand(self, lines):
        tmp_dir = storage.join(self._directory, f".tmp-{uuid.uuid4().hex[:12]}")
        parts = lines | "WriteParts" >> beam.ParDo(_WriteParts(tmp_dir))
        # Named once every part is written: one element that takes all parts as a side
        # input (also when there are none), which Beam plans in fewer steps than a global
        # combine of the part names would take.
        return (
            lines.pipeline
            | "Once" >> beam.Impulse()
            | "NameShards"
            >> beam.Map(
                _finalize_once, beam.pvalue.AsList(parts), self._directory, self._shards, tmp_dir
            )
        )
