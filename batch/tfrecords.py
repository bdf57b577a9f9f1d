"""Read TFRecord files record by record, so that a corrupt record fails only itself.

Beam's ``ReadFromTFRecord`` raises on the first bad checksum and fails the whole job. Here
each file (opened through Beam's file systems, with the compression named explicitly) is
framed by hand: ``uint64 length | masked crc32c(length) | data | masked crc32c(data)``.

- A record whose data checksum is wrong is yielded as a :class:`CorruptRecord` and reading
  goes on with the next record (the length was intact, so the framing is still known).
- A damaged length, or a file cut short, leaves the rest of the file unframeable: that is
  one ``CorruptRecord`` carrying the unread remainder, and the file ends there.

Example:
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

_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8
# A length beyond this is a damaged header, not a record (TF itself caps far lower in practice).
MAX_RECORD_BYTES = 2**31
# Bytes read from a file at a time.
CHUNK_BYTES = 4 * 2**20


@dataclass(frozen=True)
class CorruptRecord:
    """Bytes that could not be read as a record: where they were and why."""

    path: str
    offset: int
    reason: str
    data: bytes


def masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One record in TFRecord framing (used to write test and benchmark files)."""
    length = struct.pack("<Q", len(data))
    return length + _FOOTER.pack(masked_crc(length)) + data + _FOOTER.pack(masked_crc(data))


def iter_records(
    stream: BinaryIO, path: str, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[bytes | CorruptRecord]:
    """Yield each record's bytes, or a CorruptRecord for what cannot be trusted.

    The file is read in chunks of ``chunk_bytes`` and framed in memory: two small reads
    per record would cost more than the checksums.
    """
    buf, pos, offset = b"", 0, 0
    eof = False

    def fill(need: int) -> None:
        # Keep the unread tail and read until ``need`` bytes are there or the file ends.
        nonlocal buf, pos, eof
        parts, have = [buf[pos:]], len(buf) - pos
        while have < need and not eof:
            chunk = stream.read(max(chunk_bytes, need - have))
            if not chunk:
                eof = True
                break
            parts.append(chunk)
            have += len(chunk)
        buf, pos = b"".join(parts), 0

    while True:
        if len(buf) - pos < _HEADER.size:
            fill(_HEADER.size)
            if len(buf) == pos:
                return
            if len(buf) - pos < _HEADER.size:
                header = buf[pos:]
                yield CorruptRecord(path, offset, "the file ends inside a record header", header)
                return
        length, length_crc = _HEADER.unpack_from(buf, pos)
        if masked_crc(buf[pos : pos + 8]) != length_crc or length > MAX_RECORD_BYTES:
            rest = buf[pos:] + stream.read()
            yield CorruptRecord(
                path, offset, "damaged record length; the rest of the file is unreadable", rest
            )
            return
        size = _HEADER.size + length + _FOOTER.size
        if len(buf) - pos < size:
            fill(size)
            if len(buf) - pos < size:
                yield CorruptRecord(path, offset, "the file ends inside a record", buf[pos:])
                return
        start = pos + _HEADER.size
        data = buf[start : start + length]
        (data_crc,) = _FOOTER.unpack_from(buf, start + length)
        if masked_crc(data) != data_crc:
            yield CorruptRecord(path, offset, "record checksum mismatch", data)
        else:
            yield data
        pos += size
        offset += size
