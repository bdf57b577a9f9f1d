"""Beam RunInference model handler for SavedModels, with per-record failure isolation.

Beam's stock TensorFlow handler loads models with ``keras.models.load_model``, which refuses
the SavedModel a Keras 3 export writes; this one uses ``tf.saved_model.load`` and calls the
chosen signature on whole batches.

- Each element is already a whole :class:`~batch.batches.Batch` of up to ``--batch-size``
  records, decoded and stacked before it gets here (Beam's per-element cost is paid once
  per batch, not per record), so RunInference's own batching is pinned to one element
  (min = max = 1). The signature's batch dimension is ``None``: no retracing, whatever the
  size of a batch.
- RunInference keeps one loaded model per worker process, shared by the threads of that
  process (Beam's ``shared.Shared``); ``large_model=True`` shares one copy across all the
  processes of a machine instead (worth it only for models that do not fit N times).
- When a batch fails inside the model, it is split in halves and each half re-run, down to
  single records, so a bad record fails only itself and every other record gets its result.

Each result is a ``PredictionResult`` whose ``example`` is the Batch and whose
``inference`` is the batched outputs (a dict of arrays) when the whole batch succeeded, or
a list with one dict of outputs or RecordError per record when some records failed.

Example:
    >>> handler = SavedModelHandler("gs://b/job/keras_export/20260101T000000Z",
    ...                             "serving_default")  # doctest: +SKIP
    >>> batches | RunInference(handler)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from batch.batches import Batch
from batch.instances import INFERENCE_FAILED, RecordError
from batch.model import LoadedModel, load_model

METRICS_NAMESPACE = "batch_predict"

# What the model gives for one Batch: batched outputs, or one entry per record.
BatchOutputs = dict[str, np.ndarray] | list[dict[str, Any] | RecordError]


class SavedModelHandler(ModelHandler[Batch, PredictionResult, LoadedModel]):
    """Loads a SavedModel signature and runs it on batches of decoded instances."""

    def __init__(
        self,
        export_path: str,
        signature_name: str,
        large_model: bool = False,
    ) -> None:
        # Elements are whole batches already: RunInference must not batch them again.
        super().__init__(min_batch_size=1, max_batch_size=1, large_model=large_model)
        self._export_path = export_path
        self._signature_name = signature_name
        self._batch_latency = Metrics.distribution(METRICS_NAMESPACE, "batch_latency_ms")
        self._isolation_runs = Metrics.counter(METRICS_NAMESPACE, "isolation_reruns")

    def load_model(self) -> LoadedModel:
        silence_memory_warning()
        return load_model(self._export_path, self._signature_name)

    def run_inference(
        self,
        batch: Sequence[Batch],
        model: LoadedModel,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        results = []
        for records in batch:
            start = time.perf_counter()
            outputs = predict_isolating(model, records, self._isolation_runs)
            self._batch_latency.update(int((time.perf_counter() - start) * 1000))
            results.append(PredictionResult(records, outputs))
        return results

    def get_num_bytes(self, batch: Sequence[Batch]) -> int:
        return sum(records.num_bytes() for records in batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE


class _DropMemoryWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "memory usage cannot be fetched" not in record.getMessage()


def silence_memory_warning() -> None:
    """RunInference warns on every bundle when an optional import of its own fails; the
    warning says nothing about this job, so it is dropped (once per process)."""
    root = logging.getLogger()
    if not any(isinstance(f, _DropMemoryWarning) for f in root.filters):
        root.addFilter(_DropMemoryWarning())


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
    """Predict a batch; if it fails, re-run halves recursively so only bad records fail."""
    if not len(records):
        return []
    try:
        return predict_batch(model, records)
    except Exception as exc:  # any failure inside TF: narrow it down to the records
        return _split(model, records, reruns, exc)


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
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return [RecordError(INFERENCE_FAILED, f"the model failed on this instance: {first}")]
    if reruns is not None:
        reruns.inc()
    mid = len(records) // 2
    return _isolate(model, records.take(0, mid), reruns) + _isolate(
        model, records.take(mid, len(records)), reruns
    )
