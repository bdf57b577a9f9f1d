"""Records decoded and written a batch at a time behave exactly like one at a time."""

from __future__ import annotations

import base64
import json

import numpy as np
import orjson

from batch import batches, instances, sink
from batch.model import InputSpec
from batch.outputs import Shards

PIXELS = {"pixels": InputSpec("pixels", "float32", (3,))}
BYTES = {"data": InputSpec("data", "string", ())}


def _lines() -> list[bytes]:
    return [
        b'{"id": 1, "pixels": [0.5, 1, 2.25]}',
        b"   ",  # blank: a record with no instance, counted as an error
        b'{"id": 2, "pixels": [0.5, 1]}',  # wrong shape
        b'{"id": 3, "pixels": [0.1, ',  # not JSON
        b'  {"id": 4, "pixels": [1e-3, 2, 3]}  ',  # surrounding blanks are fine
        b'{"pixels": [1, 2, 3]}',  # no key
        b'{"id": "five", "pixels": [true, false, true]}',  # booleans are not floats
        b'{"id": 6, "pixels": [1, 2, 3], "extra": 0}',  # wrong features
    ]


def _one_at_a_time(line: bytes, key_field):
    """A line decoded on its own: (meta, tensors) or its error kind."""
    batch, errors = batches.decode_json_batch([line], PIXELS, instances.Shaping(key_field))
    if errors:
        ((_, kind, _),) = errors
        return kind
    return orjson.loads(b"{" + batch.heads[0] + b"}"), {"pixels": batch.tensors["pixels"][0]}


def test_json_batch_matches_record_by_record_decoding():
    lines = _lines()
    for key_field in (None, "id"):
        batch, errors = batches.decode_json_batch(lines, PIXELS, instances.Shaping(key_field))
        singles = [_one_at_a_time(line, key_field) for line in lines]
        want_good = [s for s in singles if not isinstance(s, str)]
        want_kinds = [s for s in singles if isinstance(s, str)]
        assert [kind for _, kind, _ in errors] == want_kinds
        # Every line is accounted for: good records plus errors, the blank line included.
        assert len(batch) == len(want_good) and len(batch) + len(errors) == len(lines) == 8
        assert "blank_line" in want_kinds
        stacked = np.stack([tensors["pixels"] for _, tensors in want_good])
        np.testing.assert_array_equal(batch.tensors["pixels"], stacked)
        assert batch.tensors["pixels"].dtype == np.float32
        # Each results row carries what the record-at-a-time row would: instance or key.
        outputs = {"score": np.arange(len(batch), dtype=np.float32)}
        rows = [orjson.loads(r) for r in batches.result_lines(batch, outputs)]
        assert [{k: v for k, v in r.items() if k != "prediction"} for r in rows] == [
            meta for meta, _ in want_good
        ]
        assert [r["prediction"] for r in rows] == list(range(len(batch)))


def test_error_rows_name_the_record_as_before():
    _, errors = batches.decode_json_batch(_lines(), PIXELS, instances.Shaping("id"))
    rows = [orjson.loads(instances_row) for instances_row in _error_rows(errors)]
    by_kind = {r["error"]["kind"]: r for r in rows}
    assert by_kind["wrong_shape"]["key"] == 2
    assert base64.b64decode(by_kind["bad_json"]["raw"]["b64"]) == b'{"id": 3, "pixels": [0.1, '
    # A record without its key carries the instance itself.
    assert by_kind["missing_key"]["instance"] == {"pixels": [1, 2, 3]}
    assert by_kind["wrong_dtype"]["key"] == "five"
    assert base64.b64decode(by_kind["blank_line"]["raw"]["b64"]) == b"   "


def test_long_integers_are_echoed_exactly():
    big = 2**53 + 1
    huge = 123456789012345678901234567890
    lines = [
        b'{"id": %d, "pixels": [1, 2, 3]}' % big,
        b'{"id": %d, "pixels": [1, 2, 3]}' % huge,
        b'{"id": %d, "pixels": [1, 2]}' % huge,  # wrong shape: the error row has the key
        b'{"n": %d, "pixels": [1, 2, 3]}' % huge,  # no key: the error row has the instance
    ]
    for as_string in (False, True):
        shaping = instances.Shaping("id", key_as_string=as_string)
        batch, errors = batches.decode_json_batch(lines, PIXELS, shaping)
        keys = [json.loads(b"{" + head + b"}")["key"] for head in batch.heads]
        assert keys == ([str(big), str(huge)] if as_string else [big, huge])
        rows = [json.loads(r) for r in _error_rows(errors)]
        assert rows[0]["key"] == (str(huge) if as_string else huge)
        assert rows[1]["instance"] == {"n": huge, "pixels": [1, 2, 3]}
    # Without a key, the instance echoed is the line itself (here in the row of a record
    # whose extra field the model does not take).
    _, errors = batches.decode_json_batch(lines[1:2], PIXELS)
    assert json.loads(_error_rows(errors)[0])["instance"]["id"] == huge


