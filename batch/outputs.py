"""The files a batch job writes, in either layout, and the rows in them.

Legacy layout (AI Platform; flags and ``predictionInput`` bodies), in ``--output-path``:

- ``prediction.results-SSSSS-of-NNNNN``: ``{"instance": ..., "prediction": ...}`` per record
  (``"key"`` instead of ``"instance"`` with a key field); a model with one output gives its
  value, several an object keyed by output name; bytes are ``{"b64": ...}``.
- ``prediction.errors-SSSSS-of-NNNNN``: ``{"instance" | "key" | "raw": ..., "error":
  {"kind": ..., "message": ...}}`` per failed record; ``raw`` is the record's bytes (b64,
  at most :data:`batch.instances.ECHO_BYTES` of them) when it could not be decoded.
- ``prediction.errors_stats-00000-of-00001``: one JSON object, ``records_read``,
  ``predictions``, ``errors`` and ``errors_by_kind``; always ``predictions + errors ==
  records_read``.

Vertex AI layout (``BatchPredictionJob`` bodies, or ``--output-layout vertex``): a new
directory ``prediction-<displayName>-<YYYY-MM-DDThh:mm:ss.sssZ>`` under the prefix with
``predictions_0001.jsonl``, ... and, when a record failed, ``errors_0001.jsonl``, ...; rows
are Vertex's PredictionResult: ``{"instance" | "key": ..., "prediction": ...}`` or
``{"instance" | "key": ..., "error": {"status": <google.rpc.Code name>, "message":
"<kind>: ..."}}``, keys as strings. The counts go to ``completion_stats.json``.

While a job writes, its output directory holds :data:`RUNNING_MARKER`; the job's last step
removes it. A run that finds the marker (an earlier run of the job was killed) removes that
run's files before writing its own, so a rerun leaves exactly one complete set.

Example:
    >>> layout = Layout("legacy")
    >>> layout.results.name("gs://b/out", 0, 2), layout.stats_path("gs://b/out")
    ('gs://b/out/prediction.results-00000-of-00002', 'gs://b/out/prediction.errors_stats-00000-of-00001')
    >>> vertex = Layout("vertex")
    >>> vertex.results.name("gs://b/out/d", 0, 2), vertex.errors.pattern("gs://b/out/d")
    ('gs://b/out/d/predictions_0001.jsonl', 'gs://b/out/d/errors_*.jsonl')
    >>> vertex.error_row(b'"key":"7"', "bad_b64", "not base64")
    b'{"key":"7","error":{"status":"INVALID_ARGUMENT","message":"bad_b64: not base64"}}'
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from batch import instances
from batch.instances import b64
from batch.options import VERTEX
from jobcommon import storage

READ = "records_read"
PREDICTED = "predictions"
FAILED = "errors"
RUNNING_MARKER = ".batch-predict-running"
# A row head is its record's text plus at most this much (``"instance":``, a key's quotes).
_HEAD_SLACK = 64

DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


@dataclass(frozen=True)
class Shards:
    """How the files of one output are named: ``<stem>-SSSSS-of-NNNNN`` (legacy) or
    ``<stem>_NNNN.jsonl`` numbered from 1 (Vertex AI)."""

    stem: str
    vertex: bool = False
    # Written even when there are no rows (an empty first shard).
    always: bool = True

    def name(self, directory: str, index: int, total: int) -> str:
        if self.vertex:
            return storage.join(directory, f"{self.stem}_{index + 1:04d}.jsonl")
        return storage.join(directory, f"{self.stem}-{index:05d}-of-{total:05d}")

    def pattern(self, directory: str) -> str:
        suffix = "_*.jsonl" if self.vertex else "-*"
        return storage.join(directory, self.stem + suffix)


@dataclass(frozen=True)
class Layout:
    kind: str

    @property
    def vertex(self) -> bool:
        return self.kind == VERTEX

    @property
    def results(self) -> Shards:
        return Shards("predictions", True) if self.vertex else Shards("prediction.results")

    @property
    def errors(self) -> Shards:
        if self.vertex:  # Vertex AI writes errors files only when a record failed
            return Shards("errors", True, always=False)
        return Shards("prediction.errors")

    def stats_path(self, directory: str) -> str:
        name = "completion_stats.json" if self.vertex else "prediction.errors_stats-00000-of-00001"
        return storage.join(directory, name)

    def error_row(self, meta: dict[str, Any] | bytes, kind: str, message: str) -> bytes:
        """One errors line: what was read (instance, key or raw bytes) and why it failed.

        ``meta`` is a dict, or the head of the record's results row already in JSON text
        (``b'"instance":...'``, see :mod:`batch.batches`).
        """
        message = message[: instances.MESSAGE_CHARS]
        if isinstance(meta, bytes) and len(meta) > instances.ECHO_BYTES + _HEAD_SLACK:
            # A huge instance (say the model failed on it): echo a bounded prefix only.
            text = meta.partition(b":")[2] if meta.startswith(b'"instance":') else meta
            meta, message = instances.raw_record(text), instances.echo_note(message, len(text))
        if self.vertex:
            status = instances.STATUS.get(kind, instances.DEFAULT_STATUS)
            error = {"status": status, "message": f"{kind}: {message}"}
            if isinstance(meta, dict) and "raw" in meta:
                meta = {"instance": meta["raw"]}
        else:
            error = {"kind": kind, "message": message}
        if isinstance(meta, bytes):
            return b"{" + meta + b',"error":' + orjson.dumps(error) + b"}"
        return b"{" + instances.dumps(meta)[1:-1] + b',"error":' + orjson.dumps(error) + b"}"

    def earlier_outputs(self, directory: str) -> list[str]:
        """Files of this layout already in ``directory``."""
        found = []
        for pattern in (self.results.pattern(directory), self.errors.pattern(directory)):
            found += storage.glob(pattern)
        if storage.exists(self.stats_path(directory)):
            found.append(self.stats_path(directory))
        return found


def vertex_run_dir(prefix: str, display_name: str, stamp: str) -> str:
    """``<prefix>/prediction-<display name>-<stamp>``, as Vertex AI names its output."""
    return storage.join(prefix, f"prediction-{display_name}-{stamp}")


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


def stats_from_counts(counts: Counter | dict[str, int]) -> dict[str, Any]:
    """The errors_stats object from raw counters (``read``, ``ok`` and ``error:<kind>``).

    >>> stats_from_counts({"read": 3, "ok": 2, "error:bad_json": 1})
    {'records_read': 3, 'predictions': 2, 'errors': 1, 'errors_by_kind': {'bad_json': 1}}
    """
    by_kind = {
        name.split(":", 1)[1]: n for name, n in sorted(counts.items()) if name.startswith("error:")
    }
    return {
        READ: counts.get("read", 0),
        PREDICTED: counts.get("ok", 0),
        FAILED: sum(by_kind.values()),
        "errors_by_kind": by_kind,
    }
