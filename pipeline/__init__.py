"""Apache Beam job: raw text -> sharded Arrow BERT pre-training examples.

This package's top level imports nothing heavy, so the trainer can import the
pure modules (``pipeline.contract``, ``pipeline.masking``) without Beam.
"""
