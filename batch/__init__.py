"""Batch prediction: score JSON lines, CSV, TFRecords or listed files with a SavedModel.

A Beam pipeline (local runner or Dataflow) honouring the AI Platform and Vertex AI batch
prediction job bodies; the entry point is ``python -m batch.predict``. Dataflow glue lives
in :mod:`batch.dataflow`, Beam's GCS settings in :mod:`batch.beam_gcs`, the job's settings in
:mod:`batch.options`.
"""
