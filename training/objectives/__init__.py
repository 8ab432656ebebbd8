"""One module per objective; see electra.py."""
