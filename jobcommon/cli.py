"""Command-line plumbing shared by every entry point.

:func:`run` is the edge where a :class:`~jobcommon.errors.JobError` becomes one clear log
line and a non-zero exit code, instead of a traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from jobcommon.errors import JobError

log = logging.getLogger("jobcommon.cli")

EXIT_INTERRUPTED = 130


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Call ``main(argv)`` and turn what it raises into an exit code.

    Example:
        >>> raise SystemExit(run(main))  # doctest: +SKIP
    """
    try:
        return int(main(argv) or 0)
    except JobError as exc:
        _report(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _report("interrupted")
        return EXIT_INTERRUPTED


def _report(message: str) -> None:
    # Before logging is set up (argument errors) there is no handler: write the line plainly.
    if logging.getLogger().handlers:
        log.error(message)
    else:
        print(f"error: {message}", file=sys.stderr)
