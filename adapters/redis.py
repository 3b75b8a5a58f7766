"""The shared store: Redis (or Valkey, which speaks the same protocol), one truth for every
process and host that uses the same server and namespace.

``redis://host:port/db`` or ``rediss://`` (TLS), options in the query string:

- ``timeout`` (s, default 0.25): how long one command may take; ``connect_timeout`` (s,
  default: ``timeout``) how long a connection may take. A slow or unreachable Redis costs a
  caller at most that long before it is answered from the origin instead.
- ``generation_poll`` (s, default 1): another process's ``invalidate_all`` is seen within it.
- ``breaker_threshold`` (default 3), ``breaker_cooldown`` (s, default 2): failures in a row
  that take Redis out of use, and for how long before one call probes it again.
- ``cluster=true``: Redis Cluster, through redis-py's ``RedisCluster`` clients. Every
  command this store sends names exactly one key (see the layout below); tested on a real
  three-node cluster (tests/test_redis_cluster.py).
- ``max_connections`` (default 100): the asyncio client's connections (per event loop).
  Past it a command waits (at most ``timeout``) for one to be free instead of failing. The
  sync client opens one per thread using it at once, as redis-py does.
- redis-py's own ``client_name`` and ``ssl_*`` options pass through.

Layout under the namespace's prefix ``ns`` (`isr.adapters.names.prefix`: the namespace itself
when it is a plain word, ``isr`` by default; no two namespaces and keys share a name),
standard commands only (no KEYS, no SCAN, no modules):

- ``{ns}:e:{key}``: the entry, as the codec's bytes (JSON by default), with an expiry at the
  end of its last window (ttl + swr + stale_if_error from the write). An entry with an
  unbounded window (``swr=None``, the classic ISR setting) has none: then the server's
  ``maxmemory`` with an eviction policy such as ``allkeys-lru`` is what bounds the memory.
- ``{ns}:v:{tag}``: the tag's invalidation record, a text record as the generation's
  (`isr.adapters.records.tag_mark`); an entry carries the number each of its tags' records
  had when it was written and obeys any invalidation of them since, when read (one MGET
  with the entry). So an invalidation of the tag is one write, whatever its entries.
- ``{ns}:t:{tag}``: a SET of the keys stored with that tag, for the count
  `invalidate_tag` returns (dropped by each invalidation of the tag: it starts over).
- ``{ns}:gen``: the invalidate-all record, a HASH (current, revalidate, expire, purge, and
  ``run@<host:port>``: the ``run_id`` of the server that holds it, so that a restart is
  recognised), changed by Lua scripts on that one key; read at most every
  ``generation_poll`` s. Its numbers are times (Redis's ``TIME`` in ms), so they never go
  back below an entry's after a restart (see the faults page of the docs).
- ``{ns}:l:{key}``: a fetch lock (``SET NX PX``; released by a compare-and-delete script).
- ``{ns}:i:key:{key}``, ``{ns}:i:tag:{tag}``: "<time> <mode>" of the latest (strongest)
  invalidation, kept for the runtime's lock TTL, so that a fetch another process started
  before it stores its value marked (see ``Adapter.note_invalidation``).
- ``{ns}:c:{name}``: a claim (``SET NX PX``; the webhook's replay guard, see
  ``Adapter.claim``); one Redis cannot answer is None, never a guess.
- ``{ns}:bus``, ``{ns}:epoch``: the invalidation bus's channel and its epoch counter (every
  invalidation is published there, numbered, whether or not this process has an L1: the
  others' L1s hear it; see ``isr.adapters.redis_bus``); ``{ns}:ack``: the channel an L1
  acknowledges each epoch it applied on.
- ``{ns}:n``: the registry of live instances, a HASH: ``r:{id}`` the instance's record
  (JSON, rewritten at every heartbeat, with the time it was written on the instance's
  clock), ``a:{id}`` the highest epoch it applied (never lowered). One key, so a heartbeat
  and a listing are one command each, in a Cluster too; readers delete the records of
  instances silent for ten heartbeats.
- ``{ns}:log``: the invalidation log, a STREAM capped at the runtime's ``log_size``
  (``XADD MAXLEN``, exact), one entry per invalidation (a JSON record in field ``r``);
  ``{ns}:logc``: the confirmations, a HASH by log id, pruned of ids the stream dropped.

In a Cluster no two keys need to share a slot: each command and script touches one key, and
the one write that touches several (an entry and its tag sets) is a non-transactional
pipeline (in a Cluster, whose pipelines may reorder across nodes, the entry is written first
and the tag sets after).

Outages never reach a reader: every call goes through a circuit breaker, and a failed or
refused call returns the safe answer (a read: missing; a lock: acquired, so the caller goes
to the origin; a write: skipped). An invalidation Redis cannot take raises
`isr.StoreUnavailable`: the runtime keeps it in its outbox and applies it when Redis
answers. Once Redis answers again it is used again, no restart.

The code: the plumbing (options, clients, breaker, record formats) is ``_redis_base``; the
store operations are written once, async, in ``_async/redis.py`` and generated for sync
code in ``_sync/redis.py``. redis-py's asyncio client runs on asyncio only
(``asyncio_only``): on any other anyio backend (trio) a runtime runs the store's generated
sync operations in worker threads instead (`isr.adapters.base.ThreadedStore`); on asyncio
the asyncio client serves them directly.
"""

from __future__ import annotations

from ._async.redis import AsyncRedisOps
from ._sync.redis import SyncRedisOps

__all__ = ["RedisAdapter"]


class RedisAdapter(AsyncRedisOps, SyncRedisOps):
    """A Redis (or Valkey) store shared by every process using the same URL and namespace
    (see the module docstring)."""

    def __repr__(self) -> str:
        return f"RedisAdapter({self.breaker.name[6:]!r}, namespace={self.namespace!r})"
