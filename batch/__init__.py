"""Batch prediction: score JSON lines or TFRecords from Cloud Storage with a SavedModel.

A Beam pipeline (local runner or Dataflow) that replaces the retired AI Platform batch
prediction job; the entry point is ``python -m batch.predict``.
"""
