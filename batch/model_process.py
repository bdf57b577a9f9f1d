"""The batch job's model, served from a process of its own.

A job process that loads the SavedModel itself pays for it twice on 2 cores: TensorFlow's
import (1.5 s) comes on top of Beam's (0.7 s), both holding the one interpreter lock; and
while the model computes on its threads, the Python side of each signature call takes that
lock from the thread that decodes the input (decoding ran at half speed with one model
thread busy). Here the model lives in a child process started first: TensorFlow loads there
while the job imports Beam and plans its pipeline, and the two processes never wait on
each other's lock. Batches go over a pipe as numpy arrays (200 KB for 64 instances of 784
floats) and come back as the outputs' JSON text, or as one entry per record when some
failed (see :func:`batch.isolation.predict_isolating`, which runs in the child).

One child per job process, shared by everything in it (:func:`shared`); on Dataflow, one
per SDK worker process, as the model copies were before. The child ends when its parent
does: it reads requests until the pipe closes.

Example:
    >>> export = "gs://b/job/keras_export/20260101T000000Z"
    >>> model = shared(export, ("serving_default",))  # doctest: +SKIP
    >>> columns, millis, reruns = model.submit({"pixels": x}, len(x)).result()  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from batch.model import ModelLoadError, SignatureInfo

# What the child returns for one batch: (each output's rows as JSON text, or one entry per
# record; milliseconds in the model; isolation re-runs).
Outcome = tuple[Any, int, int]


def default_threads() -> int:
    """Batches in the model at once: one more than the cores (up to 4 cores).

    Part of each signature call is TF's own scheduling, not computing: on 2 cores, calls on
    batches of 64 from 1, 2 and 3 threads took 13-14.5, 8.9-11.5 and 7.2-8.5 us per record;
    4 or 6 threads were about as fast as 3, and in the whole pipeline 4 were no better.
    """
    return min(4, os.cpu_count() or 1) + 1


class ModelProcessError(RuntimeError):
    """The model's process ended before it answered."""


class ModelProcess:
    """A SavedModel signature loaded and called in a child process.

    ``signatures`` are tried in order: a later one is used only when the export has none
    of the names before it (a TFRecord job's tf.Example signature, else serving_default).
    """

    def __init__(self, export_path: str, signatures: Sequence[str], threads: int) -> None:
        # A new interpreter, not a fork (unsafe with threads running) nor multiprocessing's
        # spawn (which runs the parent's main script again: a script calling
        # batch.predict.main without a __main__ guard would start its job twice).
        ours, theirs = socket.socketpair()
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (package_root, env.get("PYTHONPATH"))))
        self._process = subprocess.Popen(
            [
                sys.executable, "-m", "batch.model_process", str(theirs.fileno()),
                export_path, json.dumps(list(signatures)), str(threads),
            ],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            env=env,
        )  # fmt: skip
        theirs.close()
        self._conn = Connection(ours.detach())
        self._send_lock = threading.Lock()
        self._pending: dict[int, Future] = {}
        self._pending_lock = threading.Lock()
        self._calls = itertools.count()
        self._loaded: Future = Future()
        self._closed = False
        self._reader = threading.Thread(target=self._read, name="batch-model-results", daemon=True)
        self._reader.start()

    @property
    def info(self) -> SignatureInfo:
        """The signature served (waits for the model to load; raises ModelLoadError)."""
        return self._loaded.result()

    def submit(self, tensors: dict[str, np.ndarray], count: int) -> Future:
        """Start one batch of ``count`` records; the future gives its :data:`Outcome`."""
        future: Future = Future()
        with self._pending_lock:
            if self._closed:
                raise ModelProcessError(self._ended())
            call = next(self._calls)
            self._pending[call] = future
        try:
            with self._send_lock:
                self._conn.send((call, tensors, count))
        except OSError as exc:  # the child is gone: a broken pipe
            raise ModelProcessError(self._ended()) from exc
        return future

    def alive(self) -> bool:
        """False once the child has ended (a model that failed to load, a crash)."""
        return not self._closed and self._process.poll() is None

    def close(self) -> None:
        """End the child (it would end with this process anyway)."""
        # Closing our end would not wake the reader thread blocked on it, nor end the
        # child: ask the child to go, and its end closing ends the reader.
        try:
            with self._send_lock:
                self._conn.send(None)
        except OSError:
            pass  # already gone
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reader.join(10)
        self._conn.close()

    def _read(self) -> None:
        while True:
            try:
                kind, call, payload = self._conn.recv()
            except (EOFError, OSError):
                break
            if call is None:
                (self._loaded.set_result if kind == "done" else self._loaded.set_exception)(payload)
                continue
            with self._pending_lock:
                future = self._pending.pop(call)
            if kind == "done":
                future.set_result(payload)
            else:
                future.set_exception(payload)
        with self._pending_lock:
            self._closed = True
            pending, self._pending = list(self._pending.values()), {}
        error = ModelProcessError(self._ended())
        if not self._loaded.done():
            self._loaded.set_exception(error)
        for future in pending:
            future.set_exception(error)

    def _ended(self) -> str:
        try:
            code = self._process.wait(1)
        except subprocess.TimeoutExpired:
            code = None
        return f"the model's process ended (exit code {code}) before it answered"


