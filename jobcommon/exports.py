"""Where exports live and how a reader finds the newest complete one.

The trainer writes each export to ``<job-dir>/keras_export/<UTC timestamp>/`` (a SavedModel
at the top, with ``model.keras``, ``schema.json`` and reports beside it) and writes
:data:`EXPORT_MARKER` last. A reader that takes :func:`latest_export` therefore never picks
an export whose upload is still under way or was cut short.
"""

from __future__ import annotations

from jobcommon import storage
from jobcommon.clock import utc_stamp
from jobcommon.errors import NotFoundError

EXPORT_MARKER = "_EXPORT_COMPLETE"
SAVED_MODEL_FILE = "saved_model.pb"
# The SavedModel signature that takes serialized tf.Example strings (input name "examples").
TF_EXAMPLE_SIGNATURE = "serving_tf_example"


def new_export_name() -> str:
    """A UTC timestamp that sorts in time order, e.g. ``20261127T171501Z``."""
    return utc_stamp()


def is_complete_export(path: str) -> bool:
    return storage.exists(storage.join(path, EXPORT_MARKER))


def latest_export(model_dir: str) -> str:
    """``model_dir`` itself if it is a SavedModel, else its newest complete timestamped child.

    A SavedModel named directly is accepted without a marker (it may come from elsewhere).
    """
    if storage.exists(storage.join(model_dir, SAVED_MODEL_FILE)):
        return model_dir.rstrip("/")
    children = [c for c in storage.list_dir(model_dir) if not c.rstrip("/").endswith(".partial")]
    for child in sorted(children, reverse=True):
        if storage.exists(storage.join(child, SAVED_MODEL_FILE)) and is_complete_export(child):
            return child.rstrip("/")
    raise NotFoundError(
        model_dir,
        "no SavedModel there and no complete export below it; pass a SavedModel directory "
        "or a trainer's keras_export/ directory",
    )
