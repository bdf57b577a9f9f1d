"""Run Jupyter notebooks unattended with Papermill: from and to ``gs://``, with status and limits.

Commands (``python -m executor COMMAND --help`` for each):

- ``run INPUT OUTPUT``: execute one notebook with papermill-style parameters into a local
  file, mirror it to OUTPUT at most once per ``--mirror-interval`` seconds, and always upload
  the final notebook, an HTML rendering and ``OUTPUT.status.json``.
- ``batch INPUT OUTPUT_PREFIX --runs FILE`` (alias ``sweep``, :mod:`executor.sweep`): many
  parameter sets (a list, a grid or a CSV) with N kernels in parallel, and a metrics table
  plus a summary plot; ``--backend vertex`` runs each run as a Vertex AI CustomJob
  (:mod:`executor.vertex`).
- ``vm-run``: the image's default command on a VM; reads the run from instance metadata,
  runs it, then deletes its own VM (unless ``stay_alive``).
- ``launch INPUT OUTPUT``: create such a GPU VM (optionally Spot) through the Compute Engine
  API (:mod:`executor.compute_engine`; the VM side: :mod:`executor.compute_engine_metadata`).
- ``status RUN_OUTPUT`` / ``wait RUN_OUTPUT``: a run's state from its status file; ``wait``
  exits with the run's exit code (:mod:`executor.follow`).

Every option of a run is a field of :class:`executor.options.RunOptions`.

Exit codes (also in :mod:`executor.exitcodes`): 0 succeeded, 2 bad arguments, 3-7 unreadable
input, 8 unreadable VM metadata, 10 a cell failed, 11 timed out, 12 the kernel died, 13 an
upload failed, 14 the VM could not delete itself, 15 the Spot VM was preempted, 16 ``wait``
timed out, 130 interrupted.

Example::

    python -m executor run gs://bkt/in.ipynb 'gs://bkt/out/{run_id}/result.ipynb' \\
        -p epochs 40 -f gs://bkt/params.yaml --job-timeout 3600
"""

# The storage layer configures gcsfs before anything (papermill, scrapbook) imports it.
from jobcommon import __version__, storage  # noqa: F401

__all__ = ["__version__"]
