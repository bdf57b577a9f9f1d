"""UTC timestamps as every job names things with them: sortable, compact, unambiguous."""

from __future__ import annotations

import time
import uuid


def utc_stamp() -> str:
    """The current UTC time as ``YYYYMMDDTHHMMSSZ``, which sorts in time order.

    Example:
        >>> len(utc_stamp()), utc_stamp().endswith("Z")
        (16, True)
    """
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def unique_stamp() -> str:
    """:func:`utc_stamp` plus six random hex digits, for names two processes may pick at once.

    Example:
        >>> len(unique_stamp())
        23
    """
    return f"{utc_stamp()}-{uuid.uuid4().hex[:6]}"
