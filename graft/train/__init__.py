"""Training loop, settings and evaluation."""
