"""TFRecord framing read in chunks: records across chunk edges, damage found wherever it is."""

from __future__ import annotations

import io
import random

import pytest

from batch.tfrecords import CorruptRecord, frame, iter_records

CHUNKS = (1, 5, 13, 64, 4 * 2**20)


def _records(n: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randint(0, 50)) for _ in range(n)]


@pytest.mark.parametrize("chunk", CHUNKS)
def test_intact_file_gives_every_record_whatever_the_chunk_size(chunk):
    records = _records(40)
    blob = b"".join(frame(r) for r in records)
    assert list(iter_records(io.BytesIO(blob), "f", chunk_bytes=chunk)) == records


@pytest.mark.parametrize("chunk", CHUNKS)
def test_damage_fails_only_what_it_touches(chunk):
    records = _records(30, seed=1)
    records[7] = b"x" * 20
    frames = [frame(r) for r in records]
    blob = bytearray(b"".join(frames))
    at = sum(map(len, frames[:7]))
    blob[at + 12 + 5] ^= 0xFF  # inside record 7's data: only its checksum fails
    blob += frame(b"cut short")[:-3]  # and the file ends inside one more record
    items = list(iter_records(io.BytesIO(bytes(blob)), "f.tfrecord", chunk_bytes=chunk))
    assert items[:7] == records[:7] and items[8:30] == records[8:]
    assert isinstance(items[7], CorruptRecord) and items[7].reason == "record checksum mismatch"
    assert items[7].offset == at
    tail = items[30]
    assert isinstance(tail, CorruptRecord) and tail.reason == "the file ends inside a record"
    assert tail.data == frame(b"cut short")[:-3] and len(items) == 31


@pytest.mark.parametrize("chunk", CHUNKS)
def test_damaged_length_ends_the_file_with_its_remainder(chunk):
    records = _records(10, seed=2)
    frames = [frame(r) for r in records]
    blob = bytearray(b"".join(frames))
    at = sum(map(len, frames[:4]))
    blob[at + 2] ^= 0x01  # record 4's length no longer matches its checksum
    items = list(iter_records(io.BytesIO(bytes(blob)), "f", chunk_bytes=chunk))
    assert items[:4] == records[:4] and len(items) == 5
    assert items[4].reason.startswith("damaged record length")
    assert items[4].data == bytes(blob[at:])
