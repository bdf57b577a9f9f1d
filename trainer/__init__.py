"""The Vertex AI / AI Platform custom-job trainer (``python -m trainer.task``).

Modules:

- :mod:`trainer.task`: the command line and the training run.
- :mod:`trainer.data`: numpy/CSV to TFRecord conversion, schema, staging and ``tf.data`` input.
- :mod:`trainer.convert`: the converter's command line.
- :mod:`trainer.models`: the built-in model families and ``--model-module`` loading.
- :mod:`trainer.export`: the SavedModel signature contract and the atomic export.
- :mod:`trainer.checkpoints`: per-epoch backups synced to a checkpoint directory.
- :mod:`trainer.hypertune`: the tuning-service metric file.
- :mod:`trainer.tuning`: the in-image keras-tuner search.
- :mod:`trainer.reports`: epoch log lines, TensorBoard scalars, the PNG of the curves.
- :mod:`trainer.distribute`: ``TF_CONFIG`` / ``CLUSTER_SPEC`` and the strategy.
- :mod:`trainer.submit`: Vertex AI CustomJob / HyperparameterTuningJob requests.
"""
