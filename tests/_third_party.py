"""A store written by a third party from the documentation alone (``isr.adapters``' and
``isr.adapters.base``'s docstrings): a dict, the six abstract methods, nothing else. The
conformance suite runs on it as on the library's own stores (``STORES`` in conftest)."""

from __future__ import annotations

from isr.adapters import Adapter, Entry, Generation, Mode


class DictStore(Adapter):
    """Entries in a dict; the tag index in another; the invalidate-all record in a field."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.tags: dict[str, set[str]] = {}
        self.record = Generation()

    def get(self, key: str) -> Entry | None:
        return self.entries.get(key)

    def set(self, key: str, entry: Entry) -> None:
        self.entries[key] = entry
        for tag in entry.tags:
            self.tags.setdefault(tag, set()).add(key)

    def delete(self, key: str) -> None:
        self.entries.pop(key, None)

    def tagged(self, tag: str) -> list[str]:
        return sorted(self.tags.get(tag, ()))

    def generation(self) -> Generation:
        return self.record

    def bump_generation(self, mode: Mode) -> Generation:
        self.record = self.record.bumped(mode)
        return self.record
