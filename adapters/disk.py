"""The one-host store: diskcache, shared by every worker process and surviving restarts.

``disk:///var/cache/myapp`` (an absolute path; ``?size_limit=BYTES`` optional). What lives
where, under the namespace ``ns`` (default ``isr``):

- entries: diskcache items ``ns:e:KEY`` holding codec bytes (JSON by default), expiring when
  their stale-if-error window ends (never, with an unbounded ``swr``: diskcache's size limit,
  1 GB by default, evicts least recently stored items then);
- the generation record: the item ``ns:gen``, bumped inside a diskcache transaction;
- fetch locks: items ``ns:l:KEY`` taken with diskcache's atomic ``add`` and an expiry, so a
  holder that dies blocks nobody past the lock's TTL; released by compare-and-delete in a
  transaction;
- the tag index: diskcache keeps one tag per item, an entry has several, so (tag, key) pairs
  live in a small SQLite table beside the cache (``isr-tags.sqlite3``, WAL mode): adding is an
  ``INSERT OR IGNORE``, listing a tag reads its rows, so ``invalidate_tag`` costs O(entries in
  the tag) and nothing ever scans the keyspace.

Calls are synchronous and short (a local SQLite read is a few microseconds), so async code
calls them directly, as the memory store's are. diskcache opens one SQLite connection per
thread that uses it and ``close()`` closes the calling thread's; the tag table's connections
are all closed by ``close()``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import diskcache

from isr._codec import Codec, CodecError, JsonCodec
from isr._entry import Entry, Generation, Mode
from isr._errors import ConfigError

from .base import Adapter, GenerationCache, lifetime

__all__ = ["DiskAdapter"]

logger = logging.getLogger("isr")

_NO_VALUE: Any = object()


class DiskAdapter(Adapter):
    """diskcache store for the worker processes of one host (see the module docstring)."""

    shared: ClassVar[bool] = True
    wall_clock: ClassVar[bool] = True
    inline: ClassVar[bool] = True

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        namespace: str | None = None,
        codec: Codec | None = None,
        generation_poll: float = 1.0,
        size_limit: int | None = None,
    ) -> None:
        path = os.fspath(directory)
        if not os.path.isabs(path):
            raise ConfigError(f"the disk store needs an absolute path, not {path!r}")
        self.directory = path
        self.namespace = namespace or "isr"
        self.codec: Codec = codec or JsonCodec()
        settings: dict[str, Any] = {} if size_limit is None else {"size_limit": size_limit}
        self._cache = diskcache.Cache(path, **settings)
        self._generation = GenerationCache(generation_poll)
        # A local read the decorator serves from directly, checking ``gen`` (kept current
        # by ``get``, at most ``generation_poll`` old) and the clock, as for the memory store.
        self.peek = self.get
        self.gen = self.generation().current
        self._tags_path = os.path.join(path, "isr-tags.sqlite3")
        self._local_db = threading.local()
        self._dbs: list[sqlite3.Connection] = []
        self._dbs_lock = threading.Lock()
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS isr_tags ("
                " tag TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (tag, key))"
            )
            db.execute("CREATE INDEX IF NOT EXISTS isr_tags_key ON isr_tags (key)")

    @classmethod
    def from_url(
        cls, url: str, *, namespace: str | None = None, codec: Codec | None = None
    ) -> DiskAdapter:
        parts = urlsplit(url)
        if parts.netloc or not parts.path.startswith("/"):
            raise ConfigError(
                f"cache URL {url!r}: the disk store needs an absolute path, as in "
                "disk:///var/cache/myapp (three slashes)"
            )
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = set(options) - {"size_limit"}
        if unknown:
            raise ConfigError(
                f"cache URL {url!r}: disk:// takes only ?size_limit=BYTES "
                f"(unknown: {', '.join(sorted(unknown))})"
            )
        size_limit = None
        if "size_limit" in options:
            try:
                size_limit = int(options["size_limit"])
            except ValueError:
                raise ConfigError(f"cache URL {url!r}: size_limit must be an integer") from None
        return cls(parts.path, namespace=namespace, codec=codec, size_limit=size_limit)

    # ------------------------------------------------------------------ keys and the tag table

    def _key(self, key: str) -> str:
        return f"{self.namespace}:e:{key}"

    def _db(self) -> sqlite3.Connection:
        """This thread's connection to the tag table (sqlite3 connections are per thread)."""
        db: sqlite3.Connection | None = getattr(self._local_db, "db", None)
        if db is None:
            db = sqlite3.connect(self._tags_path, timeout=30, check_same_thread=False)
            db.execute("PRAGMA synchronous=NORMAL")
            self._local_db.db = db
            with self._dbs_lock:
                self._dbs.append(db)
        return db

    # ------------------------------------------------------------------ Adapter

    def get(self, key: str) -> Entry | None:
        if self._generation.due():
            self.generation()  # keeps ``gen`` current for the decorator's hot path
        data = self._cache.get(f"{self.namespace}:e:{key}", _NO_VALUE)
        if data is _NO_VALUE:
            return None
        try:
            entry = self.codec.loads(key, data)
        except CodecError as exc:
            self.errors += 1
            logger.warning("disk store: %s; treated as missing", exc)
            return None
        if entry.gen == self.gen:
            entry.gen = self.gen  # the very object the hot path compares with ``is``
        return entry

    def set(self, key: str, entry: Entry) -> None:
        data = self.codec.dumps(key, entry)  # a CodecError leaves the store untouched
        life = lifetime(entry)
        expire = None if life is None else max(life, 1.0)
        # JSON is kept as text: diskcache stores and returns str as is, no bytes round trip.
        record: bytes | str = data.decode() if self.codec.text else data
        self._cache.set(self._key(key), record, expire=expire)
        if entry.tags:
            ns = self.namespace
            with self._db() as db:
                db.executemany(
                    "INSERT OR IGNORE INTO isr_tags (tag, key) VALUES (?, ?)",
                    [(f"{ns}:{tag}", key) for tag in entry.tags],
                )

    def delete(self, key: str) -> None:
        self._cache.delete(self._key(key))

    def tagged(self, tag: str) -> list[str]:
        rows = self._db().execute(
            "SELECT key FROM isr_tags WHERE tag = ?", (f"{self.namespace}:{tag}",)
        )
        return [key for (key,) in rows]

    def untag(self, tag: str, keys: list[str]) -> None:
        """Forget index rows whose entry is gone or no longer carries ``tag``."""
        if keys:
            with self._db() as db:
                db.executemany(
                    "DELETE FROM isr_tags WHERE tag = ? AND key = ?",
                    [(f"{self.namespace}:{tag}", key) for key in keys],
                )

    def generation(self) -> Generation:
        cached = self._generation.current()
        if cached is not None:
            return cached
        record = self._cache.get(f"{self.namespace}:gen")
        value = self._generation.update(Generation(*record) if record else Generation())
        self.gen = value.current
        return value

    def bump_generation(self, mode: Mode) -> Generation:
        name = f"{self.namespace}:gen"
        with self._cache.transact():
            record = self._cache.get(name)
            bumped = (Generation(*record) if record else Generation()).bumped(mode)
            self._cache.set(name, tuple(bumped))
        value = self._generation.update(bumped)
        self.gen = value.current
        return value

    def note_invalidation(self, kind: str, name: str, mode: Mode, at: float, ttl: float) -> None:
        marker = f"{self.namespace}:i:{kind}:{name}"
        with self._cache.transact():
            old = self._cache.get(marker)
            if old is not None and old[1] > int(mode):  # keep the stronger mode on record
                mode = Mode(old[1])
            self._cache.set(marker, (at, int(mode)), expire=ttl)

    def invalidated_since(self, key: str, tags: tuple[str, ...], since: float) -> Mode | None:
        ns = self.namespace
        names = [f"{ns}:i:key:{key}", *(f"{ns}:i:tag:{tag}" for tag in tags)]
        modes = [m for at, m in filter(None, map(self._cache.get, names)) if at > since]
        return Mode(max(modes)) if modes else None

    def acquire(self, key: str, token: str, ttl: float) -> bool:
        return bool(self._cache.add(f"{self.namespace}:l:{key}", token, expire=ttl))

    def release(self, key: str, token: str) -> None:
        name = f"{self.namespace}:l:{key}"
        with self._cache.transact():
            if self._cache.get(name) == token:
                self._cache.delete(name)

    def close(self) -> None:
        self._cache.close()
        with self._dbs_lock:
            dbs, self._dbs = self._dbs, []
        for db in dbs:  # every thread's connection (check_same_thread=False allows this)
            db.close()
        self._local_db = threading.local()