_shared: dict[tuple[str, str], ModelProcess] = {}
_shared_lock = threading.Lock()


def shared(export_path: str, signatures: Sequence[str], threads: int | None = None) -> ModelProcess:
    """This process's model process for ``export_path`` and the first of ``signatures``
    it has, started on first use."""
    key = (export_path, signatures[0])
    with _shared_lock:
        process = _shared.pop(key, None)
        if process is None or not process.alive():
            process = ModelProcess(export_path, signatures, threads or default_threads())
        _shared[key] = process  # the most recently used last
        _close_beyond(KEEP)
        return process


# Model processes kept by a process that runs several jobs (a test session, a notebook): a
# job uses one, and each holds a loaded TensorFlow (about 0.5 GB).
KEEP = 2


def _close_beyond(keep: int) -> None:
    processes = list(dict.fromkeys(_shared.values()))
    for old in processes[: max(0, len(processes) - keep)]:
        for key in [k for k, v in _shared.items() if v is old]:
            del _shared[key]
        old.close()


def register(process: ModelProcess) -> None:
    """Make ``process`` the one :func:`shared` gives for the signature it loaded."""
    info = process.info
    with _shared_lock:
        _shared[(info.export_path, info.signature_name)] = process


# --- the child ---------------------------------------------------------------------------


def serve(conn: Any, export_path: str, signatures: tuple[str, ...], threads: int) -> None:
    """The child's main: load the model, then answer batches until the pipe closes."""
    try:
        model = _load_first(export_path, signatures)
    except Exception as exc:
        conn.send(("failed", None, _portable(exc)))
        return
    conn.send(("done", None, model.info))
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="predict")
    send_lock = threading.Lock()

    def answer(call: int, tensors: dict[str, np.ndarray], count: int) -> None:
        try:
            message = ("done", call, predict(model, tensors, count))
        except Exception as exc:
            message = ("failed", call, _portable(exc))
        with send_lock:
            conn.send(message)

    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            request = None  # the job has ended
        if request is None:
            os._exit(0)  # the model's threads need no teardown
        call, tensors, count = request
        pool.submit(answer, call, tensors, count)


def _load_first(export_path: str, signatures: tuple[str, ...]) -> Any:
    from batch.model import load_model

    for name in signatures[:-1]:
        try:
            return load_model(export_path, name)
        except ModelLoadError as exc:
            if "has no signature" not in str(exc):
                raise
    return load_model(export_path, signatures[-1])


def predict(model: Any, tensors: dict[str, np.ndarray], count: int) -> Outcome:
    """One batch of ``count`` records on a loaded model -> its :data:`Outcome`."""
    from batch import batches
    from batch.isolation import RerunCount, predict_isolating

    records = batches.Batch([b""] * count, tensors)
    reruns = RerunCount()
    start = time.perf_counter()
    outputs = predict_isolating(model, records, reruns)
    millis = int((time.perf_counter() - start) * 1000)
    if isinstance(outputs, dict):
        return batches.output_columns(outputs), millis, reruns.value
    return outputs, millis, reruns.value


def _portable(exc: Exception) -> Exception:
    """``exc`` if it survives pickling (ModelLoadError does), else a RuntimeError of its text."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    fd, export, names, count = sys.argv[1:5]
    serve(Connection(int(fd)), export, tuple(json.loads(names)), int(count))