def test_instance_config_shapes_what_the_model_gets():
    specs = {"x": InputSpec("x", "float32", (2,))}
    line = b'{"id": "a", "b": 2, "a": 1, "note": "text"}'
    cases = [
        (instances.Shaping("id", included_fields=("a", "b"), instance_type="array"), [1, 2]),
        (instances.Shaping("id", included_fields=("b", "a"), instance_type="array"), [2, 1]),
        (instances.Shaping("id", excluded_fields=("note",), instance_type="array"), [2, 1]),
    ]
    for shaping, want in cases:
        batch, errors = batches.decode_json_batch([line], specs, shaping)
        assert errors == [] and batch.tensors["x"].tolist() == [want]
    # includedFields naming a field the instance lacks; instanceType object on an array.
    _, errors = batches.decode_json_batch(
        [line], specs, instances.Shaping(included_fields=("a", "zz"))
    )
    assert [kind for _, kind, _ in errors] == ["wrong_features"]
    _, errors = batches.decode_json_batch(
        [b"[1, 2]"], specs, instances.Shaping(instance_type="object")
    )
    assert [kind for _, kind, _ in errors] == ["wrong_features"]


def test_csv_rows_typed_by_the_signature():
    specs = {"a": InputSpec("a", "float32", ()), "n": InputSpec("n", "int64", ())}
    header = ("id", "a", "n")
    lines = [b"7,0.5,3", b"", b"8,x,3", b"9,1.5", b'10,"2.5",4\r']
    batch, errors = batches.decode_csv_batch(header, lines, specs, instances.Shaping("id"))
    assert batch.tensors["a"].tolist() == [0.5, 2.5] and batch.tensors["n"].tolist() == [3, 4]
    assert [json.loads(b"{" + h + b"}")["key"] for h in batch.heads] == ["7", "10"]
    assert [kind for _, kind, _ in errors] == ["blank_line", "wrong_dtype", "wrong_features"]
    # One vector input that is not a column: each row becomes that input's array.
    vector = {"pixels": InputSpec("pixels", "float32", (2,))}
    batch, errors = batches.decode_csv_batch(("p0", "p1"), [b"1,2", b"3,4"], vector)
    assert errors == [] and batch.tensors["pixels"].tolist() == [[1, 2], [3, 4]]
    assert json.loads(b"{" + batch.heads[0] + b"}") == {"instance": {"p0": 1.0, "p1": 2.0}}


def _error_rows(errors):
    from batch import outputs

    layout = outputs.Layout("legacy")
    return [layout.error_row(meta, kind, message) for meta, kind, message in errors]


def test_bytes_inputs_and_outputs_in_a_batch():
    payloads = [b"\x00\x01", b"", "héllo".encode()]
    lines = [json.dumps({"data": {"b64": base64.b64encode(p).decode()}}).encode() for p in payloads]
    lines.append(b'{"data": {"b64": "%%%"}}')
    batch, errors = batches.decode_json_batch(lines, BYTES)
    assert [kind for _, kind, _ in errors] == ["bad_b64"]
    assert batch.tensors["data"].dtype == object and list(batch.tensors["data"]) == payloads
    half = batch.take(1, 3)
    assert list(half.tensors["data"]) == payloads[1:] and half.heads == batch.heads[1:]
    rows = [orjson.loads(r) for r in batches.result_lines(batch, {"echo": batch.tensors["data"]})]
    assert [base64.b64decode(r["prediction"]["b64"]) for r in rows] == payloads
    assert [base64.b64decode(r["instance"]["data"]["b64"]) for r in rows] == payloads


def test_written_shards_hold_every_line_once_across_many_parts(tmp_path, monkeypatch):
    """Parts roll over (and are written in the background); nothing lost or doubled."""
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    monkeypatch.setattr(sink, "PART_BYTES", 2_000)
    blobs = [b"\n".join(b'{"row": %d}' % (i * 10 + j) for j in range(10)) for i in range(300)]
    with beam.Pipeline(runner=fn_runner.FnApiRunner()) as pipeline:
        _ = (
            pipeline
            | beam.Create(blobs)
            | sink.WriteShards(str(tmp_path), Shards("prediction.results"))
        )
    shards = sorted(tmp_path.glob("prediction.results-*"))
    assert len(shards) > 10  # it really rolled over
    assert all(p.name.endswith(f"-of-{len(shards):05d}") for p in shards)
    rows = [json.loads(ln) for p in shards for ln in p.read_text().splitlines()]
    assert sorted(r["row"] for r in rows) == list(range(3000))
    assert not list(tmp_path.glob(".tmp-*"))


def test_batched_result_lines_equal_record_by_record_lines():
    rng = np.random.default_rng(7)
    records = [bytes([i]) for i in range(5)]
    batch = batches.Batch(records, {}, echo_b64=True)
    heads = [b'"instance":' + orjson.dumps(instances.b64(r)) for r in records]
    assert batch.row_heads() == heads
    cases = [
        {"p": rng.random((5, 10), dtype=np.float32)},
        {"p": np.array([np.nan, np.inf, -0.0, 1e-30, 3.4e38], np.float32)},
        {"c": np.arange(5, dtype=np.int64), "p": rng.random((5, 3))},
        {"b": np.array([True, False, True, True, False])},
        {"e": np.zeros((5, 0), np.float32), "u": np.arange(5, dtype=np.uint8)},
        {"deep": rng.random((5, 2, 2), dtype=np.float32)},
        {"s": np.array([b"x", b"\xff", b"", b"a b", b"\x00"], dtype=object)},
        {"t": np.array([[b"a", b"b"]] * 5, dtype=object), 'weird "name': np.arange(5.0)},
    ]
    for outputs in cases:
        want = [
            batches.result_line(head, {name: v[i] for name, v in outputs.items()})
            for i, head in enumerate(heads)
        ]
        assert batches.result_lines(batch, outputs) == want, outputs
        rows = [orjson.loads(line) for line in want]
        assert [base64.b64decode(r["instance"]["b64"]) for r in rows] == [
            bytes([i]) for i in range(5)
        ]
