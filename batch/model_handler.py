"""Beam RunInference model handler for SavedModels, with per-record failure isolation.

Beam's stock TensorFlow handler loads models with ``keras.models.load_model``, which refuses
the SavedModel a Keras 3 export writes; this one uses ``tf.saved_model.load`` and calls the
chosen signature on whole batches.

- Each element is already a whole :class:`~batch.batches.Batch` of up to ``--batch-size``
  records, decoded and stacked before it gets here (Beam's per-element cost is paid once
  per batch, not per record). The signature's batch dimension is ``None``: no retracing,
  whatever the size of a batch.
- Each Batch is started on a model thread as soon as it enters RunInference (the
  handler's preprocess step), with one thread more than the cores (see
  :func:`default_threads`): the model computes while the bundle's thread reads and frames
  the next Batches, and :meth:`run_inference`, called once RunInference has gathered a
  few Batches, collects their results in order. TF releases the GIL while it computes.
  Each signature call still gets exactly one Batch, so ``--batch-size`` is what the model
  sees. The results lines (outputs to JSON, echoed records to base64) are made on the
  same threads.
- RunInference keeps one loaded model per worker process, shared by the threads of that
  process (Beam's ``shared.Shared``); ``large_model=True`` shares one copy across all the
  processes of a machine instead (worth it only for models that do not fit N times).
- When a batch fails inside the model, records the careful check rejects (for tf.Examples:
  not an Example, a schema feature missing) are set aside with their error, and the rest
  is split in halves and each half re-run, down to single records, so a bad record fails
  only itself and every other record gets its result.

Each result is a ``PredictionResult`` whose ``example`` is the Batch and whose
``inference`` is the Batch's results lines as one text (:func:`batch.batches.results_text`)
when the whole batch succeeded, or a list with one dict of outputs or RecordError per
record when some failed.

Example:
    >>> handler = SavedModelHandler("gs://b/job/keras_export/20260101T000000Z",
    ...                             "serving_default")  # doctest: +SKIP
    >>> batches | RunInference(handler)  # doctest: +SKIP
    >>> default_threads() == min(4, os.cpu_count() or 1) + 1  # model threads per process
    True
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from batch import batches, instances
from batch.batches import Batch
from batch.instances import INFERENCE_FAILED, RecordError
from batch.model import LoadedModel, load_model

METRICS_NAMESPACE = "batch_predict"
# Batches handed to each model thread per RunInference call: on 2 cores, 4 was at least as
# fast as 1 or 2 in interleaved runs (fewer idle threads at the end of each call).
BATCHES_PER_THREAD = 4

# What the model gives for one Batch: batched outputs, or one entry per record.
BatchOutputs = dict[str, np.ndarray] | list[dict[str, Any] | RecordError]
# What a PredictionResult carries: the Batch's results lines as one text, or one entry per
# record (some failed).
Inference = bytes | list[dict[str, Any] | RecordError]


def default_threads() -> int:
    """Batches in the model at once: one more than the cores (up to 4 cores).

    Part of each signature call is TF's own scheduling, not computing: on 2 cores, calls on
    batches of 64 from 1, 2 and 3 threads took 13-14.5, 8.9-11.5 and 7.2-8.5 us per record;
    4 or 6 threads were about as fast as 3, and in the whole pipeline 4 were no better.
    """
    return min(4, os.cpu_count() or 1) + 1


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

    def load_model(self) -> LoadedModel:
        silence_memory_warning()
        return load_model(self._export_path, self._signature_name)

    def get_preprocess_fns(self) -> list[Callable[[Any], Any]]:
        fns = list(super().get_preprocess_fns())
        # With a model shared across processes RunInference holds a proxy, not our copy.
        if self._threads > 1 and not self.share_model_across_processes():
            fns.append(self._start)
        return fns

    def _start(self, records: Batch) -> Batch:
        """RunInference's preprocess step: start this Batch on a model thread at once.

        RunInference calls :meth:`run_inference` only once it has gathered a call's worth
        of Batches; started here, the model computes the first ones while the bundle's
        thread reads the next. The model is this process's one copy, the same object
        :meth:`load_model` gives RunInference.
        """
        model = load_model(self._export_path, self._signature_name)
        records.pending = _threads(self._threads).submit(_predict, model, records)
        return records

    def run_inference(
        self,
        batch: Sequence[Batch],
        model: LoadedModel,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        if self._threads == 1:
            done = [_predict(model, records) for records in batch]
        else:
            pool = _threads(self._threads)
            futures = [r.pending or pool.submit(_predict, model, r) for r in batch]
            done = [future.result() for future in futures]
        # Beam's metrics belong to the bundle's thread: update them here, not in the pool.
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
    """One Batch on a model thread -> (its results text or per-record entries, ms, isolation
    reruns). The results lines are made here, not on the bundle's thread, which meanwhile
    reads the next input."""
    reruns = _Count()
    start = time.perf_counter()
    outputs = predict_isolating(model, records, reruns)
    millis = int((time.perf_counter() - start) * 1000)
    if isinstance(outputs, dict):
        return batches.results_text(records, batches.output_columns(outputs)), millis, reruns.value
    return outputs, millis, reruns.value


@functools.cache
def _threads(count: int) -> ThreadPoolExecutor:
    """One pool per process, shared by every bundle (created on first use on a worker)."""
    return ThreadPoolExecutor(max_workers=count, thread_name_prefix="predict")


class _Count:
    def __init__(self) -> None:
        self.value = 0

    def inc(self, n: int = 1) -> None:
        self.value += n


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
