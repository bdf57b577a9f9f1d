"""Run Jupyter notebooks unattended with Papermill: from and to ``gs://``, with status and limits.

Commands (``python -m executor COMMAND --help`` for each):

- ``run INPUT OUTPUT``: execute one notebook with papermill-style parameters into a local
  file, mirror it to OUTPUT at most once per ``--mirror-interval`` seconds, and always upload
  the final notebook, an HTML rendering and ``OUTPUT.status.json``.
- ``batch INPUT OUTPUT_PREFIX --runs FILE`` (alias ``sweep``, :mod:`executor.sweep`): many
  parameter sets (a list, a grid or a CSV) with N kernels in parallel, and a metrics table
  plus a summary plot.
- ``vm-run``: the image's default command on a VM; reads the run from instance metadata,
  runs it, then deletes its own VM (unless ``stay_alive``).
- ``launch INPUT OUTPUT``: create such a GPU VM through the Compute Engine API.

Every option of a run is a field of :class:`executor.options.RunOptions`.

Exit codes (also in :mod:`executor.exitcodes`): 0 succeeded, 2 bad arguments, 3-7 unreadable
input, 8 unreadable VM metadata, 10 a cell failed, 11 timed out, 12 the kernel died, 13 an
upload failed, 14 the VM could not delete itself, 130 interrupted.

Example::

    python -m executor run gs://bkt/in.ipynb 'gs://bkt/out/{run_id}/result.ipynb' \\
        -p epochs 40 -f gs://bkt/params.yaml --job-timeout 3600
"""

# The storage layer configures gcsfs before anything (papermill, scrapbook) imports it.
from jobcommon import __version__, storage  # noqa: F401

__all__ = ["__version__"]
