"""The Redis store's plumbing: options, clients, the circuit breaker, the record formats.

`RedisBase` is everything of ``isr.adapters.redis.RedisAdapter`` but its store operations:
those are written once, async, in ``isr/adapters/_async/redis.py``, and generated for sync
code in ``isr/adapters/_sync/redis.py``. See ``isr.adapters.redis`` for the layout in Redis.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import secrets
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast
from urllib.parse import SplitResult, parse_qsl, urlencode, urlunsplit

from typing_extensions import Self

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
from isr._coherence import (
    Confirmation,
    Instance,
    LoggedInvalidation,
    instance_from,
    instance_record,
    is_live,
    is_stale,
    parse_epoch,
)
from isr._entry import Entry, Generation, Mode
from isr._errors import ConfigError, StoreUnavailable
from isr._redact import redact_url, split_url
from isr._version import __version__

from .base import Adapter, GenerationCache, lifetime
from .breaker import Breaker
from .names import prefix
from .records import Refusals, tag_numbers
from .redis_bus import PUBLISH

__all__ = ["CONFIRMATIONS_SLACK", "FAILURES", "Busy", "RedisBase"]

#: Confirmations of ids the log no longer holds that may pile up before they are pruned.
CONFIRMATIONS_SLACK = 100

logger = logging.getLogger("isr")


#: What a Redis call may fail with and the cache absorbs (logged, counted, breaker): Redis's
#: own errors (connection refused or lost, timed out, an error reply, a cluster without a
#: usable node), the socket's, the builtin and asyncio timeouts (one class from Python 3.11
#: on), and the AttributeError and TypeError redis-py raises on a connection the server
#: reset, on Python 3.12 to 3.14.0 (redis-py#4287); only client calls run inside these
#: handlers, so a bug of ours would still show, as a counted and logged store error.
FAILURES = (
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

#: Record an invalidate-all of one strength (ARGV[1]: its field; ARGV[2]: the highest
#: ``current`` the caller has seen) and return the record. The new ``current`` is above the
#: old one, above the caller's and up to Redis's own clock in milliseconds, so it never goes
#: back, even after Redis lost the record (see `isr._entry.Generation.bumped`).
_BUMP = """
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = tonumber(redis.call('HGET', KEYS[1], 'current') or '0')
local n = string.format('%.0f', math.max(old + 1, now, tonumber(ARGV[2]) + 1))
redis.call('HSET', KEYS[1], 'current', n, ARGV[1], n)
return redis.call('HMGET', KEYS[1], 'current', 'revalidate', 'expire', 'purge')
"""
#: Move a tag's invalidation record on (KEYS[1]; ARGV[1]: the field of the strength, 2 to
#: 4), as `_BUMP` moves the store's: its numbers are times on Redis's clock that never go
#: back, so a record Redis lost starts again above every number an entry was stamped with.
_TAG = """
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local f = {0, 0, 0, 0}
local old = redis.call('GET', KEYS[1])
if old then
    local i = 1
    for v in string.gmatch(old, '%d+') do
        if i <= 4 then f[i] = tonumber(v) end
        i = i + 1
    end
end
local n = math.max(f[1] + 1, now)
f[1] = n
f[tonumber(ARGV[1])] = n
local text = string.format('%.0f %.0f %.0f %.0f', f[1], f[2], f[3], f[4])
redis.call('SET', KEYS[1], text)
return text
"""
#: Give the record back what a process remembers of it (ARGV: current, revalidate, expire,
#: purge), each field raised to at least that: after the record vanished or went back.
_RESTORE = """
local fields = {'current', 'revalidate', 'expire', 'purge'}
for i, name in ipairs(fields) do
    local have = tonumber(redis.call('HGET', KEYS[1], name) or '0')
    if tonumber(ARGV[i]) > have then redis.call('HSET', KEYS[1], name, ARGV[i]) end
end
return redis.call('HMGET', KEYS[1], 'current', 'revalidate', 'expire', 'purge')
"""
#: A server answering with another run_id than the one on record for its address (ARGV[1]:
#: the field, ``run@<address>``; ARGV[2]: its run_id now) restarted or failed over: what it
#: holds may be from before invalidations acknowledged since (a dump saved earlier, a
#: replica that lagged), so everything written before now is purged, once for every process
#: (the first to see the new run_id records it), after the record is given back what the
#: caller remembers (ARGV[3..6], as `_RESTORE`). 1: it purged; 0: nothing to do (the same
#: server, or the first run_id on record for that address).
_RESTARTED = """
redis.replicate_commands()
local was = redis.call('HGET', KEYS[1], ARGV[1])
if was == ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if not was then return 0 end
local fields = {'current', 'revalidate', 'expire', 'purge'}
for i, name in ipairs(fields) do
    local have = tonumber(redis.call('HGET', KEYS[1], name) or '0')
    if tonumber(ARGV[i + 2]) > have then redis.call('HSET', KEYS[1], name, ARGV[i + 2]) end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = tonumber(redis.call('HGET', KEYS[1], 'current') or '0')
