"""What `isr.ISR.explain` reads of the store for one key, without changing it.

Written once: ``isr/_sync/explain.py`` is generated from this file by ``python -m
tests.unasync``; edit this one, then regenerate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from isr._entry import Generation
from isr._explain import Facts
from isr._synchronization import async_usable

if TYPE_CHECKING:
    from isr.adapters.base import Adapter

__all__ = ["read_facts"]


async def read_facts(store: Adapter, key: str, clock: Callable[[], float]) -> Facts:
    """The store's entry, generation record and fetch lock for ``key``, and this process's
    own copy of it (an L1's, marks it has recorded applied), all read without changing
    what any read will find: an L1 reads its shared store and leaves its copy as it was."""
    has_l1 = store.shared and store.local
    local = None
    local_generation = Generation()
    if has_l1:
        peeked = store.peek(key)
        if peeked is not None:
            local = store.revive(key, peeked)
        local_generation = store.generation()
    reader = async_usable(store)
    entry = await reader.ainspect(key)
    generation = await reader.ageneration()
    locked = await reader.afetch_locked(key)
    return Facts(
        key=key,
        local=local,
        local_generation=local_generation,
        has_l1=has_l1,
        entry=entry,
        generation=generation,
        locked=locked,
        now=clock(),
        wall=time.time(),
    )
