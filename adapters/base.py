"""The one interface every store implements: get, set, delete, tags, generation, close.

Sync methods serve sync loaders and the ``*_sync`` invalidation calls; the ``a``-prefixed
twins serve async code. A store whose values live in this process (``local = True``) keeps
the defaults below, which call the sync methods directly: its calls never block. A network
store overrides both sets.

A local store may also offer ``peek`` (a C-level ``dict.get`` at best) and keep ``gen`` (the
current generation number) up to date: the decorator's hot path reads those two and nothing
else.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar

from isr._entry import Entry, Generation, Mode

__all__ = ["Adapter"]


def _never(key: str) -> Entry | None:
    return None


class Adapter(abc.ABC):
    """Storage for entries, a tag index and the generation record."""

    #: True when entries stay in this process: calls are cheap and never block.
    local: ClassVar[bool] = False
    #: Fast lookup for the hot path; stores without one keep this, which always misses.
    peek: Callable[[str], Entry | None] = staticmethod(_never)
    #: The current generation number, kept in step by local stores for the hot path.
    gen: int = -1

    @abc.abstractmethod
    def get(self, key: str) -> Entry | None:
        """The entry stored under ``key``, or None."""

    @abc.abstractmethod
    def set(self, key: str, entry: Entry) -> None:
        """Store ``entry`` under ``key`` and index it under each of ``entry.tags``."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` (and its tag index entries); a missing key is not an error."""

    @abc.abstractmethod
    def tagged(self, tag: str) -> list[str]:
        """The keys currently stored with ``tag``."""

    @abc.abstractmethod
    def generation(self) -> Generation:
        """The store's invalidate-all record."""

    @abc.abstractmethod
    def bump_generation(self, mode: Mode) -> Generation:
        """Record an invalidate-all of strength ``mode``, atomically; return the new record."""

    def size(self) -> int | None:
        """How many entries the store holds, where that is cheap to know."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections or files."""

    async def aget(self, key: str) -> Entry | None:
        return self.get(key)

    async def aset(self, key: str, entry: Entry) -> None:
        self.set(key, entry)

    async def adelete(self, key: str) -> None:
        self.delete(key)

    async def atagged(self, tag: str) -> list[str]:
        return self.tagged(tag)

    async def ageneration(self) -> Generation:
        return self.generation()

    async def abump_generation(self, mode: Mode) -> Generation:
        return self.bump_generation(mode)

    async def aclose(self) -> None:
        self.close()
