"""Beam RunInference model handler for SavedModels, with per-record failure isolation.

Beam's stock TensorFlow handler loads models with ``keras.models.load_model``, which refuses
the SavedModel a Keras 3 export writes; this one uses ``tf.saved_model.load`` and calls the
chosen signature on whole batches.

- Each element is already a whole :class:`~batch.batches.Batch` of up to ``--batch-size``
  records, decoded and stacked before it gets here (Beam's per-element cost is paid once
  per batch, not per record). The signature's batch dimension is ``None``: no retracing,
  whatever the size of a batch.
- The model runs in a process of its own (:mod:`batch.model_process`), one per worker
  process, on one thread more than the cores (see :func:`default_threads`). Each Batch is
  sent there as soon as it enters RunInference (the handler's preprocess step): the model
  computes while the bundle's thread reads and decodes the next Batches, and
  :meth:`run_inference`, called once RunInference has gathered a few Batches, collects
  their results in order and makes their results lines. Each signature call still gets
  exactly one Batch, so ``--batch-size`` is what the model sees.
- ``large_model=True`` instead loads one copy in the job's own processes, which Beam shares
  across all the processes of a machine (worth it only for models that do not fit N times).
- When a batch fails inside the model, records the careful check rejects (for tf.Examples:
  not an Example, a schema feature missing) are set aside with their error, and the rest
  is split in halves and each half re-run, down to single records, so a bad record fails
  only itself and every other record gets its result (:mod:`batch.isolation`).

Each result is a ``PredictionResult`` whose ``example`` is the Batch and whose
``inference`` is the Batch's results lines as one text (:func:`batch.batches.results_text`)
when the whole batch succeeded, or a list with one dict of outputs or RecordError per
record when some failed.

Example:
    >>> handler = SavedModelHandler("gs://b/job/keras_export/20260101T000000Z",
    ...                             "serving_default")  # doctest: +SKIP
    >>> batches | RunInference(handler)  # doctest: +SKIP
    >>> import os
    >>> default_threads() == min(4, os.cpu_count() or 1) + 1  # model threads
    True
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from batch import batches, model_process
from batch.batches import Batch
from batch.instances import RecordError
from batch.model import LoadedModel, load_model
from batch.model_process import ModelProcess, default_threads

METRICS_NAMESPACE = "batch_predict"
# Batches handed to each model thread per RunInference call: on 2 cores, 4 was at least as
# fast as 1 or 2 in interleaved runs (fewer idle threads at the end of each call).
BATCHES_PER_THREAD = 4

# What a PredictionResult carries: the Batch's results lines as one text, or one entry per
# record (some failed).
Inference = bytes | list[dict[str, Any] | RecordError]


class SavedModelHandler(ModelHandler[Batch, PredictionResult, LoadedModel]):
    """Loads a SavedModel signature and runs it on batches of decoded instances."""

    def __init__(
        self,
        export_path: str,
        signature_name: str,
        large_model: bool = False,
        threads: int | None = None,
    ) -> None:
        threads = threads or default_threads()
        # BATCHES_PER_THREAD Batches per call keep every thread busy while the others
        # finish; min = max, so Beam does not size these calls adaptively.
        per_call = threads * BATCHES_PER_THREAD if threads > 1 else 1
        super().__init__(min_batch_size=per_call, max_batch_size=per_call, large_model=large_model)
        self._export_path = export_path
        self._signature_name = signature_name
        self._threads = threads
        self._batch_latency = Metrics.distribution(METRICS_NAMESPACE, "batch_latency_ms")
        self._isolation_runs = Metrics.counter(METRICS_NAMESPACE, "isolation_reruns")

    def load_model(self) -> ModelProcess | LoadedModel:
        silence_memory_warning()
        if self.share_model_across_processes():
            # Beam serves this copy to every process of the machine through a proxy.
            return load_model(self._export_path, self._signature_name)
        return model_process.shared(self._export_path, (self._signature_name,), self._threads)

    def get_preprocess_fns(self) -> list[Callable[[Any], Any]]:
        fns = list(super().get_preprocess_fns())
        # With a model shared across processes RunInference holds a proxy, not our copy.
        if not self.share_model_across_processes():
            fns.append(self._start)
        return fns

    def _start(self, records: Batch) -> Batch:
        """RunInference's preprocess step: send this Batch to the model at once.

        RunInference calls :meth:`run_inference` only once it has gathered a call's worth
        of Batches; started here, the model computes the first ones while the bundle's
        thread reads the next. The model is this process's one model process, the one
        :meth:`load_model` gives RunInference.
        """
        model = model_process.shared(self._export_path, (self._signature_name,), self._threads)
        records.pending = model.submit(records.tensors, len(records))
        return records

    def run_inference(
        self,
        batch: Sequence[Batch],
        model: ModelProcess | LoadedModel,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        if isinstance(model, ModelProcess):
            futures = [r.pending or model.submit(r.tensors, len(r)) for r in batch]
            done = [_inference(r, f.result()) for r, f in zip(batch, futures, strict=True)]
        else:
            done = [_predict(model, records) for records in batch]
        # Beam's metrics belong to the bundle's thread: update them here.
        results = []
        for records, (inference, millis, reruns) in zip(batch, done, strict=True):
            records.pending = None
            self._batch_latency.update(millis)
            if reruns:
                self._isolation_runs.inc(reruns)
            results.append(PredictionResult(records, inference))
        return results

    def get_num_bytes(self, batch: Sequence[Batch]) -> int:
        return sum(records.num_bytes() for records in batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE


def _predict(model: LoadedModel, records: Batch) -> tuple[Inference, int, int]:
    """One Batch on a model in this process (Beam's shared copy of ``large_model``)."""
    return _inference(records, model_process.predict(model, records.tensors, len(records)))


def _inference(records: Batch, outcome: model_process.Outcome) -> tuple[Inference, int, int]:
    """A model's outcome for ``records`` -> (the results lines as one text, or the entries
    of a batch some records failed in; ms; re-runs)."""
    outputs, millis, reruns = outcome
    if isinstance(outputs, dict):
        return batches.results_text(records, outputs), millis, reruns
    return outputs, millis, reruns


class _DropMemoryWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "memory usage cannot be fetched" not in record.getMessage()


def silence_memory_warning() -> None:
    """RunInference warns on every bundle when an optional import of its own fails; the
    warning says nothing about this job, so it is dropped (once per process)."""
    root = logging.getLogger()
    if not any(isinstance(f, _DropMemoryWarning) for f in root.filters):
        root.addFilter(_DropMemoryWarning())
