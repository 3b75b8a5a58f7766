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

Layout under the namespace's prefix ``ns`` (`adapters.names.prefix`: the namespace itself
when it is a plain word, ``isr`` by default; no two namespaces and keys share a name),
standard commands only (no KEYS, no SCAN, no modules):

- ``{ns}:e:{key}``: the entry, as the codec's bytes (JSON by default), with an expiry at the
  end of its last window (ttl + swr + stale_if_error from the write). An entry with an
  unbounded window (``swr=None``, the classic ISR setting) has none: then the server's
  ``maxmemory`` with an eviction policy such as ``allkeys-lru`` is what bounds the memory.
- ``{ns}:t:{tag}``: a SET of the keys stored with that tag, so an invalidation of the tag
  costs O(keys in it). Keys whose entry is gone (expired, deleted) or no longer carries the
  tag are removed when the tag is next invalidated (``untag``), which then re-reads them and
  adds back any stored again with the tag meanwhile: a write stores the entry before it adds
  the key to its tag sets, so no such key is lost.
- ``{ns}:gen``: the invalidate-all record, a HASH (current, revalidate, expire, purge),
  changed by one Lua script on that one key; read at most every ``generation_poll`` s.
- ``{ns}:l:{key}``: a fetch lock (``SET NX PX``; released by a compare-and-delete script).
- ``{ns}:i:key:{key}``, ``{ns}:i:tag:{tag}``: "<time> <mode>" of the latest (strongest)
  invalidation, kept for the runtime's lock TTL, so that a fetch another process started
  before it stores its value marked (see ``Adapter.note_invalidation``).
- ``{ns}:c:{name}``: a claim (``SET NX PX``; the webhook's replay guard, see
  ``Adapter.claim``); one Redis cannot answer is None, never a guess.

In a Cluster no two keys need to share a slot: each command and script touches one key, and
the one write that touches several (an entry and its tag sets) is a non-transactional
pipeline (in a Cluster, whose pipelines may reorder across nodes, the entry is written first
and the tag sets after).

Outages never reach the caller: every call goes through a circuit breaker, and a failed or
refused call returns the safe answer (a read: missing; a lock: acquired, so the caller goes
to the origin; a write: skipped; an invalidation: logged as an error, and an invalidate-all
still applied in this process). Once Redis answers again it is used again, no restart.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar, cast
from urllib.parse import SplitResult, parse_qsl, urlencode, urlunsplit

try:
    import redis
    import redis.asyncio as aredis
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisClusterException, RedisError
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError('the Redis store needs redis-py: pip install "isr-runtime[redis]"') from exc

from isr._codec import Codec, CodecError, JsonCodec
from isr._entry import Entry, Generation, Mode
from isr._errors import ConfigError
from isr._redact import redact_url, split_url

from .base import Adapter, GenerationCache, lifetime
from .breaker import Breaker
from .names import checked, checked_all, prefix
from .records import Refusals, strongest

__all__ = ["RedisAdapter"]

logger = logging.getLogger("isr")

T = TypeVar("T")

#: What a Redis call may fail with and the cache absorbs (logged, counted, breaker): Redis's
#: own errors (connection refused or lost, timed out, an error reply, a cluster without a
#: usable node), the socket's, the builtin and asyncio timeouts (one class from Python 3.11
#: on), and the AttributeError and TypeError redis-py raises on a connection the server
#: reset, on Python 3.12 to 3.14.0 (redis-py#4287); only client calls run inside these
#: handlers, so a bug of ours would still show, as a counted and logged store error.
_FAILURES = (
    RedisError,
    RedisClusterException,
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
    AttributeError,
    TypeError,
)

#: Options of ours in the URL, and how to read each.
_OPTIONS: dict[str, Callable[[str], Any]] = {
    "timeout": float,
    "connect_timeout": float,
    "generation_poll": float,
    "breaker_threshold": int,
    "breaker_cooldown": float,
    "max_connections": int,
    "cluster": lambda v: {"true": True, "1": True, "false": False, "0": False}[v.lower()],
}
#: redis-py's own options that may stay in the URL it is given.
_PASS_THROUGH = frozenset(
    {
        "client_name",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_check_hostname",
    }
)
_FIELDS = ("current", "revalidate", "expire", "purge")

