"""Runnable examples: ``demo.py``, ``blog/`` (the README's main demo), ``replicas/``."""
