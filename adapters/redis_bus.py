"""Invalidations between instances over Redis pub/sub, with an epoch so none is lost unseen.

Pub/sub is fire-and-forget: a subscriber that is disconnected (a network blip, a Redis
restart, ``CLIENT KILL TYPE pubsub``) simply misses what was published meanwhile. So every
message is numbered: one Lua script moves ``{ns}:epoch`` on and publishes the new number
with the one before it, atomically (`_PUBLISH`; the numbers are Redis's clock in
milliseconds, never going back, so a counter Redis lost starts again above every number
seen). A subscriber that gets a message whose previous number is not the last it saw,
reconnects after a drop, or finds on its periodic check (every ``epoch_poll`` seconds) the
counter elsewhere than the last message left it, knows it may have missed something and
calls ``on_resync`` (the L1 then drops everything it holds). While it is not subscribed it
calls ``on_lost`` at once (the L1 then serves nothing unchecked), and it resubscribes after
50 ms, doubling only while attempts fail in a row. So a value invalidated elsewhere is
served by an instance for at most ``epoch_poll`` seconds after a lost message, and not at
all while its subscription is down.

The bus runs in one daemon thread with its own connections (redis-py's sync client), so it
works the same under asyncio, trio and plain threads.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import redis
from redis.exceptions import RedisError

from isr._errors import StoreUnavailable

__all__ = ["Message", "RedisBus"]

logger = logging.getLogger("isr")

#: Number the message and publish it with the number before it: "<epoch> <prev> <payload>".
#: An epoch is a time in milliseconds on Redis's clock that never goes back (above the one
#: before it), so a counter Redis lost (a restart, an eviction, a DEL) starts again above
#: every epoch a subscriber saw, and no new message is taken for an old one.
_PUBLISH = """
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prev = redis.call('GET', KEYS[1]) or '0'
local epoch = string.format('%.0f', math.max(tonumber(prev) + 1, now))
redis.call('SET', KEYS[1], epoch)
redis.call('PUBLISH', ARGV[1], epoch .. ' ' .. prev .. ' ' .. ARGV[2])
return epoch
"""

_FAILURES = (RedisError, OSError, TimeoutError)
#: The delay before resubscribing after a failure, doubling while failures follow each
#: other; back to the first after a subscription that worked.
_FIRST_DELAY = 0.05
_LAST_DELAY = 2.0


@dataclass(frozen=True)
class Message:
    """One invalidation another instance made: ``kind`` is ``key``, ``tag`` or ``all``."""

    epoch: int
    prev: int
    sender: str
    kind: str
    mode: str
    name: str


class RedisBus:
    """Publishes this instance's invalidations and hands the others' to ``on_message``."""

    def __init__(
        self,
        client_factory: Callable[[], redis.Redis],
        namespace: str,
        *,
        on_message: Callable[[Message], None],
        on_resync: Callable[[str], None],
        on_lost: Callable[[], None] = lambda: None,
        epoch_poll: float = 1.0,
    ) -> None:
        self._factory = client_factory
        self.channel = f"{namespace}:bus"
        self._epoch_key = f"{namespace}:epoch"
        self._on_message = on_message
        self._on_resync = on_resync
        self._on_lost = on_lost
        self.epoch_poll = epoch_poll
        self.sender = uuid.uuid4().hex[:16]
        self.last_epoch: int | None = None
        self.received = 0
        self.resyncs = 0
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="isr-bus", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ publishing

    def publishing(self, kind: str, mode: str, name: str = "") -> Callable[[Any], Any]:
        """The command telling the other instances, for a sync or an asyncio client: the
        store runs it (through its breaker and timeouts); on failure, `unpublished`."""
        payload = f"{self.sender} {kind} {mode} {name}"
        return lambda client: client.eval(_PUBLISH, 1, self._epoch_key, self.channel, payload)

    def unpublished(self, kind: str, name: str) -> StoreUnavailable:
        """The error for a `publishing` command the store could not run (it logged why)."""
        return StoreUnavailable(
            f"could not tell the other instances of the invalidation of {kind} {name!r} "
            "(Redis failed or is out of use)"
        )

    # ------------------------------------------------------------------ subscribing

    def _run(self) -> None:
        delay = _FIRST_DELAY
        while not self._stop.is_set():
            failure = self._session()
            if self.connected.is_set():
                delay = _FIRST_DELAY  # it had subscribed: try again promptly
            self.connected.clear()
            self._on_lost()
            if failure is None or self._stop.is_set():
                continue
            logger.warning(
                "invalidation bus lost its subscription (%s: %s); resubscribing",
                type(failure).__name__,
                failure,
            )
            self._stop.wait(delay)
            delay = min(delay * 2, _LAST_DELAY)

    def _session(self) -> BaseException | None:
        """One subscription, until it fails (returned) or the bus stops (None)."""
        try:
            self._listen()
        except _FAILURES as exc:
            return exc
        return None

    def _listen(self) -> None:
        client = self._factory()
        pubsub = cast(Any, client).pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.channel)
            epoch = self._epoch(client)
            if self.last_epoch is not None:
                # Reconnected: whatever was published while away is lost to us.
                self._resync("the subscription was re-established", epoch)
            else:
                # First subscription: anything cached before it (say, while Redis was
                # unreachable at start-up) may have missed invalidations too.
                self._on_resync("first subscription")
            self.last_epoch = epoch
            self.connected.set()
            next_check = time.monotonic() + self.epoch_poll
            while not self._stop.is_set():
                wait = max(0.0, min(0.1, next_check - time.monotonic()))
                raw = pubsub.get_message(timeout=wait)
                if raw is not None:
                    self._handle(raw)
                if time.monotonic() >= next_check:
                    self._check(client, pubsub)
                    next_check = time.monotonic() + self.epoch_poll
        finally:
            pubsub.close()
            client.close()

    def _epoch(self, client: redis.Redis) -> int:
        return int(client.get(self._epoch_key) or 0)

    def _check(self, client: redis.Redis, pubsub: Any) -> None:
        """Is the counter where the last message seen left it? Else, once the messages on
        their way are read, some were lost (or the counter was: a restart, an eviction)."""
        epoch = self._epoch(client)
        while self.last_epoch is not None and epoch != self.last_epoch:
            raw = pubsub.get_message(timeout=0.05) if epoch > self.last_epoch else None
            if raw is None:
                self._resync("messages were lost", epoch)
                break
            self._handle(raw)

    def _handle(self, raw: dict[str, Any]) -> None:
        if raw.get("type") != "message":
            return
        data = raw["data"]
        text = data.decode() if isinstance(data, bytes) else str(data)
        try:
            epoch_text, prev_text, sender, kind, mode, name = text.split(" ", 5)
            epoch, prev = int(epoch_text), int(prev_text)
        except ValueError:
            logger.warning("invalidation bus: ignored a malformed message %r", text[:200])
            return
        last = self.last_epoch
        if last is not None and epoch <= last:
            return  # already seen (or from before a resync)
        self.last_epoch = epoch
        if last is not None and prev != last:
            self._resync("a message was skipped", epoch)
            return
        if sender != self.sender:
            self.received += 1
            self._on_message(Message(epoch, prev, sender, kind, mode, name))

    def _resync(self, why: str, epoch: int) -> None:
        self.resyncs += 1
        self.last_epoch = epoch
        logger.warning("invalidation bus: %s; dropping this instance's L1", why)
        self._on_resync(why)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