local n = string.format('%.0f', math.max(old + 1, now))
redis.call('HSET', KEYS[1], 'current', n, 'purge', n)
return 1
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
#: A fetched value stored and its fetch lock given back, in one round trip, when nothing
#: says otherwise (else 0, nothing done: the caller takes the long way, `astore`). KEYS: the
#: entry, the lock, the key's marker, then n tags' markers, records and sets; ARGV: the
#: data, its expiry in ms ('' for none), the fetch's start, the lock's token, the key, n,
#: then the n records as the caller last read them (the numbers the entry carries: '' for
#: none). Otherwise: an invalidation of the key or a tag since the fetch started, or a tag's
#: record moved since the caller read it.
_FINISH = """
local n = tonumber(ARGV[6])
local since = tonumber(ARGV[3])
for i = 3, 3 + n do
    local m = redis.call('GET', KEYS[i])
    if m then
        local at = tonumber(string.match(m, '^(%S+)'))
        if at == nil or at > since then return 0 end
    end
end
for i = 1, n do
    if (redis.call('GET', KEYS[3 + n + i]) or '') ~= ARGV[6 + i] then return 0 end
end
if ARGV[2] == '' then
    redis.call('SET', KEYS[1], ARGV[1])
else
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
for i = 1, n do redis.call('SADD', KEYS[3 + 2 * n + i], ARGV[5]) end
if redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('DEL', KEYS[2]) end
return 1
"""
#: Take a fetch lock and read the entry as it is now, in one command (a pipeline of two
#: costs redis-py twice the work): KEYS: the lock, the entry, then the records of the tags
#: the caller expects; ARGV: the token, the lock's ttl in ms. {1 or 0, the entry, records}.
_TAKE = """
local out = {redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0}
for i = 2, #KEYS do out[i] = redis.call('GET', KEYS[i]) end
return out
"""
#: Delete a lock only while it still holds the caller's token.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def _driver_info() -> Any:
    """How this process names itself to Redis (``CLIENT SETINFO``: ``redis-py(isr-runtime_v
    ...)``), made once: left to redis-py (8.x), every new connection would look its own
    version up in the installed packages' metadata, about a millisecond a connection, which
    a burst on a cold process pays a hundred times. None with a redis-py that has no
    ``driver_info`` (it names itself as before)."""
    try:
        from redis.driver_info import DriverInfo
    except ImportError:
        return None
    return DriverInfo(name="redis-py", lib_version=redis.__version__).add_upstream_driver(
        "isr-runtime", __version__
    )


if sys.version_info >= (3, 11):
    from asyncio import timeout as _deadline
else:  # pragma: no cover - redis-py brings async-timeout on these
    try:
        from async_timeout import timeout as _deadline  # type: ignore[import-not-found]
    except ImportError:
        _deadline = None

T = TypeVar("T")

#: The deadline of the asyncio op running in this task (`RedisBase._aop`), which a new
#: connection's handshake moves on (`RedisBase._aconnected`).
_OP: ContextVar[Any] = ContextVar("isr_redis_op", default=None)

#: Seconds an op whose answer may be large (a tag's whole set of keys) may take.
LONG_OP = 10.0


#: A heartbeat: the instance's record, and the epoch it has applied unless the hash holds a
#: higher one already (an acknowledgement the bus's thread wrote meanwhile).
_BEAT = """
redis.call('HSET', KEYS[1], 'r:' .. ARGV[1], ARGV[2])
if ARGV[3] ~= '' then
  local now = redis.call('HGET', KEYS[1], 'a:' .. ARGV[1])
  if not now or tonumber(ARGV[3]) > tonumber(now) then
    redis.call('HSET', KEYS[1], 'a:' .. ARGV[1], ARGV[3])
  end
end
return 1
"""

_RUN_ID = re.compile(r"^run_id:(\w+)", re.MULTILINE)


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


#: Keys whose tags a store remembers (`RedisBase._tag_hints`); past this it starts over.
_HINTS_KEPT = 100_000


def _generation(fields: list[Any]) -> Generation:
    return Generation(*(int(v) if v is not None else 0 for v in fields))


def _members(raw: Any) -> list[str]:
    """A tag set's keys; a member that is not UTF-8 (isr never writes one) is skipped."""
    return [k.decode() for k in cast("set[bytes]", raw) if _utf8(k)]


def _stream_id(value: Any) -> tuple[int, int]:
    """A stream id (``b"1700000000000-0"``) as numbers, to compare; (0, 0) if malformed."""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    ms, _, n = text.partition("-")
    try:
        return int(ms), int(n or 0)
    except ValueError:
        return 0, 0


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


class Busy(Exception):
    """Every connection slot stayed taken past the wait allowed (the process is swamped):
    the call is not made, and not counted against Redis (it did not fail)."""


