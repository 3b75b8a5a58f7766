"""Invalidations between instances over Redis pub/sub, with an epoch so none is lost unseen.

Pub/sub is fire-and-forget: a subscriber that is disconnected (a network blip, a Redis
restart, ``CLIENT KILL TYPE pubsub``) simply misses what was published meanwhile. So every
message is numbered: one Lua script increments ``{ns}:epoch`` and publishes the new number
with the message, atomically. A subscriber that sees a number skip, reconnects after a drop,
or finds on its periodic check (every ``epoch_poll`` seconds) that the counter moved past the
last message it saw, knows it may have missed something and calls ``on_resync`` (the L1 then
drops everything it holds). A lost invalidation is therefore noticed within ``epoch_poll``
seconds, plus the time to notice a dropped connection (immediate for a killed one).

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

__all__ = ["Message", "RedisBus"]

logger = logging.getLogger("isr")

_PUBLISH = """
local epoch = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], epoch .. ' ' .. ARGV[2])
return epoch
"""

_FAILURES = (RedisError, OSError, TimeoutError)


@dataclass(frozen=True)
class Message:
    """One invalidation another instance made: ``kind`` is ``key``, ``tag`` or ``all``."""

    epoch: int
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
        epoch_poll: float = 1.0,
    ) -> None:
        self._factory = client_factory
        self.channel = f"{namespace}:bus"
        self._epoch_key = f"{namespace}:epoch"
        self._on_message = on_message
        self._on_resync = on_resync
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

    def unpublished(self, kind: str, name: str) -> None:
        """Log that the store could not run `publishing`'s command (it logged why)."""
        logger.error(
            "could not publish the invalidation of %s %r (Redis failed or is out of use); "
            "the other instances will notice within their epoch poll once Redis is back",
            kind,
            name,
        )

    # ------------------------------------------------------------------ subscribing

    def _run(self) -> None:
        delay = 0.05
        while not self._stop.is_set():
            failure = self._session()
            self.connected.clear()
            if failure is None or self._stop.is_set():
                delay = 0.05
                continue
            logger.warning(
                "invalidation bus lost its subscription (%s: %s); resubscribing",
                type(failure).__name__,
                failure,
            )
            self._stop.wait(delay)
            delay = min(delay * 2, 2.0)

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
        """The counter moved past the last message seen, and no message is on its way?"""
        epoch = self._epoch(client)
        while self.last_epoch is not None and epoch > self.last_epoch:
            raw = pubsub.get_message(timeout=0.05)  # one may be in flight: read it first
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
            epoch_text, sender, kind, mode, name = text.split(" ", 4)
            epoch = int(epoch_text)
        except ValueError:
            logger.warning("invalidation bus: ignored a malformed message %r", text[:200])
            return
        last = self.last_epoch
        if last is not None and epoch <= last:
            return  # already seen (or from before a resync)
        self.last_epoch = epoch
        if last is not None and epoch > last + 1:
            self._resync("a message was skipped", epoch)
            return
        if sender != self.sender:
            self.received += 1
            self._on_message(Message(epoch, sender, kind, mode, name))

    def _resync(self, why: str, epoch: int) -> None:
        self.resyncs += 1
        self.last_epoch = epoch
        logger.warning("invalidation bus: %s; dropping this instance's L1", why)
        self._on_resync(why)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
