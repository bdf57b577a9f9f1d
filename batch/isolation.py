"""One batch through the model, with per-record failure isolation (no Beam here: this
runs in the model's process, see :mod:`batch.model_process`).

When a batch fails inside the model, records the careful check rejects (for tf.Examples:
not an Example, a schema feature missing) are set aside with their error, and the rest is
split in halves and each half re-run, down to single records, so a bad record fails only
itself and every other record gets its result.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from batch import instances
from batch.batches import Batch
from batch.instances import INFERENCE_FAILED, RecordError
from batch.model import LoadedModel

# What the model gives for one Batch: batched outputs, or one entry per record.
BatchOutputs = dict[str, np.ndarray] | list[dict[str, Any] | RecordError]


class RerunCount:
    """How many times a failed batch's parts were re-run (a metric of the job)."""

    def __init__(self) -> None:
        self.value = 0

    def inc(self, n: int = 1) -> None:
        self.value += n


def predict_batch(model: LoadedModel, records: Batch) -> dict[str, np.ndarray]:
    """Run one batch through the signature; every output must have one row per record."""
    outputs = model(records.tensors)
    for name, value in outputs.items():
        if value.shape[:1] != (len(records),):
            raise ValueError(
                f"output {name!r} has shape {list(value.shape)} for a batch of {len(records)}"
            )
    return outputs


def predict_isolating(model: LoadedModel, records: Batch, reruns: Any = None) -> BatchOutputs:
    """Predict a batch; if it fails, set aside the records the careful check rejects, then
    re-run halves of the rest recursively, so only bad records fail."""
    if not len(records):
        return []
    try:
        return predict_batch(model, records)
    except Exception as exc:  # any failure inside TF: narrow it down to the records
        return _explain(model, records, reruns, exc)


def _explain(
    model: LoadedModel, records: Batch, reruns: Any, exc: Exception
) -> list[dict | RecordError]:
    verdicts = check_records(model, records)
    keep = [i for i, verdict in enumerate(verdicts) if verdict is None]
    if len(keep) == len(records):
        return _split(model, records, reruns, exc)
    rest = iter(_isolate(model, records.select(keep), reruns) if keep else [])
    return [next(rest) if verdict is None else verdict for verdict in verdicts]


def check_records(model: LoadedModel, records: Batch) -> list[RecordError | None]:
    """The careful per-record check, run only on a batch the model failed on.

    tf.Example records go to the signature unparsed (TF parses a whole batch at once, far
    faster than protobuf in Python); when a batch fails, this says which records are not a
    tf.Example or lack a feature of the trainer's schema, with the same error kinds as
    JSON input gets.
    """
    info = model.info
    if not info.takes_examples:
        return [None] * len(records)
    features = info.schema.feature_names if info.schema else None
    verdicts: list[RecordError | None] = []
    for record in records.tensors[next(iter(info.input_specs))]:
        try:
            instances.check_example(record, features)
            verdicts.append(None)
        except RecordError as err:
            verdicts.append(err)
    return verdicts


def _isolate(model: LoadedModel, records: Batch, reruns: Any) -> list[dict | RecordError]:
    try:
        outputs = predict_batch(model, records)
    except Exception as exc:
        return _split(model, records, reruns, exc)
    return [{name: value[i] for name, value in outputs.items()} for i in range(len(records))]


def _split(
    model: LoadedModel, records: Batch, reruns: Any, exc: Exception
) -> list[dict | RecordError]:
    if len(records) == 1:
        cause = instances.root_cause(exc)
        return [RecordError(INFERENCE_FAILED, f"the model failed on this instance: {cause}")]
    if reruns is not None:
        reruns.inc()
    mid = len(records) // 2
    return _isolate(model, records.take(0, mid), reruns) + _isolate(
        model, records.take(mid, len(records)), reruns
    )
