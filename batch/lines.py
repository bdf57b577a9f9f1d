"""Read a text file's lines in batches, in time linear in the file's size, whatever the
length of a line.

Beam's ``ReadFromText`` grows its buffer in small steps, so one long line costs time
quadratic in its length (a 50 MB line took 186 s). Here the file is read in big chunks,
split at newlines, and a line spanning chunks is put together once from its pieces. A line
longer than ``max_bytes`` is not kept: it becomes one :class:`LongLine` (where it was, how
long, its first bytes) and reading goes on with the next line, so memory stays bounded too.

Every line is yielded, blank ones too (as they are: the decoder counts them); the newline
ending the file does not start another line.

Example:
    >>> list(iter_line_batches(io.BytesIO(b"a\\nbb\\n\\nccc"), "f", batch_size=2, max_bytes=10))
    [[b'a', b'bb'], [b'', b'ccc']]
    >>> list(iter_line_batches(io.BytesIO(b"a\\n" + b"x" * 20 + b"\\nb\\n"), "f", 8, 10))
    [LongLine(path='f', line=2, size=20, prefix=b'xxxxxxxxxxxxxxxxxxxx'), [b'a', b'b']]
"""

from __future__ import annotations

import io  # noqa: F401  (used in the docstring example)
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from batch.instances import ECHO_BYTES

CHUNK_BYTES = 4 * 2**20


@dataclass(frozen=True)
class LongLine:
    """A line longer than the job takes: its file, 1-based line number, size, first bytes."""

    path: str
    line: int
    size: int
    prefix: bytes


def iter_line_batches(
    stream: BinaryIO,
    path: str,
    batch_size: int,
    max_bytes: int,
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[list[bytes] | LongLine]:
    """Yield lists of up to ``batch_size`` lines (without their newline), and a LongLine
    for each line over ``max_bytes`` as soon as it ends."""
    batch: list[bytes] = []
    pieces: list[bytes] = []  # the current (unfinished) line, while it fits
    size = 0  # bytes of the current line so far
    number = 0  # lines finished so far
    prefix = b""  # the first bytes of the current line, once it is too long
    while True:
        chunk = stream.read(chunk_bytes)
        if not chunk:
            break
        parts = chunk.split(b"\n")
        last = parts.pop()  # the start of a line that goes on in the next chunk
        if parts:
            # parts[0] ends the current line; the rest are whole lines within this chunk.
            first = parts[0]
            size += len(first)
            number += 1
            if size > max_bytes:
                yield LongLine(
                    path, number, size, prefix or (b"".join(pieces) + first)[:ECHO_BYTES]
                )
            else:
                batch.append(b"".join((*pieces, first)) if pieces else first)
            for line in parts[1:]:
                number += 1
                if len(line) > max_bytes:
                    yield LongLine(path, number, len(line), line[:ECHO_BYTES])
                else:
                    batch.append(line)
                if len(batch) >= batch_size:
                    yield batch[:batch_size]
                    batch = batch[batch_size:]
            if len(batch) >= batch_size:
                yield batch[:batch_size]
                batch = batch[batch_size:]
            pieces, size, prefix = [], 0, b""
        if last:
            size += len(last)
            if prefix:
                pass  # already too long: only its size is kept
            elif size > max_bytes:
                prefix = (b"".join(pieces) + last[:ECHO_BYTES])[:ECHO_BYTES]
                pieces = []
            else:
                pieces.append(last)
    if size or pieces:
        number += 1
        if size > max_bytes:
            yield LongLine(path, number, size, prefix)
        else:
            batch.append(b"".join(pieces))
    while batch:
        yield batch[:batch_size]
        batch = batch[batch_size:]
