"""Starting TensorFlow quietly, and the machine facts that need it (GPUs, mixed precision).

Importing TensorFlow and its first device scan print C++ log lines straight to stderr: on a
CPU-only machine ``cuInit`` failures (``E`` lines) and CUDA-stub notices. Vertex AI shows
every stderr line as ERROR, so :func:`start` captures file descriptor 2 while TensorFlow
starts and passes each line on through Python logging instead: the known probe noise at
DEBUG, anything else at WARNING.

It also keeps Keras from importing optional extras the trainer does not use while it
starts (see :data:`_OPTIONAL_EXTRAS`).

Example:
    >>> gpus = start()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator

log = logging.getLogger("trainer.tensorflow")

# Start-up lines that only say there is no GPU, or how TensorFlow was built.
_PROBE_NOISE = re.compile(
    r"cuInit|cuda_platform|cudart_stub|cuda drivers|cuda_executor|cuda_diagnostics|"
    r"absl::InitializeLog|oneDNN custom operations|cpu_feature_guard|"
    r"optimized to use available CPU instructions|rebuild TensorFlow with the appropriate|"
    r"TF-TRT Warning|Unable to register cu(DNN|FFT|BLAS) factory|computation placer"
)
_state: dict[str, int] = {}

# Optional extras that Keras and TensorFlow import when present, each guarded by
# ``try: import ... except ImportError``: scikit-learn for keras.wrappers, pandas for
# DataFrame inputs to fit(), matplotlib for keras.visualization. The trainer feeds tf.data
# and uses none of those Keras features; importing them costs about 1.2 s of CPU (of 3.2 s)
# at every start. They stay importable afterwards for code that wants them.
_OPTIONAL_EXTRAS = ("sklearn", "pandas", "matplotlib")


@contextlib.contextmanager
def _without_optional_extras() -> Iterator[None]:
    hidden = [name for name in _OPTIONAL_EXTRAS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # makes ``import name`` raise ImportError
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


def _logs_to_stderr() -> bool:
    """Whether our own log lines go to stderr (text format): then capturing would loop them."""
    for handler in logging.getLogger().handlers:
        stream = getattr(handler, "stream", None)
        try:
            if stream is not None and stream.fileno() == 2:
                return True
        except (AttributeError, OSError, ValueError):
            continue
    return False


@contextlib.contextmanager
def _stderr_to_log() -> Iterator[None]:
    if _logs_to_stderr():
        yield  # text logs on stderr: TensorFlow's lines sit among them as they always did
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for raw in capture.read().decode("utf-8", "replace").splitlines():
                line = raw.rstrip()
                if line:
                    level = logging.DEBUG if _PROBE_NOISE.search(line) else logging.WARNING
                    log.log(level, "%s", line)


def start() -> int:
    """Import TensorFlow and scan its devices with stderr captured; returns the GPU count."""
    if "gpus" not in _state:
        # INFO lines after start-up (e.g. per-dataset notices) also go to stderr otherwise;
        # warnings and errors still show. An explicit setting wins.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
        with _stderr_to_log(), _without_optional_extras():
            import keras  # noqa: F401 (with TensorFlow, while the extras are hidden)
            import tensorflow as tf

            _state["gpus"] = len(tf.config.list_physical_devices("GPU"))
    return _state["gpus"]


def set_mixed_precision(enabled: bool) -> str:
    """Use ``mixed_float16`` if ``enabled`` and a GPU is present; returns the policy set.

    On a CPU mixed_float16 is slower than float32, so there it warns and keeps float32.
    """
    if not enabled:
        return "float32"
    import keras

    if start() == 0:
        log.warning(
            "--mixed-precision: this machine has no GPU; mixed_float16 only pays off on GPUs, "
            "so training stays in float32"
        )
        keras.mixed_precision.set_global_policy("float32")
        return "float32"
    keras.mixed_precision.set_global_policy("mixed_float16")
    log.info("mixed precision: mixed_float16 on %d GPU(s)", start())
    return "mixed_float16"
