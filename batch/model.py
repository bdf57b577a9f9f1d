"""Find, stage and load the SavedModel a batch job serves, and describe its signature.

TensorFlow cannot read ``gs://`` here (its own GCS filesystem ignores the emulator and
needs credentials of its own), so a model in Cloud Storage is copied to local disk through
:mod:`jobcommon.storage` first, once per process.

Serving needs TensorFlow but not Keras: :func:`import_tensorflow` imports TensorFlow without
the Keras that ``import tensorflow`` would otherwise load eagerly (1.3-1.4 s and scikit-learn
on 2 cores; a SavedModel's signatures are plain TF functions).

Example:
    >>> model = load_model("gs://bucket/job/keras_export", "serving_default")  # doctest: +SKIP
    >>> model({"pixels": np.zeros((2, 64), np.float32)})["class_id"]  # doctest: +SKIP
    array([3, 3])
    >>> InputSpec("pixels", "float32", (64,)).describe()
    'pixels: float32[64]'
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jobcommon import exports, storage
from jobcommon.errors import BadInputError, JobError, first_line
from jobcommon.imports import without
from jobcommon.schema import SCHEMA_FILE, Schema

log = logging.getLogger(__name__)


class ModelLoadError(BadInputError):
    """The model named by ``--model-dir`` cannot be loaded or lacks the signature asked for."""


@dataclass(frozen=True)
class InputSpec:
    """One signature input: ``shape`` excludes the batch dimension; None = any size."""

    name: str
    dtype: str  # numpy dtype name: float32, int64, ..., or "string" for tf.string
    shape: tuple[int | None, ...]

    @property
    def is_string(self) -> bool:
        return self.dtype == "string"

    def numpy_dtype(self) -> Any:
        return object if self.is_string else np.dtype(self.dtype)

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


@dataclass(frozen=True)
class SignatureInfo:
    """What the pipeline needs to know about a signature, without holding TensorFlow objects."""

    export_path: str
    signature_name: str
    input_specs: dict[str, InputSpec]
    output_names: tuple[str, ...]
    schema: Schema | None
    # Input name (as instances spell it: the schema's column name) -> signature argument,
    # where they differ (a column ``mean radius`` is the argument ``mean_radius``).
    arg_names: dict[str, str] = field(default_factory=dict)

    @property
    def takes_examples(self) -> bool:
        """True for a tf.Example signature: one string input of serialized protos."""
        return (
            len(self.input_specs) == 1
            and next(iter(self.input_specs.values())).is_string
            and (
                self.signature_name == exports.TF_EXAMPLE_SIGNATURE
                or next(iter(self.input_specs)) == "examples"
            )
        )


class LoadedModel:
    """A loaded SavedModel and one of its signatures, callable on a dict of numpy batches."""

    def __init__(self, loaded: Any, info: SignatureInfo) -> None:
        # The loaded object owns the variables the signature captures: keep it alive.
        self._loaded = loaded
        self._fn = loaded.signatures[info.signature_name]
        self.info = info

    @property
    def input_specs(self) -> dict[str, InputSpec]:
        return self.info.input_specs

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tf = import_tensorflow()
        tensors = {}
        for name, spec in self.info.input_specs.items():
            value = batch[name]
            arg = self.info.arg_names.get(name, name)
            tensors[arg] = tf.constant(value, dtype=tf.string if spec.is_string else spec.dtype)
        outputs = self._fn(**tensors)
        return {name: t.numpy() for name, t in outputs.items()}


def resolve_export(model_dir: str) -> str:
    """The SavedModel to serve: ``model_dir`` itself or its newest complete export."""
    storage.validate(model_dir)
    try:
        return exports.latest_export(model_dir)
    except JobError as exc:
        raise ModelLoadError(f"cannot use --model-dir {model_dir}: {exc}") from exc


_staged: dict[str, str] = {}
_stage_lock = threading.Lock()


def stage_locally(export_path: str) -> str:
    """A local directory holding the SavedModel at ``export_path`` (copied once per process)."""
    if not storage.is_gcs(export_path):
        return export_path
    with _stage_lock:
        if export_path in _staged and os.path.isdir(_staged[export_path]):
            return _staged[export_path]
        digest = hashlib.sha1(export_path.encode()).hexdigest()[:12]
        local = tempfile.mkdtemp(prefix=f"model-{digest}-")
        storage.copy_tree(export_path, local)
        _staged[export_path] = local
        return local


def _input_specs(fn: Any) -> dict[str, InputSpec]:
    _, kwargs = fn.structured_input_signature
    specs = {}
    for name, spec in kwargs.items():
        dtype = "string" if spec.dtype.name == "string" else spec.dtype.as_numpy_dtype.__name__
        specs[name] = InputSpec(name, dtype, tuple(spec.shape.as_list()[1:]))
    return specs


def _by_column_name(
    specs: dict[str, InputSpec], schema: Schema | None
) -> tuple[dict[str, InputSpec], dict[str, str]]:
    """The signature's inputs keyed by the schema's column names, and the argument of each.

    A trainer export's signature arguments are safe TensorFlow names made from the columns;
    instances use the columns' own names, which its schema.json keeps.
    """
    if schema is None:
        return specs, {}
    renamed = {f.input_name: f.name for f in schema.features if f.input_name in specs}
    out, args = {}, {}
    for arg, spec in specs.items():
        name = renamed.get(arg, arg)
        out[name] = InputSpec(name, spec.dtype, spec.shape)
        if name != arg:
            args[name] = arg
    return out, args


_models: dict[tuple[str, str], LoadedModel] = {}
_models_lock = threading.Lock()


def load_model(export_path: str, signature_name: str) -> LoadedModel:
    """Stage and load ``export_path`` (a SavedModel dir), raising ModelLoadError on failure.

    Loaded once per process: the command's up-front check and the pipeline's workers in
    the same process share one copy.
    """
    with _models_lock:
        key = (export_path, signature_name)
        if key not in _models:
            _models[key] = _load_model(export_path, signature_name)
        return _models[key]


_tf_lock = threading.Lock()


def import_tensorflow() -> Any:
    """``tensorflow``, imported without Keras when it is not imported yet.

    ``import tensorflow`` imports ``keras.src.optimizers`` eagerly when Keras is installed
    (so that Keras optimizers register themselves for SavedModels that hold them) and
    carries on when that import fails. A served signature never needs them, so Keras is
    hidden for the length of the import; it can still be imported normally afterwards.
    Measured on 2 cores: ``import tensorflow`` 1.6 s instead of 3.0 s.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with _tf_lock:
        if "tensorflow" in sys.modules or "keras" in sys.modules:
            import tensorflow as tf

            return tf
        with without("keras", "tf_keras", "scipy"):
            import tensorflow as tf
        return tf


