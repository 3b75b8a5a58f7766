"""Invalidations between instances over Redis pub/sub, with an epoch so none is lost unseen.

Pub/sub is fire-and-forget: a subscriber that is disconnected (a network blip, a Redis
restart, ``CLIENT KILL TYPE pubsub``) simply misses what was published meanwhile. So every
message is numbered: one Lua script moves ``{ns}:epoch`` on and publishes the new number
with the one before it, atomically (`PUBLISH`; the numbers are Redis's clock in
milliseconds, never going back, so a counter Redis lost starts again above every number
seen). A subscriber that gets a message whose previous number is not the last it saw,
reconnects after a drop, or finds on its periodic check (every ``epoch_poll`` seconds) the
counter elsewhere than the last message left it, knows it may have missed something and
calls ``on_resync`` (the L1 then drops everything it holds). While it is not subscribed it
calls ``on_lost`` at once (the L1 then serves nothing unchecked), and it resubscribes after
50 ms, doubling only while attempts fail in a row. So a value invalidated elsewhere is
served by an instance for at most ``epoch_poll`` seconds after a lost message, and not at
all while its subscription is down.

**Acknowledgements.** Each epoch an instance has applied (its L1 dropped what the message
covers, or resynced, which applies everything before it) is recorded as "applied up to E" in
the namespace's registry hash (``{ns}:n``, field ``a:<instance id>``, never lowered) and
published on ``{ns}:ack`` as ``"<instance id> <E>"`` (`ACK`, one command); every bus keeps
the latest it heard per instance (``acks``), which is what `isr.ISR.confirm` waits on. An
instance's own messages count too: its L1 obeyed before it published.

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

__all__ = ["ACK", "PUBLISH", "Message", "RedisBus"]

logger = logging.getLogger("isr")

#: Number the message and publish it with the number before it: "<epoch> <prev> <payload>".
#: An epoch is a time in milliseconds on Redis's clock that never goes back (above the one
#: before it), so a counter Redis lost (a restart, an eviction, a DEL) starts again above
#: every epoch a subscriber saw, and no new message is taken for an old one.
PUBLISH = """
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prev = redis.call('GET', KEYS[1]) or '0'
local epoch = string.format('%.0f', math.max(tonumber(prev) + 1, now))
redis.call('SET', KEYS[1], epoch)
redis.call('PUBLISH', ARGV[1], epoch .. ' ' .. prev .. ' ' .. ARGV[2])
return epoch
"""

#: An acknowledgement: "this instance applied everything up to epoch" in the registry hash
#: (never lowered), and published on the ack channel for the confirmations waiting.
ACK = """
local now = redis.call('HGET', KEYS[1], 'a:' .. ARGV[1])
if not now or tonumber(ARGV[2]) > tonumber(now) then
  redis.call('HSET', KEYS[1], 'a:' .. ARGV[1], ARGV[2])
