"""Fixtures of the chaos suite: one fake-gcs-server behind a fault-injecting proxy."""

from __future__ import annotations

import pytest
from faultproxy import FaultyGCS, Rule


@pytest.fixture(scope="session")
def chaos_gcs(tmp_path_factory) -> FaultyGCS:
    gcs = FaultyGCS(str(tmp_path_factory.mktemp("chaos-gcs"))).start()
    yield gcs
    gcs.stop()


@pytest.fixture
def faulty_gcs(chaos_gcs):
    """``faulty_gcs(rules, seed)`` -> the FaultyGCS with those rules on, counters reset.

    Faults are switched off again when the test ends.
    """

    def configure(rules: list[Rule], seed: int = 0) -> FaultyGCS:
        chaos_gcs.proxy.configure(rules, seed)
        return chaos_gcs

    yield configure
    chaos_gcs.proxy.configure([], 0)
