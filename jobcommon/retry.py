"""Retrying transient failures, one way for every job (built on tenacity)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import tenacity

T = TypeVar("T")

log = logging.getLogger("jobcommon.retry")


def call_with_retries(
    fn: Callable[[], T],
    *,
    what: str,
    is_transient: Callable[[BaseException], bool],
    attempts: int | None = 5,
    deadline_seconds: float | None = None,
    first_wait: float = 0.5,
    max_wait: float = 8.0,
) -> T:
    """Call ``fn`` until it returns, retrying what ``is_transient`` accepts.

    Waits grow exponentially from ``first_wait`` to ``max_wait``. It stops after ``attempts``
    calls or once ``deadline_seconds`` have passed, whichever comes first, and re-raises the
    last exception (so callers translate one error type, not tenacity's).

    Example:
        >>> calls = []
        >>> def flaky():
        ...     calls.append(1)
        ...     if len(calls) < 3:
        ...         raise ConnectionError("reset")
        ...     return "ok"
        >>> call_with_retries(flaky, what="demo", is_transient=lambda e: True, first_wait=0)
        'ok'
        >>> len(calls)
        3
    """
    stops = []
    if attempts is not None:
        stops.append(tenacity.stop_after_attempt(attempts))
    if deadline_seconds is not None:
        stops.append(tenacity.stop_after_delay(deadline_seconds))
    retrying = tenacity.Retrying(
        stop=tenacity.stop_any(*stops) if stops else tenacity.stop_never,
        wait=tenacity.wait_exponential(multiplier=first_wait, max=max_wait),
        retry=tenacity.retry_if_exception(is_transient),
        reraise=True,
        before_sleep=lambda state: log.warning(
            "retrying %s after %s: %s",
            what,
            type(state.outcome.exception()).__name__,
            state.outcome.exception(),
        ),
    )
    return retrying(fn)
