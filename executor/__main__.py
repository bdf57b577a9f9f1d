"""``python -m executor``: see :mod:`executor.cli`."""

import gc
import sys

from executor.cli import main
from jobcommon import cli

if __name__ == "__main__":
    code = cli.run(main)
    # Nothing is left to free: skip the half second the collector would spend on the
    # notebook libraries' objects while the interpreter shuts down.
    gc.freeze()
    sys.exit(code)
