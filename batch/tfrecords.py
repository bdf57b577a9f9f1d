"""Read TFRecord files in batches of records, so that a corrupt record fails only itself.

Beam's ``ReadFromTFRecord`` raises on the first bad checksum and fails the whole job. Here
each file (opened through Beam's file systems, with the compression named explicitly) is
framed by hand: ``uint64 length | masked crc32c(length) | data | masked crc32c(data)``.

- A record whose data checksum is wrong is yielded as a :class:`CorruptRecord` and reading
  goes on with the next record (the length was intact, so the framing is still known).
- A damaged length loses the framing: reading resumes at the next byte where a header's
  length checksum holds, and the damaged span in between is one ``CorruptRecord`` naming
  its byte range (a false match has odds of 2**-32 per byte, and would itself only give a
  record whose data checksum fails).
- A record longer than ``max_bytes`` is skipped, read but not kept, and yielded as one
  ``CorruptRecord`` with ``too_large`` set; a file cut short ends with one more.

A ``CorruptRecord`` carries at most :data:`batch.instances.ECHO_BYTES` of the bytes it names.

Example:
    >>> list(iter_batches(io.BytesIO(frame(b"a") + frame(b"b") + frame(b"c")), "x", 2))
    [[b'a', b'b'], [b'c']]
    >>> list(iter_records(io.BytesIO(frame(b"a") + frame(b"b")), "x.tfrecord"))
    [b'a', b'b']
"""

from __future__ import annotations

import io  # noqa: F401  (used in the docstring example)
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import google_crc32c

from batch.instances import ECHO_BYTES

_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8
# A length beyond this is a damaged header, not a record (TF itself caps far lower in practice).
MAX_RECORD_BYTES = 2**31
# Bytes read from a file at a time.
CHUNK_BYTES = 4 * 2**20
# Distinct record headers remembered once checked (files of same-sized records have one).
_KNOWN_HEADERS = 256


@dataclass(frozen=True)
class CorruptRecord:
    """Bytes that could not be read as a record: where they were, why, how many (``size``)
    and the first of them (``data``)."""

    path: str
    offset: int
    reason: str
    data: bytes
    size: int = -1
    too_large: bool = False

    @property
    def length(self) -> int:
        return len(self.data) if self.size < 0 else self.size


def masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One record in TFRecord framing (used to write test and benchmark files)."""
    length = struct.pack("<Q", len(data))
    return length + _FOOTER.pack(masked_crc(length)) + data + _FOOTER.pack(masked_crc(data))


def iter_records(
    stream: BinaryIO, path: str, chunk_bytes: int = CHUNK_BYTES, max_bytes: int = MAX_RECORD_BYTES
) -> Iterator[bytes | CorruptRecord]:
    """Yield each record's bytes, or a CorruptRecord for what cannot be trusted."""
    for item in iter_batches(stream, path, 1024, chunk_bytes, max_bytes):
        if isinstance(item, CorruptRecord):
            yield item
        else:
            yield from item


def _valid_header(header: bytes) -> bool:
    length, length_crc = _HEADER.unpack(header)
    return masked_crc(header[:8]) == length_crc and length <= MAX_RECORD_BYTES


