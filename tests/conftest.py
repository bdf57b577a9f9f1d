"""Shared fixtures: a live fake-gcs-server for the whole session, a fresh bucket per test."""

from __future__ import annotations

import os
import uuid

import pytest

from jobcommon.localgcs import LocalGCS

# Tests run on 2 shared cores; keep TensorFlow from spawning a thread pool per core per op.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "2")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2")


@pytest.fixture(scope="session")
def gcs(tmp_path_factory) -> LocalGCS:
    """A fake-gcs-server on loopback; ``STORAGE_EMULATOR_HOST`` points at it for the session."""
    server = LocalGCS(str(tmp_path_factory.mktemp("gcs-data")), set_env=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def bucket(gcs: LocalGCS) -> str:
    """A new empty bucket on the session's server, as ``gs://NAME``."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    gcs.create_bucket(name)
    return f"gs://{name}"


@pytest.fixture
def gcs_env(gcs: LocalGCS) -> dict[str, str]:
    """Environment for a child process (a CLI under test) that talks to the fake server."""
    env = gcs.env()
    env.setdefault("LOG_FORMAT", "json")
    return env


def pytest_ignore_collect(collection_path, config):
    """``make test`` collects doctests (``--doctest-modules``) over tests/ too; a conftest.py
    is loaded by pytest as a plugin anyway, and collecting it again as a module clashes with
    the other conftest.py of the same basename (tests/chaos/)."""
    if config.option.doctestmodules and collection_path.name == "conftest.py":
        return True
    return None


def pytest_collection_modifyitems(config, items):
    """Leave out docstrings whose every example is marked ``+SKIP``.

    Those examples show a call that needs a cloud project, a VM or a running job; they are
    documentation, and counting them as skipped tests would hide real skips.
    """
    import doctest

    from _pytest.doctest import DoctestItem

    def documentation_only(item) -> bool:
        examples = item.dtest.examples if isinstance(item, DoctestItem) else []
        return bool(examples) and all(ex.options.get(doctest.SKIP) for ex in examples)

    dropped = [item for item in items if documentation_only(item)]
    if dropped:
        items[:] = [item for item in items if not documentation_only(item)]
        config.hook.pytest_deselected(items=dropped)