#: Record an invalidate-all of one strength (ARGV[1]: its field) and return the record.
_BUMP = """
local n = redis.call('HINCRBY', KEYS[1], 'current', 1)
redis.call('HSET', KEYS[1], ARGV[1], n)
return redis.call('HMGET', KEYS[1], 'current', 'revalidate', 'expire', 'purge')
"""
#: Record an invalidation of a key or tag (ARGV: its time, its mode, ms to keep it), keeping
#: the stronger mode should one be on record already: "<time> <mode>".
_NOTE = """
local old = redis.call('GET', KEYS[1])
local mode = tonumber(ARGV[2])
if old then
    local was = tonumber(string.match(old, ' (%d+)$'))
    if was and was > mode then mode = was end
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. mode, 'PX', ARGV[3])
return 1
"""
#: Delete a lock only while it still holds the caller's token.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def _port(parts: SplitResult) -> int | None:
    """The URL's port (0 when it names none), or None when it is not a port; never the
    ValueError urlsplit raises, whose message shows what stood there (maybe a password)."""
    try:
        return parts.port or 0
    except ValueError:
        return None


def _checked_url(url: str) -> tuple[SplitResult, int]:
    """``url`` split, and its port (0: none), or `isr.ConfigError` for one that is not a
    Redis URL; checked before any option is read, since a password with an unencoded
    ``/``, ``#``, ``?`` or ``@`` leaves pieces of itself in the path or the query."""
    parts = split_url(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(
            f"cache URL {redact_url(url)!r}: the Redis store takes redis:// or rediss://"
        )
    port = _port(parts)
    if port is None or "@" in parts.path + parts.query + parts.fragment:
        raise ConfigError(
            f"cache URL {redact_url(url)!r}: the host part does not parse; a password "
            "holding '/', '#', '?' or '@' must be percent-encoded (%2F, %23, %3F, %40)"
        )
    db = parts.path[1:]
    if parts.path not in ("", "/") and not (db.isascii() and db.isdigit()):
        raise ConfigError(
            f"cache URL {redact_url(url)!r}: the path must be the database number, as in "
            "redis://host:6379/0"
        )
    return parts, port


def _generation(fields: list[Any]) -> Generation:
    return Generation(*(int(v) if v is not None else 0 for v in fields))


def _members(raw: Any) -> list[str]:
    """A tag set's keys; a member that is not UTF-8 (isr never writes one) is skipped."""
    return [k.decode() for k in cast("set[bytes]", raw) if _utf8(k)]


def _utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _expiry_ms(entry: Entry) -> int | None:
    """`lifetime` in milliseconds (at least a second), for ``PX``."""
    life = lifetime(entry)
    return None if life is None else max(1000, math.ceil(life * 1000))


class _Gate:
    """At most ``free`` commands at once on one event loop's client; the others wait (each
    at most a timeout) and are let in in order as commands end.

    redis-py's asyncio pool would fail at once (``MaxConnectionsError``), and its blocking
    pool costs every command a timer, a tenth of a loopback GET; this costs a counter until
    every connection is in use.
    """

    __slots__ = ("free", "waiters")

    def __init__(self, size: int) -> None:
        self.free = size
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def wait(self, timeout: float) -> None:
        """Wait for a slot (``free`` is 0); raise TimeoutError after ``timeout``."""
        slot = asyncio.get_running_loop().create_future()
        self.waiters.append(slot)
        try:
            await asyncio.wait_for(slot, timeout)
        except BaseException:
            if slot.done() and not slot.cancelled():
                self.leave()  # handed a slot just as we gave up: pass it on
            raise

    def leave(self) -> None:
        """A command ended: hand its slot to the first waiter still waiting, or free it."""
        waiters = self.waiters
        while waiters:
            slot = waiters.popleft()
            if not slot.done():
                slot.set_result(None)
                return
        self.free += 1


class RedisAdapter(Adapter):
    """A Redis (or Valkey) store shared by every process using the same URL and namespace.

    Entries are bytes made by ``codec`` (`isr._codec.JsonCodec` by default). Sync calls use
    a ``redis.Redis`` client; async calls a ``redis.asyncio.Redis`` client made on first
    use in the running event loop (and made anew should the runtime be used from another
    loop: asyncio connections belong to one loop). redis-py's asyncio client needs asyncio;
    on trio use the sync API or asyncio.
    """

    local: ClassVar[bool] = False
    shared: ClassVar[bool] = True
    wall_clock: ClassVar[bool] = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        namespace: str | None = None,
        codec: Codec | None = None,
        generation_poll: float = 1.0,
        timeout: float = 0.25,
        connect_timeout: float | None = None,
        breaker_threshold: int = 3,
        breaker_cooldown: float = 2.0,
        max_connections: int = 100,
        cluster: bool = False,
    ) -> None:
        parts, port = _checked_url(url)
        options = parse_qsl(parts.query, keep_blank_values=True)
        unknown = sorted({name for name, _ in options} - _PASS_THROUGH)
        if unknown:
            raise ConfigError(
                f"cache URL {redact_url(url)!r}: unknown option(s) {', '.join(unknown)}"
            )
        if not (timeout > 0 and (connect_timeout is None or connect_timeout > 0)):
            raise ConfigError("timeout and connect_timeout must be > 0 seconds")
        if not generation_poll >= 0:
            raise ConfigError("generation_poll must be >= 0 seconds")
        if not (breaker_threshold >= 1 and breaker_cooldown > 0):
            raise ConfigError("breaker_threshold must be >= 1 and breaker_cooldown > 0")
        if not max_connections >= 1:
            raise ConfigError("max_connections must be >= 1")
        self.url = url
        self.namespace = namespace
        self.codec: Codec = codec if codec is not None else JsonCodec()
        self.cluster = cluster
        self.timeout = timeout
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        where = f"{parts.hostname or '127.0.0.1'}:{port or 6379}"
        self.breaker = Breaker(
            f"redis {where}", threshold=breaker_threshold, cooldown=breaker_cooldown
        )
        self._generation = GenerationCache(generation_poll)
        self._refusals = Refusals("redis store")
        ns = prefix(namespace)
        self._c = f"{ns}:c:"
        self._e = f"{ns}:e:"
        self._t = f"{ns}:t:"
        self._l = f"{ns}:l:"
        self._g = f"{ns}:gen"
        self._i = f"{ns}:i:"
        self.max_connections = max_connections
        kwargs: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": self.connect_timeout,
        }
        self._kwargs = kwargs
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None  # made on first use, as the asyncio one
        self._aclient: aredis.Redis | None = None
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._agate = _Gate(max_connections)
        # Cluster only: whether the asyncio client has loaded its slot map (see _aready_wait)
        # and the one load in flight, shared by the callers that find it not loaded yet.
        self._aready = True
        self._ainit: asyncio.Future[Any] | None = None

    @classmethod
    def from_url(
        cls, url: str, *, namespace: str | None = None, codec: Codec | None = None
    ) -> RedisAdapter:
        """The store a ``redis://`` or ``rediss://`` cache URL names (options: see the
        module docstring); a bad option raises `isr.ConfigError` naming it."""
        parts, _ = _checked_url(url)
        ours: dict[str, Any] = {}
        theirs: list[tuple[str, str]] = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            parse = _OPTIONS.get(name)
            if parse is None:
                theirs.append((name, value))
                continue
            try:
                ours[name] = parse(value)
            except (KeyError, ValueError):
                raise ConfigError(
                    f"cache URL {redact_url(url)!r}: bad value {value!r} for {name}"
                ) from None
        unknown = sorted({name for name, _ in theirs} - _PASS_THROUGH)
        if unknown:
            raise ConfigError(
                f"cache URL {redact_url(url)!r}: unknown option(s) {', '.join(unknown)}; known: "
                f"{', '.join([*_OPTIONS, *sorted(_PASS_THROUGH)])}"
            )
        rest = urlunsplit(parts._replace(query=urlencode(theirs)))
        return cls(rest, namespace=namespace, codec=codec, **ours)

    # ------------------------------------------------------------------ plumbing

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        self.breaker.failure(exc)

    def _abandoned(self, probe: bool) -> None:
        """A call ended without an outcome (cancelled). If it was the breaker's half-open
        probe, the breaker must not wait for it forever: another call probes after the
        cooldown."""
        if probe:
            self.breaker.abandon()

    def _unreached(self, what: str) -> None:
        logger.error(
            "%s could not reach %s; other processes will not see it", what, self.breaker.name
        )

    def _run(self, op: Callable[[redis.Redis], T], default: T) -> tuple[T, bool]:
        """``op`` on the sync client through the breaker: (its answer, True), or
        (``default``, False) if Redis is out of use or the call failed."""
        breaker = self.breaker
        if breaker.failures and not breaker.allow():
            return default, False
        probe = breaker.is_open
        try:
            result = op(self._client or self._sync_client())
        except _FAILURES as exc:
            self._failed(exc)
            return default, False
        except BaseException:
            self._abandoned(probe)
            raise
        breaker.success()
        return result, True

    async def _arun(self, op: Callable[[aredis.Redis], Awaitable[T]], default: T) -> tuple[T, bool]:
        """`_run` for the asyncio client."""
        breaker = self.breaker
        if breaker.failures and not breaker.allow():
            return default, False
        probe = breaker.is_open
        try:
            client = self._aclient_here()
            if not self._aready:
                await self._aready_wait(client)
            gate = self._agate
            if gate.free:
                gate.free -= 1
            else:
                await gate.wait(self.timeout)
            try:
                result = await op(client)
            finally:
                gate.leave()
        except _FAILURES as exc:
            self._failed(exc)
            return default, False
        except BaseException:
            self._abandoned(probe)
            raise
        breaker.success()
        return result, True

    def _sync_client(self) -> redis.Redis:
        """The sync client, made on first use (a Cluster client connects when made)."""
        with self._lock:
            if self._client is None:
                # No retries inside redis-py: the breaker decides when to try again, and a
                # retry (redis-py's default is 10, with backoff) would keep callers waiting.
                retry = Retry(NoBackoff(), 0)
                if self.cluster:
                    from redis.cluster import RedisCluster

                    cluster = RedisCluster.from_url(self.url, retry=retry, **self._kwargs)
                    self._client = cast("redis.Redis", cluster)  # the same commands
                else:
                    self._client = redis.Redis.from_url(self.url, retry=retry, **self._kwargs)
            return self._client

    def _aclient_here(self) -> aredis.Redis:
        """The asyncio client of the running loop, made on first use there."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ConfigError(
                "the Redis store's async calls need asyncio (redis-py's asyncio client); "
                "on trio, use the sync API"
            ) from None
        client = self._aclient
        if client is None or loop is not self._aloop:
            retry = AsyncRetry(NoBackoff(), 0)
            if self.cluster:
                from redis.asyncio.cluster import RedisCluster

                cluster = RedisCluster.from_url(self.url, retry=retry, **self._kwargs)
                client = cast("aredis.Redis", cluster)
                self._aready, self._ainit = False, None  # slot map loaded on first use
            else:
                client = aredis.Redis.from_url(
                    self.url, retry=retry, max_connections=self.max_connections, **self._kwargs
                )
            self._aclient, self._aloop = client, loop
            self._agate = _Gate(self.max_connections)
        return client

    def subscriber_client(self) -> redis.Redis:
        """A new sync client of its own, for an L1's pub/sub bus: a subscription holds its
        connection, and waits on it longer than a command's timeout."""
        kwargs = {**self._kwargs, "socket_timeout": max(5.0, self.timeout)}
        if self.cluster:
            from redis.cluster import RedisCluster

            return cast("redis.Redis", RedisCluster.from_url(self.url, **kwargs))
        return redis.Redis.from_url(self.url, **kwargs)

    def fresh_generation(self) -> Generation:
        """The generation record read now, not from the poll cache."""
        self._generation.expire()
        return self.generation()

    async def _aready_wait(self, client: aredis.Redis) -> None:
        """Load a new asyncio Cluster client's slot map before its first command: one load
        (``initialize``), awaited by every caller that comes meanwhile; a failed one raises
        in each of them, and the next caller starts another.

        Without it, redis-py's asyncio RedisCluster (seen with 8.1) sends commands issued
        before it knows the slots to one node; when several are in flight at once, their
        MOVED replies each refresh the topology, which closes connections other commands
        are using ("Connection closed by server", or an AttributeError from a writer that
        is gone: not a RedisError). tests/test_redis_cluster.py exercises it.
        """
        task = self._ainit
        if task is None or (task.done() and (task.cancelled() or task.exception())):
            task = self._ainit = asyncio.ensure_future(client.initialize())
            # Retrieved even if every caller waiting on it was cancelled: no asyncio warning.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        await asyncio.shield(task)
        self._aready = True

    def _drop_aclient(self) -> None:
        """Forget an asyncio client whose loop is gone or another: its connections cannot
        be closed from here (they belong to that loop). Close them first with `aclose`."""
        self._aclient = self._aloop = None

    def _decode(self, key: str, data: bytes | None) -> Entry | None:
        """The entry in ``data``; a record the codec refuses (corrupt, or not signed with
        our key for its name) is counted, logged once and treated as missing: it is never
        trusted."""
        if data is None:
            return None
        name = self._e + key
        try:
            return self.codec.loads(name, data)
        except CodecError as exc:
            self.errors += 1
            self._refusals.note(name, str(exc))
            return None

    def _read(self, key: str, data: bytes | None, reached: bool) -> tuple[Entry | None, bool]:
        """`read`'s answer from what the GET brought (``reached``: Redis answered it)."""
        entry = self._decode(key, data)
        return entry, reached and (entry is not None or data is None)

    def _retagged(self, tag: str, keys: list[str], records: list[bytes | None]) -> list[str]:
        """Of ``keys`` just removed from ``tag``'s set, those whose entry (``records``)
        carries the tag after all: stored again since the runtime found it gone."""
        back = []
        for k, data in zip(keys, records, strict=True):
            if data is not None:
                try:
                    entry = self.codec.loads(self._e + k, data)
                except CodecError:
                    continue
                if tag in entry.tags:
                    back.append(k)
        return back

    def _markers(self, key: str, tags: tuple[str, ...]) -> list[str]:
        return [self._i + "key:" + key, *(self._i + "tag:" + tag for tag in tags)]

    # ------------------------------------------------------------------ sync

    def get(self, key: str) -> Entry | None:
        return self.read(key)[0]

    def read(self, key: str) -> tuple[Entry | None, bool]:
        """`get`, and whether this read had Redis's word on ``key``: (None, True) is a key
        Redis does not hold; (None, False) one it could not be asked about, or whose record
        the codec refused."""
        name = self._e + checked(key)
        data, reached = self._run(lambda c: cast("bytes | None", c.get(name)), None)
        return self._read(key, data, reached)

    def set(self, key: str, entry: Entry) -> None:
        checked_all(entry.tags)
        data = self.codec.dumps(self._e + checked(key), entry)  # a CodecError: nothing written
        px = _expiry_ms(entry)

        def write(c: redis.Redis) -> object:
            if not entry.tags:
                return c.set(self._e + key, data, px=px)
            if self.cluster:  # its pipelines may reorder: entry first
                c.set(self._e + key, data, px=px)
            pipe = c.pipeline(transaction=False)
            if not self.cluster:
                pipe.set(self._e + key, data, px=px)
            for tag in entry.tags:
                pipe.sadd(self._t + tag, key)
            return pipe.execute()

        self._run(write, None)

    def delete(self, key: str) -> None:
        name = self._e + checked(key)
        _, ok = self._run(lambda c: c.delete(name), 0)
        if not ok:
            self._unreached(f"invalidation of {key!r}")

    def tagged(self, tag: str) -> list[str]:
        name = self._t + checked(tag, "tag")
        keys, ok = self._run(lambda c: _members(c.smembers(name)), cast("list[str]", []))
        if not ok:
            self._unreached(f"invalidation of tag {tag!r}")
        return keys

    def untag(self, tag: str, keys: list[str]) -> None:
        if not keys:
            return
        tkey = self._t + checked(tag, "tag")
        checked_all(keys, "key")

        def untag(c: redis.Redis) -> None:
            c.srem(tkey, *keys)
            pipe = c.pipeline(transaction=False)
            for k in keys:
                pipe.get(self._e + k)
            back = self._retagged(tag, keys, pipe.execute())
            if back:
                c.sadd(tkey, *back)

        self._run(untag, None)

    def note_invalidation(self, kind: str, name: str, mode: Mode, at: float, ttl: float) -> None:
        marker = f"{self._i}{kind}:{checked(name, kind)}"
        ms = max(1, math.ceil(ttl * 1000))
        _, ok = self._run(lambda c: c.eval(_NOTE, 1, marker, repr(at), int(mode), ms), None)
        if not ok:
            self._unreached(f"invalidation of {kind} {name!r}")

    def invalidated_since(self, key: str, tags: tuple[str, ...], since: float) -> Mode | None:
        checked(key)
        checked_all(tags)

        def read(c: redis.Redis) -> list[Any]:
            if not tags:
                return [c.get(self._i + "key:" + key)]
            pipe = c.pipeline(transaction=False)
            for marker in self._markers(key, tags):
                pipe.get(marker)
            return pipe.execute()

        nothing: list[Any] = []
        records, _ = self._run(read, nothing)
        return strongest(records, since)

    def generation(self) -> Generation:
        cache = self._generation
        value = cache.current()
        if value is not None:
            return value
        fields, _ = self._run(lambda c: c.hmget(self._g, _FIELDS), None)
        return cache.value if fields is None else cache.update(_generation(fields))

    def bump_generation(self, mode: Mode) -> Generation:
        field = _FIELDS[mode]
        fields, _ = self._run(lambda c: c.eval(_BUMP, 1, self._g, field), None)
        return self._bumped(mode, fields)

    def _bumped(self, mode: Mode, fields: list[Any] | None) -> Generation:
        cache = self._generation
        if fields is None:
            self._unreached(f"invalidate_all({mode.name.lower()})")
            return cache.update(cache.value.bumped(mode))  # at least this process applies it
        return cache.update(_generation(fields))

    def acquire(self, key: str, token: str, ttl: float) -> bool:
        ms = max(1, math.ceil(ttl * 1000))
        name = self._l + checked(key)
        taken, _ = self._run(lambda c: bool(c.set(name, token, nx=True, px=ms)), True)
        return taken

    def release(self, key: str, token: str) -> None:
        name = self._l + checked(key)
        self._run(lambda c: c.eval(_RELEASE, 1, name, token), None)

    def claim(self, name: str, ttl: float) -> bool | None:
        """``SET NX PX`` through the breaker; None when Redis cannot be asked."""
        ms = max(1, math.ceil(ttl * 1000))
        claim = self._c + checked(name, "claim")
        taken, ok = self._run(lambda c: bool(c.set(claim, b"1", nx=True, px=ms)), False)
        return taken if ok else None

    def unclaim(self, name: str) -> None:
        claim = self._c + checked(name, "claim")
        _, ok = self._run(lambda c: c.delete(claim), 0)
        if not ok:
            self._unreached(f"the release of claim {name!r}")

    def close(self) -> None:
        """Close the sync client; an asyncio client is closed by `aclose` (in its loop)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    # ------------------------------------------------------------------ async

    async def aget(self, key: str) -> Entry | None:  # the hot path's read: no extra await
        name = self._e + checked(key)
        data, _ = await self._arun(lambda c: c.get(name), None)
        return self._decode(key, cast("bytes | None", data))

    async def aread(self, key: str) -> tuple[Entry | None, bool]:
        """`read` on the asyncio client."""
        name = self._e + checked(key)
        data, reached = await self._arun(lambda c: c.get(name), None)
        return self._read(key, cast("bytes | None", data), reached)

    async def aset(self, key: str, entry: Entry) -> None:
        checked_all(entry.tags)
        data = self.codec.dumps(self._e + checked(key), entry)
        px = _expiry_ms(entry)

        async def write(c: aredis.Redis) -> object:
            if not entry.tags:
                return await c.set(self._e + key, data, px=px)
            if self.cluster:
                await c.set(self._e + key, data, px=px)
            pipe = c.pipeline(transaction=False)
            if not self.cluster:
                pipe.set(self._e + key, data, px=px)
            for tag in entry.tags:
                pipe.sadd(self._t + tag, key)
            return await pipe.execute()

        await self._arun(write, None)

    async def adelete(self, key: str) -> None:
        name = self._e + checked(key)
        _, ok = await self._arun(lambda c: c.delete(name), 0)
        if not ok:
            self._unreached(f"invalidation of {key!r}")

    async def atagged(self, tag: str) -> list[str]:
        name = self._t + checked(tag, "tag")

        async def members(c: aredis.Redis) -> list[str]:
            return _members(await c.smembers(name))

        keys, ok = await self._arun(members, cast("list[str]", []))
        if not ok:
            self._unreached(f"invalidation of tag {tag!r}")
        return keys

    async def auntag(self, tag: str, keys: list[str]) -> None:
        if not keys:
            return
        tkey = self._t + checked(tag, "tag")
        checked_all(keys, "key")

        async def untag(c: aredis.Redis) -> None:
            await c.srem(tkey, *keys)
            pipe = c.pipeline(transaction=False)
            for k in keys:
                pipe.get(self._e + k)
            back = self._retagged(tag, keys, await pipe.execute())
            if back:
                await c.sadd(tkey, *back)

        await self._arun(untag, None)

    async def anote_invalidation(
        self, kind: str, name: str, mode: Mode, at: float, ttl: float
    ) -> None:
        marker = f"{self._i}{kind}:{checked(name, kind)}"
        ms = max(1, math.ceil(ttl * 1000))
        _, ok = await self._arun(lambda c: c.eval(_NOTE, 1, marker, repr(at), int(mode), ms), None)
        if not ok:
            self._unreached(f"invalidation of {kind} {name!r}")

    async def ainvalidated_since(
        self, key: str, tags: tuple[str, ...], since: float
    ) -> Mode | None:
        checked(key)
        checked_all(tags)

        async def read(c: aredis.Redis) -> list[Any]:
            if not tags:
                return [await c.get(self._i + "key:" + key)]
            pipe = c.pipeline(transaction=False)
            for marker in self._markers(key, tags):
                pipe.get(marker)
            return await pipe.execute()

        nothing: list[Any] = []
        records, _ = await self._arun(read, nothing)
        return strongest(records, since)

    async def ageneration(self) -> Generation:
        cache = self._generation
        value = cache.current()
        if value is not None:
            return value
        fields, _ = await self._arun(lambda c: c.hmget(self._g, _FIELDS), None)
        return cache.value if fields is None else cache.update(_generation(fields))

    async def abump_generation(self, mode: Mode) -> Generation:
        field = _FIELDS[mode]
        fields, _ = await self._arun(lambda c: c.eval(_BUMP, 1, self._g, field), None)
        return self._bumped(mode, fields)

    async def aacquire(self, key: str, token: str, ttl: float) -> bool:
        ms = max(1, math.ceil(ttl * 1000))
        name = self._l + checked(key)

        async def take(c: aredis.Redis) -> bool:
            return bool(await c.set(name, token, nx=True, px=ms))

        taken, _ = await self._arun(take, True)
        return taken

    async def arelease(self, key: str, token: str) -> None:
        name = self._l + checked(key)
        await self._arun(lambda c: c.eval(_RELEASE, 1, name, token), None)

    async def aclaim(self, name: str, ttl: float) -> bool | None:
        ms = max(1, math.ceil(ttl * 1000))
        claim = self._c + checked(name, "claim")

        async def take(c: aredis.Redis) -> bool:
            return bool(await c.set(claim, b"1", nx=True, px=ms))

        taken, ok = await self._arun(take, False)
        return taken if ok else None

    async def aunclaim(self, name: str) -> None:
        claim = self._c + checked(name, "claim")
        _, ok = await self._arun(lambda c: c.delete(claim), 0)
        if not ok:
            self._unreached(f"the release of claim {name!r}")

    async def aclose(self) -> None:
        """Close both clients (the asyncio one only if it belongs to the running loop)."""
        client, loop = self._aclient, self._aloop
        self._drop_aclient()
        if client is not None and loop is asyncio.get_running_loop():
            await client.aclose()
        self.close()

    def __repr__(self) -> str:
        return f"RedisAdapter({self.breaker.name[6:]!r}, namespace={self.namespace!r})"
