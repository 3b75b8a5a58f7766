# GENERATED from adapters/_async/l1.py by tests/unasync.py: do not edit.
# Edit the async source, then run `python -m tests.unasync`.
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

__all__ = ["SyncL1Ops"]


class SyncL1Ops(L1Base):
    """The store operations of `isr.adapters.l1.L1Adapter` (see the module docstring)."""

    def get(self, key: str) -> Entry | None:
        return self._landed(key, *self.l2.read(key))

    def tagged(self, tag: str) -> list[str]:
        return sorted({*self.l2.tagged(tag), *self.l1.tagged(tag)})

    def invalidated_since(self, key: str, tags: tuple[str, ...], since: float) -> Mode | None:
        return self.l2.invalidated_since(key, tags, since)

    def set(self, key: str, entry: Entry) -> None:
        self.l2.set(key, entry)  # first: a CodecError must leave both untouched
        self.l1.set(key, entry)

    def store(self, key: str, entry: Entry, since: float) -> Entry | None:
        return self._landed(key, self.l2.store(key, entry, since), True)

    def invalidate_tag(self, tag: str, mode: Mode, before: float | None = None) -> int | None:
        self._tag_invalidated(tag, mode, before)  # first, as `delete`
        return self.l2.invalidate_tag(tag, mode, before)

    def delete(self, key: str) -> None:
        self.l1.delete(key)  # first: this process forgets it even if Redis cannot be reached
        self.l2.delete(key)

    def mark(
        self, key: str, mode: Mode, tag: str | None = None, before: float | None = None
    ) -> bool:
        self.l1.mark(key, mode, tag, before)  # first, as `delete`
        return self.l2.mark(key, mode, tag, before)

    def forget_local(self, kind: str, name: str, mode: Mode) -> None:
        self._forget_local(kind, name, mode)

    def untag(self, tag: str, keys: list[str]) -> None:
        self.l2.untag(tag, keys)

    def bump_generation(self, mode: Mode) -> Generation:
        return self._set_generation(self.l2.bump_generation(mode))  # published too

    def note_invalidation(self, kind: str, name: str, mode: Mode, at: float, ttl: float) -> None:
        self.l2.note_invalidation(kind, name, mode, at, ttl)

    def announce(self, kind: str, name: str, mode: Mode) -> int | None:
        return self.l2.announce(kind, name, mode)

    def register(self, instance: Instance) -> None:
        self.bus.instance_id = instance.id  # its acknowledgements from now on
        self.l2.register(replace(instance, l1=True, applied=self.bus.applied))

    def unregister(self, instance_id: str) -> None:
        self.l2.unregister(instance_id)

    def instances(self, now: float) -> list[Instance]:
        return self.l2.instances(now)

    def log_invalidation(self, entry: LoggedInvalidation, keep: int) -> str | None:
        return self.l2.log_invalidation(entry, keep)

    def confirm_logged(self, ids: Sequence[str], confirmation: Confirmation) -> None:
        self.l2.confirm_logged(ids, confirmation)

    def invalidation_log(self, limit: int) -> list[LoggedInvalidation]:
        return self.l2.invalidation_log(limit)

    def acquire(self, key: str, token: str, ttl: float) -> bool:
        return self.l2.acquire(key, token, ttl)

    def fetch_locked(self, key: str) -> bool | None:
        return self.l2.fetch_locked(key)

    def inspect(self, key: str) -> Entry | None:
        return (self.l2.read(key))[0]  # Redis's, the L1's copy left as it is

    def release(self, key: str, token: str) -> None:
        self.l2.release(key, token)

    def take(self, key: str, token: str, ttl: float) -> tuple[bool, Entry | None]:
        taken, entry = self.l2.take(key, token, ttl)
        if entry is not None:
            self._landed(key, entry, True)
        return taken, entry

    def finish(self, key: str, entry: Entry, since: float, token: str) -> Entry | None:
        return self._landed(key, self.l2.finish(key, entry, since, token), True)

    def claim(self, name: str, ttl: float) -> bool | None:
        return self.l2.claim(name, ttl)

    def unclaim(self, name: str) -> None:
        self.l2.unclaim(name)

    def close(self) -> None:
        self.bus.close()
        self.l2.close()
