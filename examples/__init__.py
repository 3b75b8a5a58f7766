"""Runnable examples: ``demo.py``, ``blog/`` (the main demo), ``replicas/``."""
