"""One module per architecture; see modern.py."""
