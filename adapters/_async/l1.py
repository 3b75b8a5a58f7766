"""The L1 store's operations, written once for async code and generated for sync code.

Written once: ``isr/adapters/_sync/l1.py`` is generated from ``isr/adapters/_async/l1.py`` by
``python -m tests.unasync``; edit the async one, then regenerate. Reads go to the L1 first
(the runtime's hot path does that itself) and then to Redis; writes go to Redis, then to the
L1; invalidations are written to Redis, then published on the bus.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from isr._coherence import Confirmation, Instance, LoggedInvalidation
from isr._entry import Entry, Generation, Mode

from .._l1_base import L1Base

__all__ = ["AsyncL1Ops"]


class AsyncL1Ops(L1Base):
    """The store operations of `isr.adapters.l1.L1Adapter` (see the module docstring)."""

    async def aget(self, key: str) -> Entry | None:
        return self._landed(key, *await self.l2.aread(key))

    async def atagged(self, tag: str) -> list[str]:
        return sorted({*await self.l2.atagged(tag), *self.l1.tagged(tag)})

    async def ainvalidated_since(
        self, key: str, tags: tuple[str, ...], since: float
    ) -> Mode | None:
        return await self.l2.ainvalidated_since(key, tags, since)

    async def aset(self, key: str, entry: Entry) -> None:
        await self.l2.aset(key, entry)  # first: a CodecError must leave both untouched
        self.l1.set(key, entry)

    async def astore(self, key: str, entry: Entry, since: float) -> Entry | None:
        return self._landed(key, await self.l2.astore(key, entry, since), True)

    async def ainvalidate_tag(
        self, tag: str, mode: Mode, before: float | None = None
    ) -> int | None:
        self._tag_invalidated(tag, mode, before)  # first, as `adelete`
        return await self.l2.ainvalidate_tag(tag, mode, before)

    async def adelete(self, key: str) -> None:
        self.l1.delete(key)  # first: this process forgets it even if Redis cannot be reached
        await self.l2.adelete(key)

    async def amark(
        self, key: str, mode: Mode, tag: str | None = None, before: float | None = None
    ) -> bool:
        self.l1.mark(key, mode, tag, before)  # first, as `adelete`
        return await self.l2.amark(key, mode, tag, before)

    async def aforget_local(self, kind: str, name: str, mode: Mode) -> None:
        self._forget_local(kind, name, mode)

    async def auntag(self, tag: str, keys: list[str]) -> None:
        await self.l2.auntag(tag, keys)

    async def abump_generation(self, mode: Mode) -> Generation:
        return self._set_generation(await self.l2.abump_generation(mode))  # published too

    async def anote_invalidation(
        self, kind: str, name: str, mode: Mode, at: float, ttl: float
    ) -> None:
        await self.l2.anote_invalidation(kind, name, mode, at, ttl)

    async def aannounce(self, kind: str, name: str, mode: Mode) -> int | None:
        return await self.l2.aannounce(kind, name, mode)

    async def aregister(self, instance: Instance) -> None:
        self.bus.instance_id = instance.id  # its acknowledgements from now on
        await self.l2.aregister(replace(instance, l1=True, applied=self.bus.applied))

    async def aunregister(self, instance_id: str) -> None:
        await self.l2.aunregister(instance_id)

    async def ainstances(self, now: float) -> list[Instance]:
        return await self.l2.ainstances(now)

    async def alog_invalidation(self, entry: LoggedInvalidation, keep: int) -> str | None:
        return await self.l2.alog_invalidation(entry, keep)

    async def aconfirm_logged(self, ids: Sequence[str], confirmation: Confirmation) -> None:
        await self.l2.aconfirm_logged(ids, confirmation)

    async def ainvalidation_log(self, limit: int) -> list[LoggedInvalidation]:
        return await self.l2.ainvalidation_log(limit)

    async def aacquire(self, key: str, token: str, ttl: float) -> bool:
        return await self.l2.aacquire(key, token, ttl)

    async def afetch_locked(self, key: str) -> bool | None:
        return await self.l2.afetch_locked(key)

    async def ainspect(self, key: str) -> Entry | None:
        return (await self.l2.aread(key))[0]  # Redis's, the L1's copy left as it is

    async def arelease(self, key: str, token: str) -> None:
        await self.l2.arelease(key, token)

    async def atake(self, key: str, token: str, ttl: float) -> tuple[bool, Entry | None]:
        taken, entry = await self.l2.atake(key, token, ttl)
        if entry is not None:
            self._landed(key, entry, True)
        return taken, entry

    async def afinish(self, key: str, entry: Entry, since: float, token: str) -> Entry | None:
        return self._landed(key, await self.l2.afinish(key, entry, since, token), True)

    async def aclaim(self, name: str, ttl: float) -> bool | None:
        return await self.l2.aclaim(name, ttl)

    async def aunclaim(self, name: str) -> None:
        await self.l2.aunclaim(name)

    async def aclose(self) -> None:
        self.bus.close()
        await self.l2.aclose()