class _Gate:
    """At most ``capacity`` commands at once on one event loop's client; the others wait
    and are let in in order as commands end.

    ``capacity`` starts small and grows by one with each command that ends, up to ``size``
    (a slow start): a burst on a cold process opens a few connections and reuses them, where
    opening ``size`` at once (each a TCP connect and a handshake, on a loaded machine) would
    pass the connect timeout and trip the breaker. redis-py's asyncio pool would fail at once
    (``MaxConnectionsError``), and its blocking pool costs every command a timer, a tenth of
    a loopback GET; this costs a counter until every slot is in use.
    """

    __slots__ = ("capacity", "free", "size", "waiters")

    #: The slots a new client starts with.
    START = 4

    def __init__(self, size: int) -> None:
        self.size = size
        self.capacity = self.free = min(size, self.START)
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def wait(self, timeout: float) -> None:
        """Wait for a slot (``free`` is 0); raise `Busy` after ``timeout``."""
        slot = asyncio.get_running_loop().create_future()
        self.waiters.append(slot)
        try:
            await asyncio.wait_for(slot, timeout)
        except (TimeoutError, asyncio.TimeoutError):
            raise Busy(f"no connection slot within {timeout:g} s") from None
        except BaseException:
            if slot.done() and not slot.cancelled():
                self.leave()  # handed a slot just as we gave up: pass it on
            raise

    def leave(self) -> None:
        """A command ended: its slot (and, while the capacity grows, a new one) goes to the
        first waiters still waiting, or is freed."""
        slots = 1
        if self.capacity < self.size:
            self.capacity += 1
            slots = 2
        waiters = self.waiters
        while slots and waiters:
            slot = waiters.popleft()
            if not slot.done():
                slot.set_result(None)
                slots -= 1
        self.free += slots


class _Watched:
    """One asyncio op under a `_Watch`: its task, its deadline (``reschedule`` moves it, as
    on an ``asyncio.timeout``), and whether the watch cancelled it for running past it."""

    __slots__ = ("cancelling", "deadline", "expired", "grace", "task")

    def __init__(self, task: Any, deadline: float) -> None:
        self.task = task  # an asyncio.Task: uncancel() and cancelling() are 3.11's
        self.deadline = deadline
        self.cancelling = task.cancelling()
        self.expired = False
        self.grace = 0.0  # how far stalls of the loop moved the deadline (`_Watch._check`)

    def reschedule(self, when: float) -> None:
        self.deadline = when

    def timed_out(self) -> bool:
        """Whether the `CancelledError` the op raised is the watch's, and only the watch's
        (then it is taken back: the op raises ``TimeoutError``)."""
        return self.expired and self.task.uncancel() <= self.cancelling


def _late(within: float) -> TimeoutError:
    """What an op the watch cancelled at its deadline raises (and the breaker logs)."""
    return TimeoutError(f"a Redis command took longer than {within:g} s")


class _Watch:
    """Bounds the asyncio client's ops on one event loop with one timer among them all.

    ``asyncio.timeout`` costs an op a timer of its own (a handle made, pushed on the loop's
    heap, cancelled), about a tenth of a loopback GET; here an op costs a dict entry, and
    the one timer, due at the earliest deadline, cancels what ran past its own and rearms.
    An op it cancelled raises ``TimeoutError`` (`RedisBase._aop`), as under
    ``asyncio.timeout``: a cancellation from elsewhere stays a cancellation.

    A stall of the loop itself is not Redis's slowness: when the timer goes off more than
    `STALL` seconds late (the process or the machine paused, a long garbage collection,
    blocking code on the loop), the clock of every op in flight starts again (each gets
    ``within`` from now, up to `GRACE` more in all), since their answers may have arrived
    meanwhile and wait behind the timer. Without it, one stall during a burst failed every
    command in flight and opened the breaker."""

    #: Seconds late that mean the loop stalled (a busy loop's timers are a few ms late).
    STALL = 0.05
    #: The most an op's deadline moves for stalls: a wait stays bounded.
    GRACE = 2.0

    __slots__ = ("at", "handle", "loop", "ops", "within")

    def __init__(self, loop: asyncio.AbstractEventLoop, within: float) -> None:
        self.loop = loop
        #: An op's bound (but a ``long`` one's, and one whose connection's handshake renews it).
        self.within = within
        self.ops: dict[_Watched, None] = {}
        self.handle: asyncio.TimerHandle | None = None
        self.at = math.inf

    def start(self, within: float) -> _Watched:
        task = asyncio.current_task(self.loop)
        assert task is not None  # an op is awaited, so in a task
        op = _Watched(task, self.loop.time() + within)
        self.ops[op] = None
        if op.deadline < self.at:
            self.arm(op.deadline)
        return op

    def end(self, op: _Watched) -> None:
        self.ops.pop(op, None)

    def arm(self, at: float) -> None:
        """Have the timer go off at ``at`` (earlier than it would)."""
        if self.handle is not None:
            self.handle.cancel()
        self.at = at
        self.handle = self.loop.call_at(at, self._check)

    def _check(self) -> None:
        """Cancel the ops past their deadline; rearm for the earliest of the others."""
        now, at = self.loop.time(), math.inf
        stalled = now - self.at > self.STALL  # the timer went off late: the loop stalled
        self.handle, self.at = None, math.inf
        for op in list(self.ops):
            if stalled and op.grace < self.GRACE:  # its clock starts again, from now
                more = min(max(0.0, now + self.within - op.deadline), self.GRACE - op.grace)
                op.deadline += more
                op.grace += more
            if op.deadline <= now:
                del self.ops[op]
                op.expired = True
                op.task.cancel()
            elif op.deadline < at:
                at = op.deadline
        if at < math.inf:
            self.at = at
            self.handle = self.loop.call_at(at, self._check)


class _Queued:
    """Commands that found every connection slot taken, sent as one pipeline by the next
    op to get a slot (`RedisBase._arun_command`): under load, one round trip and one write
    carry many callers' commands, where each would otherwise wait for a slot of its own."""

    __slots__ = ("commands", "futures")

    #: The most commands one pipeline carries.
    LIMIT = 512

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []
        self.futures: list[asyncio.Future[tuple[Any, bool]]] = []


