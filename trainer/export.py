"""The export a trainer run leaves behind, and the signatures it promises.

Layout (see :mod:`jobcommon.exports`): ``<job-dir>/keras_export/<UTC timestamp>/`` holding a
SavedModel at the top, plus ``model.keras``, ``schema.json`` and reports (``history.json``,
``metrics.json``, ``training.png``). The marker ``_EXPORT_COMPLETE`` is written last, so
:func:`jobcommon.exports.latest_export` never picks an export still being uploaded. On Vertex
AI (``AIP_MODEL_DIR``, no ``--job-dir``) the same files go straight into ``AIP_MODEL_DIR``,
where ``Model.upload``'s ``artifactUri`` points; there ``saved_model.pb`` and then the marker
are uploaded last.

Signature contract of the SavedModel (``tf.saved_model.load(path).signatures[name]``):

``serving_default``
    Inputs: one tensor per schema feature, named by the feature's ``input_name`` (its name
    made safe for TensorFlow: ``mean radius`` -> ``mean_radius``), with the feature's dtype
    and shape plus a leading batch dimension of any size. JSON instances keyed by the
    original names (``{"mean radius": 14.2}``) map onto it through the export's schema.json.
``serving_tf_example`` (:data:`jobcommon.exports.TF_EXAMPLE_SIGNATURE`)
    Input ``examples``: a 1-D string tensor of serialized ``tf.Example`` protos whose
    features follow the schema, keyed by the original names (fixed length; the label may be
    present and is ignored).

Outputs, the same for both signatures:

- classification: ``probabilities`` (float32 ``[batch, num_classes]``) and ``class_id``
  (int64 ``[batch]``, the most probable class);
- regression: ``predictions`` (float32 ``[batch]`` for one target, ``[batch, k]`` for k).

Example:
    >>> write_savedmodel(model, schema, "/tmp/sm")  # doctest: +SKIP
    >>> tf.saved_model.load("/tmp/sm").signatures["serving_default"](pixels=x)  # doctest: +SKIP
    {'probabilities': <tf.Tensor ...>, 'class_id': <tf.Tensor ...>}
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from jobcommon import exports, storage
from jobcommon.schema import SCHEMA_FILE, Feature, Schema
from trainer.models import model_inputs

log = logging.getLogger(__name__)

EXPORT_SUBDIR = "keras_export"
KERAS_FILE = "model.keras"
_TF_DTYPES = {"float32": tf.float32, "int64": tf.int64, "string": tf.string}


def tf_dtype(feature: Feature) -> tf.DType:
    return _TF_DTYPES[feature.dtype]


def feature_spec(schema: Schema, with_label: bool = False) -> dict[str, tf.io.FixedLenFeature]:
    """The ``tf.io.parse_example`` spec of a schema (fixed-length features)."""
    spec = {
        f.name: tf.io.FixedLenFeature(f.shape, tf_dtype(f), default_value=_missing(f))
        for f in schema.features
    }
    if with_label:
        spec[schema.label.name] = tf.io.FixedLenFeature(schema.label.shape, tf_dtype(schema.label))
    return spec


def _missing(f: Feature) -> float | None:
    """A scalar numeric feature with a training mean may be absent: NaN, imputed by the model."""
    return float("nan") if f.mean is not None and not f.shape and f.dtype == "float32" else None


def _outputs(raw: tf.Tensor, schema: Schema) -> dict[str, tf.Tensor]:
    raw = tf.cast(raw, tf.float32)
    if schema.task == "regression":
        if raw.shape.rank == 2 and raw.shape[-1] == 1:
            raw = tf.squeeze(raw, axis=-1)
        return {"predictions": raw}
    if raw.shape[-1] == 1:
        # A single sigmoid unit: expand to two class probabilities.
        raw = tf.concat([1.0 - raw, raw], axis=-1)
    return {"probabilities": raw, "class_id": tf.argmax(raw, axis=-1, output_type=tf.int64)}


def write_savedmodel(model: keras.Model, schema: Schema, local_dir: str) -> None:
    """Write ``model`` as a SavedModel with the two signatures above to a LOCAL directory.

    Example:
        >>> write_savedmodel(model, schema, "/tmp/export")  # doctest: +SKIP
    """
    if storage.is_gcs(local_dir):
        raise ValueError("write_savedmodel writes locally; use export_model for gs:// targets")
    archive = keras.export.ExportArchive()
    archive.track(model)
    # Signature arguments must be safe TensorFlow names: the schema's input names (batch
    # prediction maps the original column names onto them through the schema.json).
    named_specs = {
        f.input_name: tf.TensorSpec([None, *f.shape], tf_dtype(f), name=f.input_name)
        for f in schema.features
    }
    parse_spec = feature_spec(schema)

    def serve_features(features):
        return _outputs(model(model_inputs(model, schema, features), training=False), schema)

    def serve_examples(examples):
        parsed = tf.io.parse_example(examples, parse_spec)
        return serve_features({f.input_name: parsed[f.name] for f in schema.features})

    archive.add_endpoint(name="serving_default", fn=serve_features, input_signature=[named_specs])
    archive.add_endpoint(
        name=exports.TF_EXAMPLE_SIGNATURE,
        fn=serve_examples,
        input_signature=[tf.TensorSpec([None], tf.string, name="examples")],
    )
    archive.write_out(local_dir, verbose=False)


def stage_export(
    model: keras.Model,
    schema: Schema,
    local_dir: str,
    extras: dict[str, bytes | str] | None = None,
) -> str:
    """Write the whole export (SavedModel, ``model.keras``, schema, ``extras``) locally.

    In a multi-worker run every worker calls this (saving may need every replica), and only
    the chief uploads with :func:`upload_export`.
    """
    os.makedirs(local_dir, exist_ok=True)
    write_savedmodel(model, schema, local_dir)
    model.save(os.path.join(local_dir, KERAS_FILE))
    with open(os.path.join(local_dir, SCHEMA_FILE), "w") as f:
        f.write(schema.to_json())
    for filename, content in (extras or {}).items():
        mode = "wb" if isinstance(content, bytes) else "w"
        with open(os.path.join(local_dir, filename), mode) as f:
            f.write(content)
    return local_dir


def upload_export(local_dir: str, job_dir: str, at_root: bool = False) -> str:
    """Copy a staged export to ``<job_dir>/keras_export/<timestamp>/`` (or, ``at_root``,
    into ``job_dir`` itself), marker last."""
    if at_root:
        return _upload_at_root(local_dir, job_dir.rstrip("/"))
    base = storage.join(job_dir, EXPORT_SUBDIR)
    name = exports.new_export_name()
    # Two exports in the same second would share a name: never overwrite a finished one.
    while storage.exists(storage.join(base, name)):
        name = _next_name(name)
    target = storage.join(base, name)
    storage.copy_tree(local_dir, target)
    storage.write_text(storage.join(target, exports.EXPORT_MARKER), name + "\n")
    log.info("exported the model to %s", target)
    return target


def _upload_at_root(local_dir: str, target: str) -> str:
    # saved_model.pb after the variables and assets it refers to, the marker after it.
    pb = os.path.join(local_dir, exports.SAVED_MODEL_FILE)
    for path in storage.list_files(local_dir):
        if path != pb:
            storage.upload_file(path, storage.join(target, os.path.relpath(path, local_dir)))
    storage.upload_file(pb, storage.join(target, exports.SAVED_MODEL_FILE))
    storage.write_text(
        storage.join(target, exports.EXPORT_MARKER), exports.new_export_name() + "\n"
    )
    log.info("exported the model to %s", target)
    return target


def export_model(
    model: keras.Model,
    schema: Schema,
    job_dir: str,
    extras: dict[str, bytes | str] | None = None,
) -> str:
    """Stage a complete export locally, upload it below ``<job_dir>/keras_export/``.

    ``extras`` maps file names (e.g. ``history.json``) to contents written beside the model.
    Returns the export's path (``<job_dir>/keras_export/<timestamp>``); its marker is
    written after every other file has landed.

    Example:
        >>> export_model(model, schema, "gs://b/job", {"metrics.json": "{}"})  # doctest: +SKIP
        'gs://b/job/keras_export/20261127T171501Z'
    """
    staging = tempfile.mkdtemp(prefix="export-")
    try:
        stage_export(model, schema, staging, extras)
        return upload_export(staging, job_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _next_name(name: str) -> str:
    stem, _, n = name.partition("-")
    return f"{stem}-{int(n or 0) + 1}"
