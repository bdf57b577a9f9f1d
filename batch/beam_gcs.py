"""Beam's own Cloud Storage client: the one place its settings are made.

Batch input (``fileio`` matching, every input file read) and Dataflow staging go through
Beam's ``gs://`` filesystem, not :mod:`jobcommon.storage`: Beam's IO needs its own
filesystem, and on Dataflow its workers have nothing else. Outputs, the model and the job
spec go through :mod:`jobcommon.storage`.

Against a GCS emulator (``STORAGE_EMULATOR_HOST``, honoured by Beam's client itself) one
more setting is needed: Beam looks for Google default credentials with five retries
(about 22 s, logging tracebacks) in every process before it falls back to anonymous
access, and its ``--no_auth`` option is not read by that client. Beam caches the outcome
per process, so :func:`configure` records "no credentials" in that cache up front. It runs
in the launcher and in the ``setup`` of every step that reads through Beam, so it holds in
each worker process too (local ``multi_processing`` workers are fresh interpreters). Against
real GCS it does nothing. ``_Credentials`` is Beam's private API; if it moves, this does
nothing and Beam merely waits as before.

Example:
    >>> import os
    >>> emulator = os.environ.pop("STORAGE_EMULATOR_HOST", None)
    >>> configure()  # against real GCS: nothing to do
    False
    >>> os.environ.update({} if emulator is None else {"STORAGE_EMULATOR_HOST": emulator})
"""

from __future__ import annotations

import os


def configure() -> bool:
    """Make Beam's GCS client go anonymous at once against an emulator; True if it did."""
    if not os.environ.get("STORAGE_EMULATOR_HOST"):
        return False
    try:
        from apache_beam.internal.gcp import auth
    except ImportError:
        return False
    credentials = getattr(auth, "_Credentials", None)
    lock = getattr(credentials, "_credentials_lock", None)
    if credentials is None or lock is None:
        return False
    with lock:
        if not credentials._credentials_init:
            credentials._credentials = None
            credentials._credentials_init = True
    return True
