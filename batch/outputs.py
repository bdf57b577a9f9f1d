"""The rows a batch job writes: results, errors and error statistics, as JSON lines.

- ``prediction.results-SSSSS-of-NNNNN``: ``{"instance": ..., "prediction": ...}`` per record
  (``"key"`` instead of ``"instance"`` with ``--key-field``); a model with one output gives
  its value, several give an object keyed by output name; bytes are ``{"b64": ...}``.
- ``prediction.errors-SSSSS-of-NNNNN``: ``{"instance" | "key" | "raw": ..., "error":
  {"kind": ..., "message": ...}}`` per failed record; ``raw`` is the record's bytes (b64)
  when it could not be decoded at all.
- ``prediction.errors_stats-00000-of-00001``: one JSON object, ``records_read``,
  ``predictions``, ``errors`` and ``errors_by_kind``; always ``predictions + errors ==
  records_read``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
import numpy as np
import orjson

from batch.instances import b64

RESULTS_PREFIX = "prediction.results"
ERRORS_PREFIX = "prediction.errors"
STATS_PREFIX = "prediction.errors_stats"

READ = "records_read"
PREDICTED = "predictions"
FAILED = "errors"

DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def _plain(value: Any) -> Any:
    """Outputs orjson cannot write natively: bytes (as b64) and object arrays of bytes."""
    if isinstance(value, bytes):
        return b64(value)
    if isinstance(value, np.ndarray) and value.dtype == object:
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def output_value(value: Any) -> Any:
    """One output value (per record) as something orjson writes: bytes become b64."""
    if isinstance(value, bytes):
        return b64(value)
    if isinstance(value, np.ndarray) and value.dtype.kind in "OS":
        return _plain(value.astype(object))
    return value


def result_row(meta: dict[str, Any], prediction: dict[str, Any]) -> bytes:
    """One results line: metadata (instance or key) plus the model's outputs."""
    if len(prediction) == 1:
        value = output_value(next(iter(prediction.values())))
    else:
        value = {name: output_value(v) for name, v in prediction.items()}
    return orjson.dumps({**meta, "prediction": value}, option=DUMP_OPTIONS)


def error_row(meta: dict[str, Any] | bytes, kind: str, message: str) -> bytes:
    """One errors line: what was read (instance, key or raw bytes) and why it failed.

    ``meta`` is a dict, or the head of the record's results row already in JSON text
    (``b'"instance":...'``, see :mod:`batch.batches`).
    """
    error = {"kind": kind, "message": message}
    if isinstance(meta, bytes):
        return b"{" + meta + b',"error":' + orjson.dumps(error) + b"}"
    return orjson.dumps({**meta, "error": error}, option=DUMP_OPTIONS)


class CountsFn(beam.CombineFn):
    """Sums ``(name, n)`` pairs into one dict of counts; empty input gives zeros."""

    def create_accumulator(self) -> Counter:
        return Counter()

    def add_input(self, acc: Counter, element: tuple[str, int]) -> Counter:
        acc[element[0]] += element[1]
        return acc

    def merge_accumulators(self, accumulators: Iterable[Counter]) -> Counter:
        total: Counter = Counter()
        for acc in accumulators:
            total.update(acc)
        return total

    def extract_output(self, acc: Counter) -> dict[str, Any]:
        return stats_from_counts(acc)


def stats_from_counts(counts: Counter | dict[str, int]) -> dict[str, Any]:
    """The errors_stats object from raw counters (``read``, ``ok`` and ``error:<kind>``)."""
    by_kind = {
        name.split(":", 1)[1]: n for name, n in sorted(counts.items()) if name.startswith("error:")
    }
    return {
        READ: counts.get("read", 0),
        PREDICTED: counts.get("ok", 0),
        FAILED: sum(by_kind.values()),
        "errors_by_kind": by_kind,
    }