def one_thread_per_call() -> None:
    """Run each signature call on its calling thread alone (TF's intra-op pool of 1 thread).

    A batch job runs several calls at once, one per model thread (see
    :func:`batch.model_process.default_threads`): its parallelism is across batches, not
    inside one. On 2 cores, the signature on batches of 64 from 3 threads took 6.7-7.1 us
    per record with one intra-op thread and 7.2-8.5 us with TF's default pool, and from
    one thread the same rate cost 1.1 cores instead of 1.5. ``TF_NUM_INTRAOP_THREADS``,
    when set, is left to decide.
    """
    tf = import_tensorflow()

    if os.environ.get("TF_NUM_INTRAOP_THREADS"):
        return
    # RuntimeError: TF already runs in this process (a notebook, a test that trained a
    # model), and its pool is fixed for the life of the process.
    with contextlib.suppress(RuntimeError):
        tf.config.threading.set_intra_op_parallelism_threads(1)


def _load_model(export_path: str, signature_name: str) -> LoadedModel:
    tf = import_tensorflow()

    one_thread_per_call()
    local = stage_locally(export_path)
    try:
        loaded = tf.saved_model.load(local)
    except Exception as exc:  # TF raises many kinds here; all mean "not a usable model"
        raise ModelLoadError(
            f"cannot load the SavedModel at {export_path}: {first_line(exc)} (pass a directory "
            "written by the trainer's export, or by model.export() / tf.saved_model.save)"
        ) from exc
    names = sorted(loaded.signatures.keys())
    if signature_name not in loaded.signatures:
        raise ModelLoadError(
            f"the SavedModel at {export_path} has no signature {signature_name!r}; "
            f"it has {names}: pass one of them with --signature-name"
        )
    fn = loaded.signatures[signature_name]
    schema = None
    schema_path = os.path.join(local, SCHEMA_FILE)
    if os.path.exists(schema_path):
        schema = Schema.load(schema_path)
    specs, arg_names = _by_column_name(_input_specs(fn), schema)
    info = SignatureInfo(
        export_path=export_path,
        signature_name=signature_name,
        input_specs=specs,
        output_names=tuple(sorted(fn.structured_outputs.keys())),
        schema=schema,
        arg_names=arg_names,
    )
    return LoadedModel(loaded, info)
