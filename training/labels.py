"""The label value every loss here ignores, in its own module so that code which builds labels
without torch (``training.finetune.conll``) can import it without importing the model."""

IGNORE_INDEX = -100
"""A position with nothing to predict: the padding slots of ``masked_lm_labels`` (pre-training), the
special tokens and the pieces after a word's first (token classification, where decoding skips them
too). Torch's cross-entropy default and transformers' convention alike."""
