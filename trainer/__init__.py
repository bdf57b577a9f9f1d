"""The Vertex AI / AI Platform custom-job trainer (``python -m trainer.task``).

Modules:

- :mod:`trainer.task`: the training run, as named steps.
- :mod:`trainer.options`: every flag, default and check, and the environment read once.
- :mod:`trainer.data`: numpy/CSV to TFRecord conversion, schema, staging and ``tf.data`` input.
- :mod:`trainer.convert`: the converter's command line.
- :mod:`trainer.models`: the model, optimizer and task registries, ``--model-module`` models.
- :mod:`trainer.export`: the SavedModel signature contract and the atomic export.
- :mod:`trainer.checkpoints`: per-epoch backups synced to a checkpoint directory.
- :mod:`trainer.tuning` / :mod:`trainer.tuners`: the in-image keras-tuner search.
- :mod:`trainer.reports`: epoch log lines, TensorBoard scalars, the PNG of the curves.
- :mod:`trainer.distribute`: the ``tf.distribute`` strategy.
- :mod:`trainer.tf_runtime`: starting TensorFlow quietly, GPUs, mixed precision.

Vertex AI glue:

- :mod:`trainer.vertex_cluster`: ``CLUSTER_SPEC`` / ``TF_CONFIG`` and this replica's role.
- :mod:`trainer.vertex_hypertune`: the tuning-service metric file.
- :mod:`trainer.vertex_submit`: CustomJob / HyperparameterTuningJob requests
  (``python -m trainer.vertex_submit``).
"""
