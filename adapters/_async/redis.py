"""The Redis store's operations, written once for async code and generated for sync code.

Written once: ``isr/adapters/_sync/redis.py`` is generated from ``isr/adapters/_async/redis.py``
by ``python -m tests.unasync`` (``aget`` becomes ``get`` and so on, ``async``/``await`` go;
the test command fails when the two are out of step). Edit the async one, then regenerate.

Every operation is one or a few commands run by `_arun`, through the circuit breaker: an
unreachable or failing Redis gives the operation's safe answer instead of an error (see
``isr.adapters.redis``). The commands themselves are the same for both clients; only the
awaiting differs.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from isr._coherence import Confirmation, Instance, LoggedInvalidation
from isr._entry import Entry, Generation, Mode
from isr._synchronization import AsyncEvent

from .._redis_base import (
    _BUMP,
    _FIELDS,
    _FINISH,
    _NOTE,
    _RELEASE,
    _RESTARTED,
    _RESTORE,
    _TAG,
    _TAKE,
    CONFIRMATIONS_SLACK,
    FAILURES,
    Busy,
    RedisBase,
    _expiry_ms,
    _generation,
    _members,
)
from ..names import checked, checked_all
from ..records import strongest, tag_mark, tag_numbers

if TYPE_CHECKING:
    from redis.asyncio import Redis as AsyncRedis

__all__ = ["AsyncRedisOps"]

T = TypeVar("T")


class AsyncRedisOps(RedisBase):
    """The store operations of `isr.adapters.redis.RedisAdapter` (see the module docstring)."""

    async def _arun(
        self,
        op: Callable[[AsyncRedis], Awaitable[T]],
        default: T,
        long: bool = False,
        counted: bool = True,
    ) -> tuple[T, bool]:
        """``op`` on the client through the breaker: (its answer, True), or (``default``,
        False) if Redis is out of use or the call failed. ``long``: an op whose answer may
        be large (a tag's whole set), allowed `LONG_OP` seconds rather than ``timeout``.
        ``counted``: a failure counts in ``errors`` (not a heartbeat's: no caller's)."""
        breaker = self.breaker
        if breaker.failures and not breaker.allow():
            return default, False
        probe = breaker.is_open
        try:
            client = self._aclient_ready()
            if client is None:
                client = await self._aconnect()
            try:
                result = await self._aop(op, client, long)
            finally:
                self._adone()
        except FAILURES as exc:
            self._failed(exc, counted)
            return default, False
        except Busy:  # swamped, not failing: the caller acts as if unreached, uncounted
            self._abandoned(probe)
            return default, False
        except BaseException:
            self._abandoned(probe)
            raise
        breaker.success()
        return result, True

    async def acommand(
        self, op: Callable[[AsyncRedis], Awaitable[T]], default: T
    ) -> tuple[T, bool]:
        """A command of the caller's (the L1 publishes its invalidations with it), run like
        the store's own: ``op`` must work on either client (one command, no awaits of its
        own), so that on trio its sync twin can run it in a thread."""
        return await self._arun(op, default)

    async def aget(self, key: str) -> Entry | None:
        if self._tag_hints.get(key):
            return (await self.aread(key))[0]
        # `aread`'s usual read, with no step between the caller and the command.
        name = self._e + checked(key)
        data, reached = await self._arun_command(("GET", name), None)
        entry = self._decode(key, data)
        if entry is None or not entry.tags:
            return entry
        return (await self._atag_marked(key, entry, reached, None, None))[0]

    async def aread(self, key: str) -> tuple[Entry | None, bool]:
        """`get`, and whether this read had Redis's word on ``key``: (None, True) is a key
        Redis does not hold (or whose entry a tag's purge reached); (None, False) one it
        could not be asked about, or whose record the codec refused. An entry carrying tags
        comes marked by any invalidation of them since it was stored (their records, read
        in the same round trip when this process knows the key's tags)."""
        name = self._e + checked(key)
        tags = self._tag_hints.get(key)
        records: list[Any] | None = None
        if not tags:
            data, reached = await self._arun_command(("GET", name), None)
        else:
            names = [name, *(self._v + tag for tag in tags)]
            if self.cluster:
                found, reached = await self._arun(lambda c: self._mget(c, names), None)
            else:
                found, reached = await self._arun_command(("MGET", *names), None)
            data, records = (found[0], found[1:]) if found else (None, None)
        entry, reached = self._reading(key, cast("bytes | None", data), reached)
        if entry is None or not entry.tags:  # the usual hit: no further step
            return entry, reached
        return await self._atag_marked(key, entry, reached, tags, records)

    async def _atag_marked(
        self,
        key: str,
        entry: Entry,
        reached: bool,
        tags: tuple[str, ...] | None,
        records: list[Any] | None,
    ) -> tuple[Entry | None, bool]:
        """``entry``, read from Redis, as its tags' records say (``records``: those of the
        ``tags`` this process expected it to carry, read with it)."""
        if entry.tags != tags:  # first read here (or retagged): its tags' records now
            self._hint(key, entry.tags)
            names = [self._v + tag for tag in entry.tags]
            records, ok = await self._arun(lambda c: self._mget(c, names), None)
            if not ok:
                return None, False  # unverified: as if Redis could not be asked
        self._tag_read(entry.tags, records or [])
        return tag_mark(entry, records or ()), reached

    async def aset(self, key: str, entry: Entry) -> None:
        await self._awrite(key, entry)

    async def _awrite(self, key: str, entry: Entry, dropped: tuple[str, ...] = ()) -> bool:
        """Store ``entry`` (and index its tags; take the key out of the sets of its
        ``dropped`` tags, ones an earlier entry had); whether Redis took it."""
        checked_all(entry.tags)
        data = self.codec.dumps(self._e + checked(key), entry)  # a CodecError: nothing written
        px = _expiry_ms(entry)

        async def write(c: AsyncRedis) -> object:
            if not entry.tags and not dropped:
                return await c.set(self._e + key, data, px=px)
            if self.cluster:  # its pipelines may reorder: entry first
                await c.set(self._e + key, data, px=px)
            pipe = c.pipeline(transaction=False)
            if not self.cluster:
                pipe.set(self._e + key, data, px=px)
            for tag in entry.tags:
                pipe.sadd(self._t + tag, key)
            for tag in dropped:
                pipe.srem(self._t + tag, key)
            return await pipe.execute()

        _, ok = await self._arun(write, None)
        return ok

    async def astore(self, key: str, entry: Entry, since: float) -> Entry | None:
        """`isr.adapters.base.Adapter.store` on Redis: one round trip reads the markers of
        the key and its tags (invalidations since ``since``) and the tags' records (the
        numbers the entry carries), one writes it."""
        checked(key)
        checked_all(entry.tags)
        markers = self._markers(key, entry.tags)
        names = [*markers, *(self._v + tag for tag in entry.tags)]
        found, _ = await self._arun(lambda c: self._mget(c, names), None)
        if found is not None:
            mode = strongest(found[: len(markers)], since)
            if mode is Mode.PURGE:
                return None
            if mode is not None:
                entry = entry.marked(mode)
            self._tag_read(entry.tags, found[len(markers) :])
            entry.tagv = tag_numbers(found[len(markers) :])
        had = self._tag_hints.get(key, ())
        dropped = tuple(tag for tag in had if tag not in entry.tags)
        if entry.tags or had:
            self._hint(key, entry.tags)
        await self._awrite(key, entry, dropped)
        return entry

    async def ainvalidate_tag(
        self, tag: str, mode: Mode, before: float | None = None
    ) -> int | None:
        """A tag's invalidation on Redis: its record moves on (one script, whatever the
        number of entries: each sees it when next read), and its set of keys, read for the
        count, starts over."""
        record, keys = self._v + checked(tag, "tag"), self._t + tag

        field = _FIELDS.index(mode.name.lower()) + 1

        async def invalidate(c: AsyncRedis) -> list[Any]:
            if self.cluster:  # the record and the set may sit on two nodes
                return [
                    await c.eval(_TAG, 1, record, field),
                    await c.scard(keys),
                    await c.unlink(keys),
                ]
            pipe = c.pipeline(transaction=False)
            pipe.eval(_TAG, 1, record, field)
            pipe.scard(keys)
            pipe.unlink(keys)
            return await pipe.execute()

        done, _ = await self._arun(invalidate, None)
        if done is None:
            raise self._unavailable(f"invalidation of tag {tag!r}")
        return int(done[1])

    async def amark(
        self, key: str, mode: Mode, tag: str | None = None, before: float | None = None
    ) -> bool:
        """`isr.adapters.base.Adapter.mark` on Redis: `isr.StoreUnavailable` when it cannot be
        reached (the runtime's outbox keeps the invalidation)."""
        name = self._e + checked(key)
        data, ok = await self._arun(lambda c: c.get(name), None)
        if not ok:
            raise self._unavailable(f"invalidation of {key!r}")
        entry = self._decode(key, cast("bytes | None", data))
        if entry is None or (tag is not None and tag not in entry.tags):
            return False
        if before is not None and entry.created >= before:
            return False
        if mode is Mode.PURGE:
            _, ok = await self._arun(lambda c: c.delete(name), 0)
        else:
            ok = await self._awrite(key, entry.marked(mode))
        if not ok:
            raise self._unavailable(f"invalidation of {key!r}")
        return True

    async def adelete(self, key: str) -> None:
        name = self._e + checked(key)
        _, ok = await self._arun(lambda c: c.delete(name), 0)
        if not ok:
            raise self._unavailable(f"the removal of {key!r}")

    async def atagged(self, tag: str) -> list[str]:
        name = self._t + checked(tag, "tag")

        async def members(c: AsyncRedis) -> list[str]:
            return _members(await c.smembers(name))

        keys, ok = await self._arun(members, cast("list[str]", []), long=True)
        if not ok:
            raise self._unavailable(f"invalidation of tag {tag!r}")
        return keys

    async def auntag(self, tag: str, keys: list[str]) -> None:
        if not keys:
            return
        tkey = self._t + checked(tag, "tag")
        checked_all(keys, "key")

        async def untag(c: AsyncRedis) -> None:
            await c.srem(tkey, *keys)
            pipe = c.pipeline(transaction=False)
            for k in keys:
                pipe.get(self._e + k)
            back = self._retagged(tag, keys, await pipe.execute())
            if back:
                await c.sadd(tkey, *back)

        await self._arun(untag, None, long=True)

    async def anote_invalidation(
        self, kind: str, name: str, mode: Mode, at: float, ttl: float
    ) -> None:
        marker = f"{self._i}{kind}:{checked(name, kind)}"
        ms = max(1, math.ceil(ttl * 1000))
        _, ok = await self._arun(lambda c: c.eval(_NOTE, 1, marker, repr(at), int(mode), ms), None)
        if not ok:
            raise self._unavailable(f"invalidation of {kind} {name!r}")

    async def ainvalidated_since(
        self, key: str, tags: tuple[str, ...], since: float
    ) -> Mode | None:
        checked(key)
        checked_all(tags)

        async def read(c: AsyncRedis) -> list[Any]:
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
        # One read of the record for every caller that needs it meanwhile (a burst on a
        # cold process would otherwise send one each), per event loop.
        owner = self._aowner()
        with self._lock:
            event = self._gen_reads.get(owner)
            lead = event is None
            if event is None:
                event = self._gen_reads[owner] = AsyncEvent()
        if not lead:
            await event.wait(self.slot_wait + self.timeout)  # what bounds the reader's wait
            value = cache.current()
            return cache.value if value is None else value  # not read: the last known
        try:
            return await self._aread_generation()
        finally:
            with self._lock:
                del self._gen_reads[owner]
            event.set()

    async def _aread_generation(self) -> Generation:
        """The record read from Redis now (after checking a new server's run_id), given
        back what this process saw should Redis have lost it; the last known if Redis
        cannot be reached."""
        cache = self._generation
        if self._pending_runs:
            await self._acheck_runs()
        fields, _ = await self._arun(lambda c: c.hmget(self._g, _FIELDS), None)
        if self._pending_runs:  # that read met a restarted server first: check, read again
            await self._acheck_runs()
            fields, _ = await self._arun(lambda c: c.hmget(self._g, _FIELDS), None)
        if fields is None:
            return cache.value
        if self._lost(fields):
            known = [str(v) for v in self._known]
            given, _ = await self._arun(lambda c: c.eval(_RESTORE, 1, self._g, *known), None)
            fields = fields if given is None else given
        return self._seen(_generation(fields))

    async def _acheck_runs(self) -> None:
        """Check each server's new run_id against the record (`_RESTARTED`): a restart
        purges what was written before it, once. Unreachable: checked on the next read."""
        for where, run in list(self._pending_runs.items()):
            args = (self._g, f"run@{where}", run, *[str(v) for v in self._known])

            async def check(c: AsyncRedis, args: tuple[str, ...] = args) -> Any:
                return await c.eval(_RESTARTED, 1, *args)

            answer, ok = await self._arun(check, None)
            if not ok:
                return
            self._restarted(where, run, answer)

    async def abump_generation(self, mode: Mode) -> Generation:
        field, floor = _FIELDS[mode], self._known.current
        fields, _ = await self._arun(lambda c: c.eval(_BUMP, 1, self._g, field, floor), None)
        generation = self._bumped(mode, fields)
        await self._apublish("all", mode.name.lower(), ",".join(map(str, generation)))
        return generation

    async def aannounce(self, kind: str, name: str, mode: Mode) -> int | None:
        return await self._apublish(kind, mode.name.lower(), name)

    async def _apublish(self, kind: str, mode: str, name: str) -> int:
        """Tell the other instances (the bus, ``isr.adapters.redis_bus``), through the
        breaker and timeouts: a Redis that hangs costs a command's timeout, one out of use
        nothing; either way `isr.StoreUnavailable` (the runtime's outbox tells them
        later). The epoch it was published as."""
        answer, _ = await self._arun(self._publishing(kind, mode, name), None)
        return self._published(answer, kind, name)

    # ------------------------------------------------------------------ coherence

    async def aregister(self, instance: Instance) -> None:
        await self._arun(self._beating(instance), None, counted=False)  # else: next beat

    async def aunregister(self, instance_id: str) -> None:
        fields = ("r:" + instance_id, "a:" + instance_id)
        await self._arun(lambda c: c.hdel(self._n, *fields), 0, counted=False)

    async def ainstances(self, now: float) -> list[Instance]:
        found, _ = await self._arun(lambda c: c.hgetall(self._n), None)
        live, stale = self._registry(found, now)
        if stale:
            await self._arun(lambda c: c.hdel(self._n, *stale), 0)
        return live

    async def alog_invalidation(self, entry: LoggedInvalidation, keep: int) -> str | None:
        record = entry.to_record()

        async def add(c: AsyncRedis) -> Any:
            return await c.xadd(self._log, {"r": record}, maxlen=keep, approximate=False)

        sid, ok = await self._arun(add, None)
        if not ok or sid is None:
            return None
        return sid.decode() if isinstance(sid, bytes) else str(sid)

    async def aconfirm_logged(self, ids: Sequence[str], confirmation: Confirmation) -> None:
        if not ids:
            return
        record = confirmation.to_record()
        mapping: Any = dict.fromkeys(ids, record)
        _, ok = await self._arun(lambda c: c.hset(self._logc, mapping=mapping), 0)
        if ok:
            await self._aprune_confirmations()

    async def _aprune_confirmations(self) -> None:
        """Keep the confirmations hash about as long as the log: once it holds more than
        the stream (plus some slack), drop those of ids the stream no longer has."""

        async def sizes(c: AsyncRedis) -> Any:
            pipe = c.pipeline(transaction=False)
            pipe.hlen(self._logc)
            pipe.xlen(self._log)
            pipe.xrange(self._log, count=1)
            return await pipe.execute()

        found, ok = await self._arun(sizes, None)
        if not ok or not found or found[0] <= found[1] + CONFIRMATIONS_SLACK:
            return
        names, ok = await self._arun(lambda c: c.hkeys(self._logc), None)
        old = self._outside_log(names or [], found[2])
        if ok and old:
            await self._arun(lambda c: c.hdel(self._logc, *old), 0)

    async def ainvalidation_log(self, limit: int) -> list[LoggedInvalidation]:
        entries, ok = await self._arun(lambda c: c.xrevrange(self._log, count=limit), None)
        if not ok or not entries:
            return []
        ids: Any = [sid for sid, _ in entries]
        confirmations, _ = await self._arun(lambda c: c.hmget(self._logc, ids), None)
        return self._logged(entries, confirmations or [None] * len(ids))

    async def aacquire(self, key: str, token: str, ttl: float) -> bool:
        ms = max(1, math.ceil(ttl * 1000))
        name = self._l + checked(key)

        async def take(c: AsyncRedis) -> bool:
            return bool(await c.set(name, token, nx=True, px=ms))

        taken, _ = await self._arun(take, True)
        return taken

    async def afetch_locked(self, key: str) -> bool | None:
        found, reached = await self._arun_command(("EXISTS", self._l + checked(key)), 0)
        return bool(found) if reached else None

    async def arelease(self, key: str, token: str) -> None:
        name = self._l + checked(key)
        await self._arun(lambda c: c.eval(_RELEASE, 1, name, token), None)

    async def atake(self, key: str, token: str, ttl: float) -> tuple[bool, Entry | None]:
        """`isr.adapters.base.Adapter.take`: the lock and the read in one command (`_TAKE`;
        a Cluster: one after the other, their keys lying on two nodes)."""
        if self.cluster:
            return await self.aacquire(key, token, ttl), await self.aget(key)
        ms = max(1, math.ceil(ttl * 1000))
        lock, name = self._l + checked(key), self._e + key
        tags = self._tag_hints.get(key)

        names = [lock, name, *(self._v + tag for tag in tags or ())]

        found, reached = await self._arun_command(
            ("EVAL", _TAKE, len(names), *names, token, ms), None
        )
        if found is None:
            return True, None  # as `aacquire`: out of reach, each process fetches
        taken, data, records = found[0] == 1, found[1], list(found[2:])
        entry, _ = self._reading(key, data, reached)
        if entry is not None and entry.tags:
            entry, _ = await self._atag_marked(key, entry, reached, tags, records or None)
        return taken, entry

    async def afinish(self, key: str, entry: Entry, since: float, token: str) -> Entry | None:
        """`isr.adapters.base.Adapter.finish`: one script stores the value and gives the
        lock back (`_FINISH`), unless an invalidation came meanwhile or a tag's record was
        not the one this process knew; then the long way (`astore`, then `arelease`)."""
        checked(key)
        checked_all(entry.tags)
        script = self._finishing(key, entry, since, token)
        if script is not None:
            keys, argv = script

            done, ok = await self._arun_command(("EVAL", _FINISH, len(keys), *keys, *argv), None)
            if not ok:
                return entry  # as `astore` out of reach: the caller has its value
            if done == 1:
                if entry.tags:
                    self._hint(key, entry.tags)
                return entry
        try:
            return await self.astore(key, entry, since)
        finally:
            await self.arelease(key, token)

    async def aclaim(self, name: str, ttl: float) -> bool | None:
        """``SET NX PX`` through the breaker; None when Redis cannot be asked."""
        ms = max(1, math.ceil(ttl * 1000))
        claim = self._c + checked(name, "claim")

        async def take(c: AsyncRedis) -> bool:
            return bool(await c.set(claim, b"1", nx=True, px=ms))

        taken, ok = await self._arun(take, False)
        return taken if ok else None

    async def aunclaim(self, name: str) -> None:
        claim = self._c + checked(name, "claim")
        _, ok = await self._arun(lambda c: c.delete(claim), 0)
        if not ok:
            self._unreached(f"the release of claim {name!r}")