end
redis.call('PUBLISH', ARGV[3], ARGV[1] .. ' ' .. ARGV[2])
return 1
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
        sender: str | None = None,
        on_ask: Callable[[str], bool] = lambda key: False,
    ) -> None:
        self._factory = client_factory
        self.channel = f"{namespace}:bus"
        self.ack_channel = f"{namespace}:ack"
        #: Questions from `isr explain` ("<question id> <key>": does your L1 hold the key?),
        #: answered into the hash ``{ns}:ask:<question id>`` under this instance's id.
        self.ask_channel = f"{namespace}:ask"
        self._ask_prefix = f"{namespace}:ask:"
        self._on_ask = on_ask
        self._registry = f"{namespace}:n"
        self._epoch_key = f"{namespace}:epoch"
        self._on_message = on_message
        self._on_resync = on_resync
        self._on_lost = on_lost
        self.epoch_poll = epoch_poll
        self.sender = sender or uuid.uuid4().hex[:16]
        self.last_epoch: int | None = None
        #: The highest epoch this instance has applied (dropped what it covers, or resynced).
        self.applied: int | None = None
        #: This instance's id in the registry, once its runtime has registered it: from
        #: then on each epoch applied is acknowledged (`ACK`).
        self.instance_id: str | None = None
        #: The epochs each instance acknowledged, as heard on the ack channel, which the
        #: bus listens to once this instance's runtime first asks for a confirmation
        #: (`listen_to_acks`): the others' acknowledgements are no other instance's business.
        self.acks: dict[str, int] = {}
        self._want_acks = threading.Event()
        #: Set once the ack channel is subscribed (cleared while the bus is not).
        self.hearing_acks = threading.Event()
        self.acked = 0
        self.received = 0
        self.resyncs = 0
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="isr-bus", daemon=True)
        self._thread.start()

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
            pubsub.subscribe(self.channel, self.ask_channel)
            epoch = self._epoch(client)
            if self.last_epoch is not None:
                # Reconnected: whatever was published while away is lost to us.
                self._resync("the subscription was re-established", epoch)
            else:
                # First subscription: anything cached before it (say, while Redis was
                # unreachable at start-up) may have missed invalidations too.
                self._on_resync("first subscription")
            self.last_epoch = epoch
            self._applied(client, epoch)
            self.connected.set()
            next_check = time.monotonic() + self.epoch_poll
            while not self._stop.is_set():
                if self._want_acks.is_set() and not self.hearing_acks.is_set():
                    pubsub.subscribe(self.ack_channel)
                    self.hearing_acks.set()
                wait = max(0.0, min(0.1, next_check - time.monotonic()))
                raw = pubsub.get_message(timeout=wait)
                if raw is not None:
                    self._handle(raw, client)
                if time.monotonic() >= next_check:
                    self._check(client, pubsub)
                    next_check = time.monotonic() + self.epoch_poll
        finally:
            self.hearing_acks.clear()
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
                self._applied(client, epoch)
                break
            self._handle(raw, client)

    def _handle(self, raw: dict[str, Any], client: redis.Redis) -> None:
        if raw.get("type") != "message":
            return
        data = raw["data"]
        text = data.decode() if isinstance(data, bytes) else str(data)
        channel = raw.get("channel")
        if channel == self.ack_channel or channel == self.ack_channel.encode():
            self._heard_ack(text)
            return
        if channel == self.ask_channel or channel == self.ask_channel.encode():
            self._asked(text, client)
            return
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
        elif sender != self.sender:
            self.received += 1
            self._on_message(Message(epoch, prev, sender, kind, mode, name))
        self._applied(client, epoch)  # this instance's own: its L1 obeyed before publishing

    def _applied(self, client: redis.Redis, epoch: int) -> None:
        """Everything up to ``epoch`` is applied here: say so (`ACK`) once this instance
        is registered (before, its heartbeat's record carries ``applied``)."""
        if self.applied is None or epoch > self.applied:
            self.applied = epoch
        if self.instance_id is not None:
            self._ack(client, epoch)

    def _ack(self, client: redis.Redis, epoch: int) -> None:
        iid = self.instance_id
        if iid is None:
            return
        try:
            client.eval(ACK, 1, self._registry, iid, epoch, self.ack_channel)
            self.acked += 1
        except _FAILURES as exc:
            # The next message's, or the heartbeat's record, says it; logged, not raised:
            # a confirmation waiting for it reports this instance missing at worst.
            logger.warning("invalidation bus: acknowledgement failed (%s)", type(exc).__name__)

    def _asked(self, text: str, client: redis.Redis) -> None:
        """Answer a question of `isr explain`: whether this instance's L1 holds a key (a
        registered instance only: the asker knows the live ones by their ids)."""
        qid, _, key = text.partition(" ")
        iid = self.instance_id
        if iid is None or not key or not qid.isalnum() or len(qid) > 32:
            return
        try:
            pipe = client.pipeline(transaction=False)
            pipe.hset(self._ask_prefix + qid, iid, "1" if self._on_ask(key) else "0")
            pipe.pexpire(self._ask_prefix + qid, 10_000)
            pipe.execute()
        except _FAILURES as exc:
            logger.warning("invalidation bus: could not answer explain (%s)", type(exc).__name__)

    def listen_to_acks(self) -> bool:
        """Have the bus listen to the acknowledgements from now on; whether it already
        does (until then, a confirmation reads the registry)."""
        self._want_acks.set()
        return self.hearing_acks.is_set()

    def _heard_ack(self, text: str) -> None:
        iid, _, epoch_text = text.rpartition(" ")
        try:
            epoch = int(epoch_text)
        except ValueError:
            return
        if iid and epoch > self.acks.get(iid, 0):
            self.acks[iid] = epoch

    def _resync(self, why: str, epoch: int) -> None:
        self.resyncs += 1
        self.last_epoch = epoch
        logger.warning("invalidation bus: %s; dropping this instance's L1", why)
        self._on_resync(why)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
