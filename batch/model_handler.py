"""Beam RunInference model handler for SavedModels, with per-record failure isolation.

Beam's stock TensorFlow handler loads models with ``keras.models.load_model``, which refuses
the SavedModel a Keras 3 export writes; this one uses ``tf.saved_model.load`` and calls the
chosen signature on whole batches.

- Batches are pinned to ``batch_size`` (min = max), so the signature is never called on a
  ramp of tiny warm-up batches, and its batch dimension (``None``) means no retracing.
- RunInference keeps one loaded model per worker process, shared by the threads of that
  process (Beam's ``shared.Shared``); ``large_model=True`` shares one copy across all the
  processes of a machine instead (worth it only for models that do not fit N times).
- When a batch fails inside the model, it is split in halves and each half re-run, down to
  single records, so a bad record fails only itself and every other record gets its result.

Each element is ``(metadata, tensors)`` from :mod:`batch.instances`; each result is a
``PredictionResult`` whose ``inference`` is a dict of per-record outputs or a RecordError.

Example:
    >>> handler = SavedModelHandler("gs://b/job/keras_export/20260101T000000Z",
    ...                             "serving_default", batch_size=64)  # doctest: +SKIP
    >>> pcoll | RunInference(handler)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from batch.instances import INFERENCE_FAILED, RecordError
from batch.model import LoadedModel, load_model

METRICS_NAMESPACE = "batch_predict"

Element = tuple[dict[str, Any], dict[str, Any]]


class SavedModelHandler(ModelHandler[Element, PredictionResult, LoadedModel]):
    """Loads a SavedModel signature and runs it on batches of decoded instances."""

    def __init__(
        self,
        export_path: str,
        signature_name: str,
        batch_size: int = 64,
        large_model: bool = False,
    ) -> None:
        super().__init__(
            min_batch_size=batch_size, max_batch_size=batch_size, large_model=large_model
        )
        self._export_path = export_path
        self._signature_name = signature_name
        self._batch_size = batch_size
        self._batch_latency = Metrics.distribution(METRICS_NAMESPACE, "batch_latency_ms")
        self._isolation_runs = Metrics.counter(METRICS_NAMESPACE, "isolation_reruns")

    def load_model(self) -> LoadedModel:
        silence_memory_warning()
        return load_model(self._export_path, self._signature_name)

    def run_inference(
        self,
        batch: Sequence[Element],
        model: LoadedModel,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        start = time.perf_counter()
        outputs = predict_isolating(model, list(batch), self._isolation_runs)
        self._batch_latency.update(int((time.perf_counter() - start) * 1000))
        return [PredictionResult(e, o) for e, o in zip(batch, outputs, strict=True)]

    def get_num_bytes(self, batch: Sequence[Element]) -> int:
        total = 0
        for _, tensors in batch:
            for value in tensors.values():
                total += value.nbytes if isinstance(value, np.ndarray) else len(value)
        return total

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


def stack(batch: Sequence[Element], model: LoadedModel) -> dict[str, np.ndarray]:
    """Per-record tensors -> one array per input with a leading batch dimension."""
    out = {}
    for name, spec in model.input_specs.items():
        values = [tensors[name] for _, tensors in batch]
        if spec.is_string and all(isinstance(v, bytes) for v in values):
            arr = np.empty(len(values), dtype=object)
            arr[:] = values  # np.array() would turn bytes into a fixed-width dtype
            out[name] = arr
        else:
            out[name] = np.stack(values)
    return out


def predict_batch(model: LoadedModel, batch: Sequence[Element]) -> list[dict[str, Any]]:
    """Run one batch and split the outputs into one dict per record."""
    outputs = model(stack(batch, model))
    for name, value in outputs.items():
        if value.shape[:1] != (len(batch),):
            raise ValueError(
                f"output {name!r} has shape {list(value.shape)} for a batch of {len(batch)}"
            )
    return [{name: value[i] for name, value in outputs.items()} for i in range(len(batch))]


def predict_isolating(
    model: LoadedModel, batch: list[Element], reruns: Any = None
) -> list[dict[str, Any] | RecordError]:
    """Predict a batch; if it fails, re-run halves recursively so only bad records fail."""
    try:
        return predict_batch(model, batch)
    except Exception as exc:  # any failure inside TF: narrow it down to the records
        if len(batch) == 1:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return [RecordError(INFERENCE_FAILED, f"the model failed on this instance: {first}")]
    if reruns is not None:
        reruns.inc()
    mid = len(batch) // 2
    return predict_isolating(model, batch[:mid], reruns) + predict_isolating(
        model, batch[mid:], reruns
    )
