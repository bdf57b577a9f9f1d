"""What the trainer, the batch predictor and the notebook executor all need.

- :mod:`jobcommon.storage`: the one layer that reads and writes local paths and ``gs://`` URIs.
- :mod:`jobcommon.errors`: the named errors every command turns into one clear line.
- :mod:`jobcommon.logs`: the one logging set-up (Cloud Logging JSON off a terminal).
- :mod:`jobcommon.localgcs`: an embedded GCS (fake-gcs-server) for tests and the demo.
- :mod:`jobcommon.cli`: the shared command-line plumbing.
"""

__version__ = "0.1.0"
