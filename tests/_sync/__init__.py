"""Tests generated from ``tests._async`` by ``python -m tests.unasync``: the sync driver gets
the same tests as the async one."""
