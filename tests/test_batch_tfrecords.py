"""TFRecord framing read in chunks: records across chunk edges, damage found wherever it is."""

from __future__ import annotations

import io
import random

import pytest

from batch.tfrecords import CorruptRecord, frame, iter_batches, iter_records

CHUNKS = (1, 5, 13, 64, 4 * 2**20)


def _records(n: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randint(0, 50)) for _ in range(n)]


def _framed(records: list[bytes], k: int) -> tuple[bytearray, int, int]:
    """The records as a TFRecord file to damage: (its bytes, where record ``k``'s frame
    starts, that frame's length)."""
    frames = [frame(r) for r in records]
    return bytearray(b"".join(frames)), sum(map(len, frames[:k])), len(frames[k])


@pytest.mark.parametrize("chunk", CHUNKS)
def test_intact_file_gives_every_record_whatever_the_chunk_size(chunk):
    records = _records(40)
    blob = b"".join(frame(r) for r in records)
    assert list(iter_records(io.BytesIO(blob), "f", chunk_bytes=chunk)) == records


@pytest.mark.parametrize("chunk", CHUNKS)
def test_damage_fails_only_what_it_touches(chunk):
    records = _records(30, seed=1)
    records[7] = b"x" * 20
    blob, at, _ = _framed(records, 7)
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
def test_after_a_damaged_length_reading_resumes_at_the_next_intact_record(chunk):
    records = _records(10, seed=2)
    blob, at, size = _framed(records, 4)
    blob[at + 2] ^= 0x01  # record 4's length no longer matches its checksum
    items = list(iter_records(io.BytesIO(bytes(blob)), "f", chunk_bytes=chunk))
    # The intact records after the damage are all read; the damage is one item naming the
    # byte range of record 4's frame.
    assert items[:4] == records[:4] and items[5:] == records[5:] and len(items) == 10
    damaged = items[4]
    assert isinstance(damaged, CorruptRecord) and damaged.offset == at
    assert damaged.length == size
    assert f"bytes {at}-{at + size}" in damaged.reason
    assert damaged.data == bytes(blob[at : at + size])


@pytest.mark.parametrize("chunk", CHUNKS)
def test_damage_at_the_end_with_no_intact_header_after_it(chunk):
    records = _records(6, seed=4)
    blob, at, size = _framed(records, 5)
    blob[at + 9] ^= 0x10  # the length checksum of the last record
    items = list(iter_records(io.BytesIO(bytes(blob)), "f", chunk_bytes=chunk))
    assert items[:5] == records[:5] and len(items) == 6
    assert items[5].length == size and "the end of the file" in items[5].reason


@pytest.mark.parametrize("chunk", CHUNKS)
def test_a_record_over_the_limit_is_skipped_whole_and_named(chunk):
    records = [b"a" * 10, b"b" * 5000, b"c" * 10, b"d" * 70_000, b"e"]
    blob, at, _ = _framed(records, 1)
    items = list(iter_records(io.BytesIO(bytes(blob)), "f", chunk_bytes=chunk, max_bytes=1000))
    assert [i for i in items if isinstance(i, bytes)] == [b"a" * 10, b"c" * 10, b"e"]
    big = [i for i in items if isinstance(i, CorruptRecord)]
    assert [b.length for b in big] == [5000, 70_000] and all(b.too_large for b in big)
    assert big[0].offset == at and big[0].data == b"b" * 5000
    assert len(big[1].data) == 8192  # only a bounded prefix travels on


@pytest.mark.parametrize("chunk", CHUNKS)
def test_batches_are_full_except_around_damage_and_at_the_end(chunk):
    records = _records(23, seed=3)
    blob, at, size = _framed(records, 9)
    blob[at + size - 1] ^= 0xFF  # record 9's stored checksum
    items = list(iter_batches(io.BytesIO(bytes(blob)), "f", 4, chunk_bytes=chunk))
    sizes = [len(i) if isinstance(i, list) else "x" for i in items]
    # File order is kept: the batch in progress is handed on before the damaged record.
    assert sizes == [4, 4, 1, "x", 4, 4, 4, 1]
    assert items[3].offset == at and items[3].data == records[9]
    assert [r for i in items if isinstance(i, list) for r in i] == records[:9] + records[10:]


def test_a_record_longer_than_a_chunk_is_read_whole():
    records = [b"a" * 10, b"b" * 100_000, b"c" * 10]
    blob = b"".join(frame(r) for r in records)
    assert list(iter_batches(io.BytesIO(blob), "f", 64, chunk_bytes=1000)) == [records]
