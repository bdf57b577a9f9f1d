"""Exit codes of every ``python -m executor`` command, and the run states they stand for.

====  ====================================================================
code  meaning
====  ====================================================================
0     SUCCEEDED: every cell ran
2     bad arguments or parameters (unknown parameter, wrong type, bad path)
3-7   an input could not be read (not found, permission, credentials, ...)
8     (vm-run) the metadata server could not be read
10    FAILED: a cell raised an exception
11    TIMED_OUT: a cell ran past --execution-timeout or the run past --job-timeout
12    KERNEL_DIED: the kernel process died (crash, out of memory, os._exit)
13    UPLOAD_FAILED: an output could not be uploaded before --upload-deadline
14    SELF_DELETE_FAILED: (vm-run) the run succeeded but the VM could not delete itself
15    PREEMPTED: (vm-run) Compute Engine preempted the Spot VM; the notebook so far is saved
16    (wait) --timeout passed before the run reached a final state
130   interrupted (SIGINT/SIGTERM); the status file's exit_code says 130 too
====  ====================================================================
"""

from __future__ import annotations

SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
TIMED_OUT = "TIMED_OUT"
KERNEL_DIED = "KERNEL_DIED"
PREEMPTED = "PREEMPTED"
RUNNING = "RUNNING"
STATES = (SUCCEEDED, FAILED, TIMED_OUT, KERNEL_DIED, PREEMPTED)
FINAL_STATES = frozenset(STATES)

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_FAILED = 10
EXIT_TIMED_OUT = 11
EXIT_KERNEL_DIED = 12
EXIT_UPLOAD_FAILED = 13
EXIT_SELF_DELETE_FAILED = 14
EXIT_PREEMPTED = 15
EXIT_WAIT_TIMED_OUT = 16

EXIT_CODE_BY_STATE = {
    SUCCEEDED: EXIT_OK,
    FAILED: EXIT_FAILED,
    TIMED_OUT: EXIT_TIMED_OUT,
    KERNEL_DIED: EXIT_KERNEL_DIED,
    PREEMPTED: EXIT_PREEMPTED,
}

HELP_TEXT = """exit codes:
  0   SUCCEEDED        every cell ran
  2   usage            bad arguments, unknown or mistyped parameters, bad output template
  3-7 input            not found (3), permission denied (4), no credentials (5),
                       storage error (6), bad input (7)
  8   metadata         (vm-run) the metadata server could not be read
  10  FAILED           a cell raised an exception
  11  TIMED_OUT        a cell exceeded --execution-timeout or the run --job-timeout
  12  KERNEL_DIED      the kernel process died
  13  UPLOAD_FAILED    an output could not be uploaded before --upload-deadline
  14  SELF_DELETE_FAILED  (vm-run) the run succeeded but deleting the VM failed
  15  PREEMPTED        (vm-run) the Spot VM was preempted; the notebook so far is saved
  16  wait timed out   (wait) --timeout passed before the run reached a final state
  130 interrupted      SIGINT/SIGTERM (the status file says 130 too)"""
