"""Batch prediction: score JSON lines or TFRecords from Cloud Storage with a SavedModel.

A Beam pipeline (local runner or Dataflow) that replaces the retired AI Platform batch
prediction job; the entry point is ``python -m batch.predict``.
"""

import os


def _anonymous_beam_gcs_for_emulator() -> None:
    """Against a GCS emulator, let Beam's gs:// IO go anonymous at once.

    Beam's GCS client looks for Google default credentials with five retries (about 24 s,
    logging tracebacks) in every process before it falls back to anonymous access, and its
    ``--no_auth`` option is not read by that client. Beam caches the outcome per process, so
    we record "no credentials" in that cache up front. Only with STORAGE_EMULATOR_HOST set:
    against real GCS nothing changes. ``_Credentials`` is Beam's private API; if it moves,
    this does nothing and Beam merely waits as before.
    """
    if not os.environ.get("STORAGE_EMULATOR_HOST"):
        return
    try:
        from apache_beam.internal.gcp import auth
    except ImportError:
        return
    credentials = getattr(auth, "_Credentials", None)
    lock = getattr(credentials, "_credentials_lock", None)
    if credentials is None or lock is None:
        return
    with lock:
        if not credentials._credentials_init:
            credentials._credentials = None
            credentials._credentials_init = True


_anonymous_beam_gcs_for_emulator()
