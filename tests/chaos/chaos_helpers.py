"""Shared settings of the chaos suite."""

from __future__ import annotations

import os

# Three seeds by default; CHAOS_SEEDS=4,5,6 reruns the suite with other fault patterns.
SEEDS = [int(s) for s in os.environ.get("CHAOS_SEEDS", "1,2,3").split(",") if s.strip()]
# The share of GCS requests that fail in the transient-fault tests.
RATE = 0.2
