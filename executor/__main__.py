"""``python -m executor``: see :mod:`executor.cli`."""

from executor.cli import main
from jobcommon import cli

if __name__ == "__main__":
    raise SystemExit(cli.run(main))