class RedisBase(Adapter):
    """A Redis (or Valkey) store shared by every process using the same URL and namespace.

    Entries are bytes made by ``codec`` (`isr._codec.JsonCodec` by default). Sync calls use
    a ``redis.Redis`` client; async calls a ``redis.asyncio.Redis`` client made on first
    use in the running event loop (and made anew should the runtime be used from another
    loop: asyncio connections belong to one loop). redis-py's asyncio client needs asyncio,
    so the store says ``asyncio_only``: on trio a runtime uses its sync operations in worker
    threads (see ``isr.adapters.redis``).
    """

    local: ClassVar[bool] = False
    shared: ClassVar[bool] = True
    wall_clock: ClassVar[bool] = True
    asyncio_only: ClassVar[bool] = True

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
        #: How long a command waits for a connection slot (the process is busy, Redis is
        #: not failing: a burst's commands queue there, each then bounded by ``timeout``).
        self.slot_wait = max(1.0, 4 * timeout)
        where = f"{parts.hostname or '127.0.0.1'}:{port or 6379}"
        self._generation = GenerationCache(generation_poll)
        # After failures, Redis may come back having lost its state (a restart, a failover):
        # the next read looks at the generation record at once, not within the poll.
        self.breaker = Breaker(
            f"redis {where}",
            threshold=breaker_threshold,
            cooldown=breaker_cooldown,
            on_recovered=self._generation.expire,
        )
        #: The latest of every record seen or written (field by field), given back to Redis
        #: should it lose the record.
        self._known = Generation()
        #: The run_id on record for each server address (``host:port``), and those a new
        #: connection found that the record has not been checked against yet.
        self._runs: dict[str, str] = {}
        self._pending_runs: dict[str, str] = {}
        self._identify = True
        #: The generation read in progress, per event loop (`_aowner`), that others join.
        self._gen_reads: dict[object, Any] = {}
        self._refusals = Refusals("redis store")
        ns = prefix(namespace)
        self._c = f"{ns}:c:"
        self._e = f"{ns}:e:"
        self._t = f"{ns}:t:"
        self._l = f"{ns}:l:"
        self._g = f"{ns}:gen"
        self._i = f"{ns}:i:"
        self._v = f"{ns}:v:"
        #: The instance registry (a hash: ``r:<id>`` records, ``a:<id>`` applied epochs),
        #: the invalidation log (a capped stream) and its confirmations (a hash by log id),
        #: the bus's channel and epoch counter, the acknowledgements' channel.
        self._n = f"{ns}:n"
        self._log = f"{ns}:log"
        self._logc = f"{ns}:logc"
        self.bus_channel = f"{ns}:bus"
        self.ack_channel = f"{ns}:ack"
        self.ask_channel = f"{ns}:ask"
        self._ask = f"{ns}:ask:"
        self.epoch_key = f"{ns}:epoch"
        #: This process's name on the bus (its own messages are not applied twice).
        self.sender = uuid.uuid4().hex[:16]
        #: The tags each key's entry had when last read or written here: a read of a key
        #: fetches its tags' records in the same round trip (MGET), so a tag's invalidation
        #: is seen at once without a second one.
        self._tag_hints: dict[str, tuple[str, ...]] = {}
        #: Each tag's record as last read here (bytes; None: it had none): the numbers a
        #: value fetched now carries, checked against Redis's as it is stored (`_FINISH`).
        self._tag_records: dict[str, bytes | None] = {}
        self.max_connections = max_connections
        kwargs: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": self.connect_timeout,
        }
        info = _driver_info()
        if info is not None:
            kwargs["driver_info"] = info
        self._kwargs = kwargs
        #: The plain asyncio client's: its ops are bounded by `_aop`'s deadline instead.
        self._op_within: float | None = None
        self._akwargs = kwargs
        if not cluster and _deadline is not None:
            # The op's bound covers connecting too (`_aop`): redis-py's own connect timer
            # would count a stall of the loop against Redis (see `_Watch`).
            self._op_within = max(timeout, self.connect_timeout)
            self._akwargs = {**kwargs, "socket_timeout": None, "socket_connect_timeout": None}
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None  # made on first use, as the asyncio one
        self._aclient: aredis.Redis | None = None
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._agate = _Gate(max_connections)
        #: What bounds the plain asyncio client's ops (`_aop`), made with it (Python 3.11+).
        self._awatch: _Watch | None = None
        self._aqueued: _Queued | None = None
        self._aflushing: set[asyncio.Task[None]] = set()
        # Cluster only: whether the asyncio client has loaded its slot map (see _aready_wait)
        # and the one load in flight, shared by the callers that find it not loaded yet.
        self._aready = True
        self._ainit: asyncio.Future[Any] | None = None

    @classmethod
    def from_url(
        cls, url: str, *, namespace: str | None = None, codec: Codec | None = None
    ) -> Self:
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

    def _failed(self, exc: BaseException, counted: bool = True) -> None:
        self.errors += counted
        self.breaker.failure(exc)

    def _abandoned(self, probe: bool) -> None:
        """A call ended without an outcome (cancelled). If it was the breaker's half-open
        probe, the breaker must not wait for it forever: another call probes after the
        cooldown."""
        if probe:
            self.breaker.abandon()

    def _unreached(self, what: str) -> None:
        logger.error(
            "%s could not reach %s; it waits in this process's outbox until Redis answers",
            what,
            self.breaker.name,
        )

    def _client_ready(self) -> redis.Redis | None:
        """The sync client, if made (`_run`; else `_connect`)."""
        return self._client

    def _connect(self) -> redis.Redis:
        """The sync client, made on first use, for one command (`_run`)."""
        return self._sync_client()

    def _done(self) -> None:
        """One command on the sync client ended."""

    def _aclient_ready(self) -> aredis.Redis | None:
        """The running loop's asyncio client with a connection slot taken, if that needs no
        waiting (the usual case, `_arun`'s fast path); else None: `_aconnect`."""
        gate = self._agate
        client = self._aclient
        if client is not None and gate.free and self._aready:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return None
            if loop is self._aloop:
                gate.free -= 1
                return client
        return None

    async def _aconnect(self) -> aredis.Redis:
        """The running loop's asyncio client, for one command (`_arun`): its Cluster slot
        map loaded, and one of its ``max_connections`` slots taken (wait for one, at most
        ``slot_wait``: `Busy`); `_adone` gives the slot back."""
        client = self._aclient_here()
        if not self._aready:
            await self._aready_wait(client)
        gate = self._agate
        if gate.free:
            gate.free -= 1
        else:
            await gate.wait(self.slot_wait)
        return client

    def _adone(self) -> None:
        """One command on the asyncio client ended: its slot is free."""
        self._agate.leave()

    def _sync_client(self) -> redis.Redis:
        """The sync client, made on first use (a Cluster client connects when made)."""
        with self._lock:
            if self._client is None:
                # No retries inside redis-py: the breaker decides when to try again, and a
                # retry (redis-py's default is 10, with backoff) would keep callers waiting.
                retry = Retry(NoBackoff(), 0)
                kwargs = {**self._kwargs, "redis_connect_func": self._connected}
                if self.cluster:
                    from redis.cluster import RedisCluster

                    cluster = RedisCluster.from_url(self.url, retry=retry, **kwargs)
                    self._client = cast("redis.Redis", cluster)  # the same commands
                else:
                    self._client = redis.Redis.from_url(self.url, retry=retry, **kwargs)
            return self._client

    def _connected(self, connection: Any) -> None:
        """A new connection (redis-py reconnects silently, after a restart too): learn the
        server's run_id (`_identified`), and have the next read look at the generation
        record at once, in case Redis lost its state. (A Cluster client made the connection
        ready itself before calling this; a plain one leaves that to this function.)"""
        if not self.cluster:
            connection.on_connect()
        reply = None
        if self._identify:
            try:
                connection.send_command("INFO", "server")
                reply = connection.read_response()
            except redis.ResponseError as exc:
                self._unidentified(exc)
        self._identified(connection, reply)

    async def _aconnected(self, connection: Any) -> None:
        """`_connected` for the asyncio client: the op that connects has ``timeout`` from
        now for the handshake and its command (the connect had ``connect_timeout``)."""
        scope = _OP.get()
        if scope is not None:
            when = asyncio.get_running_loop().time() + self.timeout
            reschedule = getattr(scope, "reschedule", None) or scope.update
            reschedule(when)
        await connection.on_connect()
        reply = None
        if self._identify:
            try:
                await connection.send_command("INFO", "server")
                reply = await connection.read_response()
            except redis.ResponseError as exc:
                self._unidentified(exc)
        self._identified(connection, reply)

    def _identified(self, connection: Any, reply: Any) -> None:
        """Note the run_id a new connection's server gave (``reply``: its ``INFO server``;
        None: not asked) when it is not the one this process last had on record for that
        address: the next read looks at the generation record at once, and checks it
        against the record first (`_RESTARTED`). A new connection to the server already on
        record (a burst's, a reconnect after a blip) changes nothing; without a run_id (INFO
        refused) every new connection has the record read again, in case it was a restart."""
        found = None
        if reply is not None:
            text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
            found = _RUN_ID.search(text)
        if found is None:
            self._generation.expire()
            return
        host = getattr(connection, "host", None)
        where = f"{host}:{connection.port}" if host else str(getattr(connection, "path", ""))
        run = found.group(1)
        if self._runs.get(where) != run:
            self._pending_runs[where] = run
            self._generation.expire()

    if TYPE_CHECKING:  # the ops' own (_async/redis.py, and its generated twin)

        def _run(
            self, op: Callable[[Any], T], default: T, long: bool = False, counted: bool = True
        ) -> tuple[T, bool]: ...

        async def _arun(
            self,
            op: Callable[[Any], Awaitable[T]],
            default: T,
            long: bool = False,
            counted: bool = True,
        ) -> tuple[T, bool]: ...

    def _run_command(self, args: tuple[Any, ...], default: Any) -> tuple[Any, bool]:
        """`_arun_command` for the sync client: one command, as `_run`."""
        return self._run(lambda c: c.execute_command(*args), default)

    async def _arun_command(self, args: tuple[Any, ...], default: Any) -> tuple[Any, bool]:
        """One command (``args``, as ``execute_command`` takes them) through the breaker,
        as `_arun`; when every connection slot is taken, queued with the others that wait
        and sent with them in one pipeline (`_Queued`)."""
        gate, breaker, watch = self._agate, self.breaker, self._awatch
        if (
            gate.free
            and watch is not None
            and not breaker.failures
            and asyncio._get_running_loop() is self._aloop
        ):
            # The usual command, in one step (`_arun` and `_aop` inlined: a cached read's
            # whole cost over the client's): a slot free, the breaker closed, this loop's
            # plain client made and watched.
            client, loop = self._aclient, watch.loop
            gate.free -= 1
            watched = _Watched(asyncio.current_task(loop), loop.time() + watch.within)
            watch.ops[watched] = None
            if watched.deadline < watch.at:
                watch.arm(watched.deadline)
            token = _OP.set(watched)
            try:
                result = await client.execute_command(*args)  # type: ignore[union-attr]
            except asyncio.CancelledError:
                if not watched.timed_out():
                    raise
                self._failed(_late(watch.within))
                return default, False
            except FAILURES as exc:
                self._failed(exc)
                return default, False
            finally:
                watch.ops.pop(watched, None)
                _OP.reset(token)
                gate.leave()
            if breaker.failures:  # another op failed meanwhile; this one reached it
                breaker.success()
            return result, True
        if self.cluster or gate.free or (breaker.failures and not breaker.allow()):
            return await self._arun(lambda c: c.execute_command(*args), default)
        queued = self._aqueued
        if queued is None or len(queued.commands) >= _Queued.LIMIT:
            queued = self._aqueued = _Queued()
            task = asyncio.get_running_loop().create_task(self._aflush(queued))
            self._aflushing.add(task)  # held until done (the loop keeps weak references)
            task.add_done_callback(self._aflushing.discard)
        future: asyncio.Future[tuple[Any, bool]] = asyncio.get_running_loop().create_future()
        queued.commands.append(args)
        queued.futures.append(future)
        value, ok = await future
        return (value, True) if ok else (default, False)

    async def _aflush(self, queued: _Queued) -> None:
        """Send ``queued`` as one pipeline once a slot is free; each caller gets its own
        answer (or, for a failure, nothing: the breaker counts the pipeline's once)."""
        futures = queued.futures
        try:

            async def send(c: Any) -> list[Any]:
                if self._aqueued is queued:
                    self._aqueued = None  # from here on, commands start another
                pipe = c.pipeline(transaction=False)
                for args, future in zip(queued.commands, futures, strict=True):
                    if not future.done():  # its caller gave up (cancelled): not sent
                        pipe.execute_command(*args)
                    else:
                        pipe.execute_command("ECHO", b"")  # keeps the answers in place
                return cast("list[Any]", await pipe.execute(raise_on_error=False))

            errors = self.errors
            answers, ok = await self._arun(send, None)
            if self._aqueued is queued:
                self._aqueued = None
            if self.errors > errors:  # it failed: so did every caller's command in it
                self.errors += max(0, sum(not f.done() for f in futures) - 1)
            for i, future in enumerate(futures):
                if future.done():
                    continue
                answer = answers[i] if ok and answers is not None else None
                if isinstance(answer, Exception):
                    self._failed(answer)
                if not ok or isinstance(answer, Exception):
                    future.set_result((None, False))
                else:
                    future.set_result((answer, True))
        finally:
            for future in futures:
                if not future.done():
                    future.set_result((None, False))

    def _op(self, op: Callable[[Any], T], client: Any, long: bool) -> T:
        """Run ``op``: a sync client's commands are bounded by its socket timeout."""
        return op(client)

    async def _aop(self, op: Callable[[Any], Awaitable[T]], client: Any, long: bool) -> T:
        """Run ``op`` within its deadline: ``timeout`` (at least ``connect_timeout``, for an
        op that has to connect first), renewed when a new connection's handshake starts;
        `LONG_OP` for a ``long`` one. One timer among every op (`_Watch`): redis-py's socket
        timeout would cost every command a task (the write's ``wait_for``), a tenth of a
        loopback GET, so the plain asyncio client has none; a Cluster client keeps
        redis-py's."""
        within = self._op_within
        if within is None:
            return await op(client)
        within = LONG_OP if long else within
        watch = self._awatch
        if watch is None:  # Python 3.10: async-timeout's timer an op
            async with _deadline(within) as scope:
                token = _OP.set(scope)
                try:
                    return await op(client)
                finally:
                    _OP.reset(token)
        watched = watch.start(within)
        token = _OP.set(watched)
        try:
            return await op(client)
        except asyncio.CancelledError:
            if watched.timed_out():
                raise _late(within) from None
            raise
        finally:
            watch.end(watched)
            _OP.reset(token)

    def _owner(self) -> object:
        """Whose generation read a sync caller may join: any thread's."""
        return None

    def _aowner(self) -> object:
        """Whose generation read an async caller may join: one in its own event loop."""
        return asyncio._get_running_loop()

    def _unidentified(self, exc: Exception) -> None:
        """``INFO`` refused (an ACL without it): restarts are then seen only through the
        record going back or vanishing, not through a dump that holds it unchanged."""
        self._identify = False
        logger.warning(
            "%s refused INFO (%s): a restart from a dump saved before an invalidation can "
            "go unnoticed; allow INFO to this user (+info)",
            self.breaker.name,
            type(exc).__name__,
        )

    def _restarted(self, where: str, run: str, answer: Any) -> None:
        """The run_id of ``where`` is on record (``answer``: what `_RESTARTED` said)."""
        if self._pending_runs.get(where) == run:
            del self._pending_runs[where]
        self._runs[where] = run
        if answer == 1:
            self.losses += 1
            logger.warning(
                "%s restarted or failed over (%s has a new run_id): entries written before "
                "are purged, since it may have come back from before an invalidation",
                self.breaker.name,
                where,
            )

    def _aclient_here(self) -> aredis.Redis:
        """The asyncio client of the running loop, made on first use there."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ConfigError(
                "the Redis store's async calls need asyncio (redis-py's asyncio client); "
                "on trio, use it through isr.ISR (which runs its sync calls in threads), or "
                "call its sync methods"
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
                    self.url,
                    retry=retry,
                    max_connections=self.max_connections,
                    redis_connect_func=self._aconnected,
                    **self._akwargs,
                )
            self._aclient, self._aloop = client, loop
            self._agate = _Gate(self.max_connections)
            if self._op_within is not None and sys.version_info >= (3, 11):
                self._awatch = _Watch(loop, self._op_within)
            self._aqueued = None
        return client

    def subscriber_client(self) -> redis.Redis:
        """A new sync client of its own, for an L1's pub/sub bus: a subscription holds its
        connection, and waits on it longer than a command's timeout."""
        kwargs = {**self._kwargs, "socket_timeout": max(5.0, self.timeout)}
        if self.cluster:
            from redis.cluster import RedisCluster

            return cast("redis.Redis", RedisCluster.from_url(self.url, **kwargs))
        return redis.Redis.from_url(self.url, **kwargs)

    def ready(self, timeout: float) -> bool:
        """Whether Redis answers (a PING, tried until ``timeout`` seconds have passed):
        what ``ISR.wait_ready`` reports. A probe: a failure is not counted as a store error,
        and an answer puts the store back in use at once if its breaker was open."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._connect().ping():
                    self.breaker.success()
                    return True
            except FAILURES:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(0.05, left))

    def holders(self, key: str, ids: Sequence[str], within: float) -> dict[str, bool] | None:
        """`isr.adapters.base.Adapter.holders` over the bus: the question published on
        ``{ns}:ask``, the answers read from the hash each instance's bus writes them into,
        every 10 ms until all of ``ids`` answered or ``within`` passed. None: Redis could
        not be asked."""
        qid = secrets.token_hex(8)
        answers = self._ask + qid
        _, sent = self._run(lambda c: c.publish(self.ask_channel, f"{qid} {key}"), None)
        if not sent:
            return None
        wanted, found = set(ids), {}
        deadline = time.monotonic() + within
        while True:
            raw, _ = self._run(lambda c: c.hgetall(answers), None)
            for name, held in (raw or {}).items():
                found[name.decode() if isinstance(name, bytes) else str(name)] = held in (b"1", "1")
            if wanted <= found.keys() or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        self._run(lambda c: c.delete(answers), None)
        return {i: found[i] for i in ids if i in found}

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

    def _reading(self, key: str, data: bytes | None, reached: bool) -> tuple[Entry | None, bool]:
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

    def _mget(self, client: Any, names: list[str]) -> Any:
        """MGET ``names`` (a Cluster's keys lie on several nodes: its own non-atomic MGET)."""
        if self.cluster:
            return client.mget_nonatomic(names)
        return client.mget(names)

    def _hint(self, key: str, tags: tuple[str, ...]) -> None:
        hints = self._tag_hints
        if len(hints) >= _HINTS_KEPT:
            hints.clear()
        hints[key] = tags

    def _tag_read(self, tags: tuple[str, ...], records: list[Any]) -> None:
        """Keep the tag records just read (one per tag) for `_FINISH`."""
        known = self._tag_records
        if len(known) >= _HINTS_KEPT:
            known.clear()
        for tag, record in zip(tags, records, strict=False):
            known[tag] = record

    def _finishing(
        self, key: str, entry: Entry, since: float, token: str
    ) -> tuple[list[str], list[Any]] | None:
        """`_FINISH`'s keys and arguments for storing ``entry`` (stamped here with the tag
        numbers it carries), or None where it cannot serve (a Cluster's keys lie on several
        nodes; the key had other tags before; a tag's record never read here)."""
        if self.cluster:
            return None
        tags = entry.tags
        had = self._tag_hints.get(key, ())
        if any(tag not in tags for tag in had):
            return None
        known = self._tag_records
        if any(tag not in known for tag in tags):
            return None
        records = [known[tag] for tag in tags]
        entry.tagv = tag_numbers(records)
        data = self.codec.dumps(self._e + key, entry)
        px = _expiry_ms(entry)
        keys = [
            self._e + key,
            self._l + key,
            *self._markers(key, tags),
            *(self._v + tag for tag in tags),
            *(self._t + tag for tag in tags),
        ]
        argv: list[Any] = [data, "" if px is None else px, repr(since), token, key, len(tags)]
        argv.extend(b"" if record is None else record for record in records)
        return keys, argv

    def _markers(self, key: str, tags: tuple[str, ...]) -> list[str]:
        return [self._i + "key:" + key, *(self._i + "tag:" + tag for tag in tags)]

    def _bumped(self, mode: Mode, fields: list[Any] | None) -> Generation:
        """The record after a bump (``fields``, Redis's answer); None: Redis could not be
        reached: `isr.StoreUnavailable` (the runtime keeps it in its outbox, and has this
        process obey it at once: `forget_local`)."""
        if fields is None:
            self._unreached(f"invalidate_all({mode.name.lower()})")
            raise StoreUnavailable(
                f"invalidate_all({mode.name.lower()}) could not reach {self.breaker.name}"
            )
        return self._seen(_generation(fields))

    def forget_local(self, kind: str, name: str, mode: Mode) -> None:
        """An invalidate-all Redis could not take: this process's copy of the record moves
        on (its own clock, above everything it saw), so it obeys at once; the outbox moves
        Redis's on later, above this. Keys and tags: nothing of theirs is kept here."""
        if kind == "all":
            now = int(time.time() * 1000)
            self._seen(self._generation.value.bumped(mode, now, self._known.current))

    def _seen(self, value: Generation) -> Generation:
        """Keep ``value`` as the record read or written now; remember the most seen."""
        self._known = self._known.merged(value)
        record = self._generation.update(value)
        return record

    def _lost(self, fields: list[Any]) -> bool:
        """Whether the record Redis gave (``fields``) shows it lost its state: the record
        vanished (a restart without persistence, a flush, an eviction) or went back (a
        restart from an old dump, a failover) below what this process saw. Counted in
        ``losses``; the caller gives Redis the record back (`_RESTORE`)."""
        known = self._known
        if not known.current or _generation(fields).current >= known.current:
            return False
        self.losses += 1
        logger.warning(
            "%s lost its invalidation record (it %s); giving it back what this process "
            "saw, and re-applying this process's recent invalidations",
            self.breaker.name,
            "vanished" if fields[0] is None else "went back",
        )
        return True

    # ------------------------------------------------------------------ coherence

    def _publishing(self, kind: str, mode: str, name: str) -> Callable[[Any], Any]:
        """The command numbering an invalidation and publishing it on the bus (see
        ``isr.adapters.redis_bus``), for either client."""
        payload = f"{self.sender} {kind} {mode} {name}"
        epoch_key, channel = self.epoch_key, self.bus_channel
        return lambda c: c.eval(PUBLISH, 1, epoch_key, channel, payload)

    def _published(self, answer: Any, kind: str, name: str) -> int:
        """The epoch a publish was given (`_publishing`'s answer, None: not published,
        `isr.StoreUnavailable`, so the runtime's outbox tells the others later)."""
        if answer is None:
            raise self._unavailable(f"telling the other instances of {kind} {name!r}")
        epoch = int(answer)
        if self.published is None or epoch > self.published:
            self.published = epoch
        return epoch

    def _beating(self, instance: Instance) -> Callable[[Any], Any]:
        applied = "" if instance.applied is None else str(instance.applied)
        key, record = self._n, instance_record(instance)
        return lambda c: c.eval(_BEAT, 1, key, instance.id, record, applied)

    def _registry(self, fields: Any, now: float) -> tuple[list[Instance], list[str]]:
        """The live instances in the registry hash's ``fields`` (HGETALL's answer), and
        the fields of records long silent (or unreadable) to delete."""
        raw = {
            (k.decode() if isinstance(k, bytes) else str(k)): v for k, v in (fields or {}).items()
        }
        live: list[Instance] = []
        stale: list[str] = []
        for name, value in raw.items():
            if not name.startswith("r:"):
                if name.startswith("a:") and "r:" + name[2:] not in raw:
                    stale.append(name)
                continue
            iid = name[2:]
            found = instance_from(value, parse_epoch(raw.get("a:" + iid)))
            if found is None or found.id != iid or is_stale(found, now):
                stale += [name, "a:" + iid]
            elif is_live(found, now):
                live.append(found)
        return sorted(live, key=lambda i: i.id), stale

    def _outside_log(self, names: list[Any], first: Any) -> list[Any]:
        """Of the confirmations hash's field ``names``, those older than the log's first
        entry (``first``: XRANGE's answer for one), or all when the log is empty."""
        if not first:
            return list(names)
        oldest = _stream_id(first[0][0])
        return [name for name in names if _stream_id(name) < oldest]

    def _logged(self, entries: Any, confirmations: Any) -> list[LoggedInvalidation]:
        """The log's stream ``entries`` (XREVRANGE's answer) with their ``confirmations``
        (HMGET's, in the same order); unreadable records left out."""
        out: list[LoggedInvalidation] = []
        for (sid, fields), conf in zip(entries or [], confirmations or [], strict=False):
            iid = sid.decode() if isinstance(sid, bytes) else str(sid)
            record = (fields or {}).get(b"r", (fields or {}).get("r"))
            logged = LoggedInvalidation.from_record(iid, record, Confirmation.from_record(conf))
            if logged is not None:
                out.append(logged)
        return out

    def _unavailable(self, what: str) -> StoreUnavailable:
        self._unreached(what)
        return StoreUnavailable(f"{what} could not reach {self.breaker.name}")

    def close(self) -> None:
        """Close the sync client; an asyncio client is closed by `aclose` (in its loop)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close both clients (the asyncio one only if it belongs to the running loop)."""
        client, loop = self._aclient, self._aloop
        self._drop_aclient()
        if client is not None and loop is asyncio._get_running_loop():
            await client.aclose()
        self.close()