def iter_batches(
    stream: BinaryIO,
    path: str,
    batch_size: int,
    chunk_bytes: int = CHUNK_BYTES,
    max_bytes: int = MAX_RECORD_BYTES,
) -> Iterator[list[bytes] | CorruptRecord]:
    """Yield lists of up to ``batch_size`` records, and a CorruptRecord (on its own, as soon
    as it is found) for what cannot be trusted.

    The file is read in chunks of ``chunk_bytes`` and framed in memory, and a record header
    that was already checked is recognised without checking it again: this loop runs once
    per record, and in Python each step of it counts.
    """
    unpack_footer = _FOOTER.unpack_from
    known: dict[bytes, int] = {}  # checked 12-byte header -> record length
    batch: list[bytes] = []
    buf, pos, base = b"", 0, 0  # base: the file offset of buf[0]
    need, eof = _HEADER.size, False
    while True:
        end = len(buf)
        while end - pos >= _HEADER.size:
            header = buf[pos : pos + _HEADER.size]
            length = known.get(header)
            if length is None:
                if not _valid_header(header):
                    if batch:
                        yield batch
                        batch = []
                    buf, base, pos, eof = yield from _resync(
                        stream, path, buf, base, pos, chunk_bytes
                    )
                    end = len(buf)
                    continue
                length = _HEADER.unpack(header)[0]
                if len(known) < _KNOWN_HEADERS:
                    known[header] = length
            if length > max_bytes:
                if batch:
                    yield batch
                    batch = []
                buf, base, pos, eof = yield from _skip(
                    stream, path, buf, base, pos, length, max_bytes
                )
                end = len(buf)
                continue
            stop = pos + _HEADER.size + length + _FOOTER.size
            if stop > end:
                need = stop - pos
                break
            data = buf[pos + _HEADER.size : stop - _FOOTER.size]
            (stored,) = unpack_footer(buf, stop - _FOOTER.size)
            if masked_crc(data) == stored:
                batch.append(data)
                if len(batch) == batch_size:
                    yield batch
                    batch = []
            else:
                if batch:  # keep file order: the records before it come first
                    yield batch
                    batch = []
                yield CorruptRecord(
                    path, base + pos, "record checksum mismatch", data[:ECHO_BYTES], len(data)
                )
            pos = stop
            need = _HEADER.size
        if eof:
            break
        if pos == end:
            buf, base, pos = stream.read(chunk_bytes), base + pos, 0
            eof = not buf
            continue
        # A record (or header) runs past the chunk: read just the rest of it, so the big
        # chunks are used as read, never copied into a bigger buffer.
        parts, have = [buf[pos:]], end - pos
        while have < need:
            more = stream.read(need - have)
            if not more:
                eof = True
                break
            parts.append(more)
            have += len(more)
        buf, base, pos = b"".join(parts), base + pos, 0
    if batch:
        yield batch
    if pos < len(buf):
        reason = (
            "the file ends inside a record header"
            if len(buf) - pos < _HEADER.size
            else "the file ends inside a record"
        )
        yield CorruptRecord(path, base + pos, reason, buf[pos:][:ECHO_BYTES], len(buf) - pos)


def _resync(stream: BinaryIO, path: str, buf: bytes, base: int, pos: int, chunk_bytes: int):
    """From a damaged header at ``buf[pos]``, find the next byte where a valid header
    starts; yields the CorruptRecord for the span and returns the new (buf, base, pos, eof)."""
    start = base + pos
    prefix = buf[pos : pos + ECHO_BYTES]
    scan = pos + 1
    eof = False
    while True:
        last = len(buf) - _HEADER.size
        while scan <= last:
            if _valid_header(buf[scan : scan + _HEADER.size]):
                stop = base + scan
                yield CorruptRecord(
                    path, start,
                    f"damaged record length: bytes {start}-{stop} skipped, reading resumed at "
                    "the next intact record header",
                    prefix[: stop - start], stop - start,
                )  # fmt: skip
                return buf, base, scan, False
            scan += 1
        more = stream.read(chunk_bytes)
        if not more:
            eof = True
            break
        keep = max(scan, 0)
        buf, base, scan = buf[keep:] + more, base + keep, 0
        if len(prefix) < ECHO_BYTES:
            prefix = (prefix + more)[:ECHO_BYTES]
    stop = base + len(buf)
    yield CorruptRecord(
        path, start,
        f"damaged record length: bytes {start}-{stop} (the end of the file) hold no intact "
        "record header",
        prefix, stop - start,
    )  # fmt: skip
    return b"", stop, 0, eof


def _skip(stream: BinaryIO, path: str, buf: bytes, base: int, pos: int, length: int, limit: int):
    """Pass over a record longer than ``limit`` without keeping it; yields its
    CorruptRecord and returns the new (buf, base, pos, eof)."""
    start = base + pos
    frame_size = _HEADER.size + length + _FOOTER.size
    prefix = buf[pos + _HEADER.size : pos + _HEADER.size + ECHO_BYTES]
    have = len(buf) - pos
    while have < frame_size:
        more = stream.read(min(CHUNK_BYTES, frame_size - have))
        if not more:
            yield CorruptRecord(path, start, "the file ends inside a record", prefix, have)
            return b"", start + have, 0, True
        if len(prefix) < ECHO_BYTES:
            prefix = (prefix + more)[:ECHO_BYTES]
        have += len(more)
    reason = f"a record of {length} bytes is longer than --max-instance-bytes {limit}"
    yield CorruptRecord(path, start, reason, prefix[:length], length, too_large=True)
    if frame_size <= len(buf) - pos:
        return buf, base, pos + frame_size, False
    return b"", start + frame_size, 0, False
