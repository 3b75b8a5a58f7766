"""A bounded memory L1 in front of Redis, kept coherent across instances by a pub/sub bus.

``isr.ISR("redis://…", l1=True)`` (or ``l1=50_000`` for the bound). Reads are served from
the L1 by the decorator's hot path, as from the memory store; what the L1 lacks or cannot
serve comes from Redis and is kept in the L1. Writes go to both. Every invalidation (key,
tag or everything, in every mode) is written to Redis as without an L1, then published on
the bus; the other instances drop what they hold for it, so their next read goes to Redis
and sees the mark. What a caller can expect:

- Propagation: an invalidation reaches the other instances' L1 within a pub/sub round trip
  (about a millisecond on a LAN; measured in ``benchmarks/l1.py``).
- Lost messages (a dropped subscription, a Redis restart, ``CLIENT KILL TYPE pubsub``): the
  bus notices from its epoch counter, immediately on reconnecting and otherwise within
  ``epoch_poll`` seconds (1 s by default), and drops the whole L1. That is the bound on how
  long an instance may serve a value invalidated elsewhere: seconds, never a TTL.
- Redis down: each instance keeps serving from its L1 (fresh values as HIT, stale ones as
  STALE while the origin is asked, old ones as STALE-IF-ERROR when it fails); invalidations
  made on an instance still apply to its own L1; fetch locks count as taken, so instances
  may each call the origin once per key. Once Redis is back, the bus resubscribes and the
  instance resyncs (drops its L1) since it cannot know what it missed.

The code: the state and the coherence (`L1Base`, ``_l1_base``); the store operations,
written once, async, in ``_async/l1.py`` and generated for sync code in ``_sync/l1.py``.
"""

from __future__ import annotations

from ._async.l1 import AsyncL1Ops
from ._sync.l1 import SyncL1Ops

__all__ = ["L1Adapter"]


class L1Adapter(AsyncL1Ops, SyncL1Ops):
    """Memory L1 over a `RedisAdapter`, with a `RedisBus` between instances (see the module
    docstring)."""
