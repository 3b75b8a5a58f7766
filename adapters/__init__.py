"""The stores, behind one small interface: `Adapter` (installed as ``isr.adapters``).

A store keeps `Entry` objects under string keys, a tag index, the store-wide `Generation`
record and per-key fetch locks; it knows nothing of windows or decorators. Everything a
third-party store needs is exported here::

    from isr.adapters import Adapter, Entry, Generation, Mode, Policy, lifetime

``isr.adapters.memory.MemoryAdapter`` is the smallest complete example; the conformance
suite (``tests/test_runtime_*.py`` over the ``rt``/``srt`` fixtures) is what a store must
pass. The Redis, L1 and disk stores live in ``isr.adapters.redis``, ``isr.adapters.l1`` and
``isr.adapters.disk`` (the Redis ones need the ``isr-runtime[redis]`` extra).
"""

from isr._entry import Entry, Generation, Mode, Policy

from .base import Adapter, GenerationCache, lifetime
from .memory import MemoryAdapter

__all__ = [
    "Adapter",
    "Entry",
    "Generation",
    "GenerationCache",
    "MemoryAdapter",
    "Mode",
    "Policy",
    "lifetime",
]
