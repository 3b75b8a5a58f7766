"""The sync driver, generated from ``isr._async`` by ``python -m tests.unasync``."""
