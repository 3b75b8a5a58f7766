"""Tests written once for async code: ``tests._sync`` is generated from them."""
