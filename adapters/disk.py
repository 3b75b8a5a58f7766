"""The one-host store: diskcache, shared by every worker process and surviving restarts.

``disk:///var/cache/myapp`` (an absolute path; options ``?size_limit=BYTES`` and
``?shared_dir=true``, below). What lives where, under the namespace's prefix ``ns``
(`isr.adapters.names.prefix`: the namespace itself when it is a plain word, ``isr`` by default):

- entries: diskcache items ``ns:e:KEY`` holding the codec's record (JSON text by default),
  expiring when their stale-if-error window ends (never, with an unbounded ``swr``:
  diskcache's size limit, 1 GB by default, evicts least recently stored items then);
- the generation record: the item ``ns:gen``, text ``"current revalidate expire purge"``,
  bumped inside a diskcache transaction;
- fetch locks: items ``ns:l:KEY`` holding the holder's token, taken with diskcache's atomic
  ``add`` and an expiry, so a holder that dies blocks nobody past the lock's TTL; released by
  compare-and-delete in a transaction;
- invalidation markers: items ``ns:i:key:KEY`` and ``ns:i:tag:TAG``, text ``"<time> <mode>"``
  (`isr.adapters.records`), expiring after the runtime's lock TTL;
- claims (the webhook's replay guard): items ``ns:c:NAME``, taken with ``add`` and an expiry;
- the tag index: diskcache keeps one tag per item, an entry has several, so (tag, key) pairs
  live in a small SQLite table beside the cache (``isr-tags.sqlite3``, WAL mode; the tag
  column holds ``ns:TAG``): adding is an ``INSERT OR IGNORE``, listing a tag reads its rows,
  so ``invalidate_tag`` costs O(entries in the tag) and nothing ever scans the keyspace;
- the instances of the runtimes sharing the directory (``isr_instances``: one JSON record
  each, rewritten at every heartbeat) and the invalidation log (``isr_log``: one row per
  invalidation, the oldest deleted past the runtime's ``log_size``, the confirmation added
  to its row), two more tables of that database (`isr.ISR.instances`,
  `isr.ISR.invalidation_log`).

**Nothing the directory holds is ever unpickled.** isr writes only text and bytes in its own
formats, and reads through a `diskcache.Disk` of its own (`_Disk`) that refuses every row
diskcache would unpickle (its pickle mode, a pickled key) and every value file outside
diskcache's own file layout (an absolute or ``..`` path, a symbolic link). A refused row, or
a record the codec refuses, is treated as missing, counted in ``errors`` and logged once per
name. Caches written by earlier releases (which let diskcache pickle the generation record and
the markers) are read the same way: their markers count as missing, and the generation record
is read from the pickle's opcodes alone (four integers, never unpickled) and rewritten as text.

**The directory is the application's own.** One that does not exist is created owner-only
(0700, with any missing parents); an existing one that is a symbolic link, is not owned by the
process's user, or is writable by its group or by others is refused with `isr.ConfigError`,
since whoever can write it decides what is served. Files and subdirectories isr or diskcache
create in it are owner-only (0600, 0700). ``?shared_dir=true`` (``shared_dir=True``) is the
explicit opt-out for a directory shared between users on purpose: no ownership, mode or
symlink checks, and new files and subdirectories get the process's umask. The parent
directories must be as trustworthy as the directory itself (not writable by others).

Calls are synchronous and short (a local SQLite read is a few microseconds), so async code
calls them directly, as the memory store's are. diskcache opens one SQLite connection per
thread that uses it and ``close()`` closes the calling thread's; the tag table's connections
are all closed by ``close()``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickletools
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import diskcache
from diskcache.core import DBNAME, MODE_BINARY, MODE_PICKLE, MODE_RAW, MODE_TEXT, UNKNOWN

from isr._codec import Codec, CodecError, JsonCodec
from isr._coherence import (
    Confirmation,
    Instance,
    LoggedInvalidation,
    instance_from,
    instance_record,
    is_live,
    is_stale,
)
from isr._entry import Entry, Generation, Mode
from isr._errors import ConfigError
from isr._redact import redact_url, split_url

from .base import Adapter, GenerationCache, lifetime
from .names import checked, checked_all, prefix
from .records import (
    Refusals,
    generation_text,
    marker_mode,
    marker_text,
    parse_generation,
    strongest,
    tag_mark,
    tag_numbers,
)

__all__ = ["DiskAdapter"]


def _seq(log_id: str) -> int:
    """The table's row number in a log id ``"<ms>-<seq>"`` (-1: not one of ours)."""
    try:
        return int(log_id.rpartition("-")[2])
    except ValueError:
        return -1


logger = logging.getLogger("isr")

_NO_VALUE: Any = object()
_TAGS_DB = "isr-tags.sqlite3"
#: Never through a symbolic link; not inherited by child processes; bytes as they are.
_OPEN_FLAGS = (
    getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)
#: The relative path diskcache gives a value file (``Disk.filename``): ``ab/cd/<28 hex>.val``.
_SEP = re.escape(os.sep)
_VALUE_FILE = re.compile(rf"[0-9a-f]{{2}}{_SEP}[0-9a-f]{{2}}{_SEP}[0-9a-f]{{28}}\.val")


class Refused:
    """What `_Disk` hands back for a row it will not load, with the reason; ``pickled`` keeps
    a small pickled row's bytes, read by `_old_generation` without unpickling."""

    __slots__ = ("pickled", "why")

    def __init__(self, why: str, pickled: bytes | None = None) -> None:
        self.why = why
        self.pickled = pickled


_PICKLE = "is a pickle (diskcache's pickle mode); isr never unpickles what the directory holds"


class _Disk(diskcache.Disk):  # type: ignore[misc]
    """diskcache's serializer, reduced to text and bytes: no pickle either way, value files
    only in diskcache's own layout, created owner-only (see the module docstring)."""

    #: Modes of the value files and their subdirectories (before the umask).
    file_mode: ClassVar[int] = 0o600
    dir_mode: ClassVar[int] = 0o700
    #: The attributes diskcache's ``disk_*`` settings may set (from the Settings table,
    #: which whoever writes the directory can edit): no other is ever replaced.
    _SETTABLE: ClassVar[frozenset[str]] = frozenset({"min_file_size", "pickle_protocol"})

    def __init__(
        self, directory: str, min_file_size: int = 0, pickle_protocol: int = 0, **_: Any
    ) -> None:
        object.__setattr__(self, "_directory", directory)
        object.__setattr__(self, "min_file_size", 2**15)  # diskcache's default
        object.__setattr__(self, "pickle_protocol", pickle_protocol)
        self.min_file_size = min_file_size

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "min_file_size" and type(value) is not int:
            return  # a tampered setting: keep the current one
        if name in self._SETTABLE:
            object.__setattr__(self, name, value)

    def put(self, key: Any) -> tuple[Any, bool]:
        if type(key) is str:
            return key, True
        if type(key) is bytes:
            return sqlite3.Binary(key), True
        raise TypeError(f"the disk store names its records with text, not {type(key).__name__}")

    def get(self, key: Any, raw: bool) -> Any:
        if raw:
            return bytes(key) if type(key) is memoryview else key
        return Refused("has a pickled name; isr never unpickles what the directory holds")

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> tuple[int, int, Any, Any]:
        kind = type(value)
        if read or (kind is not str and kind is not bytes):
            raise TypeError(f"the disk store keeps text and bytes only, not {kind.__name__}")
        if len(value) < self.min_file_size:
            return 0, MODE_RAW, None, value if kind is str else sqlite3.Binary(value)
        filename, full_path = self.filename(key, value)
        data = value.encode() if kind is str else value
        self._write_file(full_path, data)
        return len(data), MODE_TEXT if kind is str else MODE_BINARY, filename, None

    def _write_file(self, full_path: str, data: bytes) -> None:
        """Write a new value file (never through a symlink, never over a file), creating its
        two subdirectories; retried as diskcache does, since another process removing an
        emptied subdirectory may race with the creation."""
        sub = os.path.dirname(full_path)
        for attempt in range(10):
            for directory in (os.path.dirname(sub), sub):
                with contextlib.suppress(FileExistsError, FileNotFoundError):
                    os.mkdir(directory, self.dir_mode)
            try:
                fd = os.open(
                    full_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, self.file_mode
                )
            except FileNotFoundError:
                if attempt == 9:
                    raise
                continue
            with os.fdopen(fd, "wb") as writer:
                writer.write(data)
            return

    def fetch(self, mode: int, filename: Any, value: Any, read: bool) -> Any:
        if mode == MODE_RAW:
            kind = type(value)
            if kind is str or kind is bytes:
                return value
            return Refused(f"holds a {kind.__name__}, not text or bytes isr wrote")
        if mode == MODE_PICKLE:
            return Refused(_PICKLE, value if type(value) is bytes and len(value) < 256 else None)
        if (mode != MODE_BINARY and mode != MODE_TEXT) or read:
            return Refused(f"is in diskcache mode {mode!r}, which isr never writes")
        if type(filename) is not str or not _VALUE_FILE.fullmatch(filename):
            return Refused("names a value file outside the cache's own layout")
        fd = os.open(os.path.join(self._directory, filename), os.O_RDONLY | _OPEN_FLAGS)
        with os.fdopen(fd, "rb") as reader:  # an OSError above: diskcache answers "missing"
            data = reader.read()
        if mode == MODE_BINARY:
            return data
        try:
            return data.decode()
        except UnicodeDecodeError:
            return Refused("holds a text file that is not UTF-8")

    def remove(self, file_path: Any) -> None:
        # Only files of the cache's own layout: a row naming another path must not make
        # the application delete it.
        if type(file_path) is str and _VALUE_FILE.fullmatch(file_path):
            super().remove(file_path)


class _SharedDisk(_Disk):
    """`_Disk` for a directory shared between users on purpose: the umask decides."""

    file_mode: ClassVar[int] = 0o666
    dir_mode: ClassVar[int] = 0o777


def _old_generation(data: bytes) -> Generation | None:
    """The generation record an earlier release left (a tuple of four integers, which
    diskcache pickled), read from the pickle's opcodes alone: nothing is unpickled, and
    anything but such a tuple is None."""
    numbers: list[int] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("BININT", "BININT1", "BININT2", "LONG1") and type(arg) is int:
                numbers.append(arg)
            elif op.name not in ("PROTO", "FRAME", "MARK", "TUPLE", "MEMOIZE", "STOP"):
                return None
    except Exception:  # a malformed pickle: genops raises ValueError and others
        return None
    if len(numbers) != 4 or min(numbers) < 0:
        return None
    return Generation(*numbers)


def _owner_only_file(path: str) -> None:
    """Create ``path`` empty and owner-only unless it exists (so that SQLite, which gives
    its -wal and -shm files the database's mode, makes them owner-only too)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | _OPEN_FLAGS, 0o600)
    except OSError as exc:
        raise ConfigError(f"the disk store cannot open {path!r}: {exc.strerror}") from None
    os.close(fd)


def _make_directory(path: str, mode: int) -> None:
    """Create ``path`` and any missing parents with ``mode`` (before the umask)."""
    missing = []
    head = path
    while not os.path.lexists(head):
        missing.append(head)
        parent = os.path.dirname(head)
        if parent == head:
            break
        head = parent
    for directory in reversed(missing):
        failure = _mkdir(directory, mode)
        if failure is not None:
            raise ConfigError(f"the disk store cannot create {directory!r}: {failure}")


def _mkdir(path: str, mode: int) -> str | None:
    """Make the directory ``path``: None when done or already there (another worker made
    it meanwhile: checked like any other), else why not."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def _check_directory(path: str, shared_dir: bool) -> None:
    """Create the store's directory, or refuse an existing one another user could write
    (see the module docstring)."""
    if os.path.expandvars(path) != path:
        raise ConfigError(
            f"the disk store's path {path!r} names an environment variable, which diskcache "
            "would expand; give the path itself"
        )
    _make_directory(path, 0o777 if shared_dir else 0o700)
    try:
        info = os.stat(path) if shared_dir else os.lstat(path)
    except OSError as exc:
        raise ConfigError(f"the disk store cannot use {path!r}: {exc.strerror}") from None
    optout = "; pass ?shared_dir=true only if it is shared between users on purpose"
    if stat.S_ISLNK(info.st_mode):
        raise ConfigError(
            f"the disk store's directory {path!r} is a symbolic link, which whoever made it "
            f"can point elsewhere: give the real path{optout}"
        )
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"the disk store's path {path!r} is not a directory")
    if shared_dir or not hasattr(os, "geteuid"):
        return  # opted out; or Windows, where the directory's ACL is the deployment's
    if info.st_uid != os.geteuid():
        raise ConfigError(
            f"the disk store's directory {path!r} belongs to uid {info.st_uid}, not to this "
            f"process's user (uid {os.geteuid()}): its owner could make the application serve "
            f"anything{optout}"
        )
    if info.st_mode & 0o022:
        raise ConfigError(
            f"the disk store's directory {path!r} is writable by other users (mode "
            f"{stat.S_IMODE(info.st_mode):04o}), who could make the application serve anything: "
            f"chmod go-w it (0700 keeps the cached data private too){optout}"
        )
    if info.st_mode & 0o077:
        logger.warning(
            "disk store %s: other users can read the cached data (mode %04o); chmod 700 it "
            "unless that is intended",
            path,
            stat.S_IMODE(info.st_mode),
        )


#: One record as diskcache keeps it (its ``Cache`` table), for `DiskAdapter._fetch`.
_SELECT = (
    "SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = 1"
    " AND (expire_time IS NULL OR expire_time > ?)"
)


def _retried_while_locked(setup: Callable[[], None], within: float = 60.0) -> None:
    """Run ``setup`` (idempotent), again while SQLite answers "database is locked": several
    workers starting at once on a new directory all create its tables, and switching a new
    database to WAL takes a lock SQLite does not wait for (diskcache retries its own set-up
    the same way)."""
    deadline = time.monotonic() + within
    while True:
        try:
            setup()
            return
        except sqlite3.OperationalError as exc:  # noqa: PERF203 (once at start-up)
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


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
        shared_dir: bool = False,
    ) -> None:
        path = os.fspath(directory)
        if not os.path.isabs(path):
            raise ConfigError(f"the disk store needs an absolute path, not {path!r}")
        path = os.path.normpath(path)
        _check_directory(path, shared_dir)
        self.directory = path
        self.shared_dir = shared_dir
        self.namespace = namespace or "isr"
        ns = prefix(namespace)
        self._e, self._l, self._i, self._c, self._gen = (
            f"{ns}:e:",
            f"{ns}:l:",
            f"{ns}:i:",
            f"{ns}:c:",
            f"{ns}:gen",
        )
        self._tag_prefix = f"{ns}:"
        self._v = f"{ns}:v:"
        self.codec: Codec = codec or JsonCodec()
        self._refusals = Refusals("disk store")
        self._tags_path = os.path.join(path, _TAGS_DB)
        if not shared_dir:
            _owner_only_file(os.path.join(path, DBNAME))
            _owner_only_file(self._tags_path)
        settings: dict[str, Any] = {} if size_limit is None else {"size_limit": size_limit}
        disk = _SharedDisk if shared_dir else _Disk
        self._cache = diskcache.Cache(path, disk=disk, **settings)
        #: diskcache's per-thread connection (and its check for a fork), for `_fetch`; None:
        #: read through ``Cache.get`` (bookkeeping on, or a diskcache without it).
        self._con: Callable[[diskcache.Cache], sqlite3.Connection] | None = None
        con = getattr(type(self._cache), "_con", None)
        cache = self._cache
        if (
            isinstance(con, property)
            and con.fget is not None
            and not cache.statistics
            and cache.eviction_policy == "least-recently-stored"
        ):
            self._con = con.fget
        self._generation = GenerationCache(generation_poll)
        #: The latest of every record seen or written, given back should the record vanish.
        self._known = Generation()
        # A local read the decorator serves from directly, checking ``gen`` (kept current
        # by ``get``, at most ``generation_poll`` old) and the clock, as for the memory store.
        self.peek = self.get
        self.gen = self.generation().current
        self._local_db = threading.local()
        self._dbs: list[sqlite3.Connection] = []
        self._dbs_lock = threading.Lock()
        _retried_while_locked(self._create_tables)

    def _create_tables(self) -> None:
        """The tag table, the registry of instances and the invalidation log (each made
        once, whoever comes first)."""
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS isr_tags ("
                " tag TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (tag, key))"
            )
            db.execute("CREATE INDEX IF NOT EXISTS isr_tags_key ON isr_tags (key)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS isr_instances ("
                " ns TEXT NOT NULL, id TEXT NOT NULL, record TEXT NOT NULL,"
                " PRIMARY KEY (ns, id))"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS isr_log ("
                " seq INTEGER PRIMARY KEY AUTOINCREMENT, ns TEXT NOT NULL, ms INTEGER NOT NULL,"
                " record TEXT NOT NULL, confirmation TEXT)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS isr_log_ns ON isr_log (ns, seq)")

    @classmethod
    def from_url(
        cls, url: str, *, namespace: str | None = None, codec: Codec | None = None
    ) -> DiskAdapter:
        """The store a ``disk:///absolute/path`` URL names; bad input is `isr.ConfigError`."""
        parts = split_url(url)
        if parts.netloc or not parts.path.startswith("/") or parts.fragment:
            raise ConfigError(
                f"cache URL {redact_url(url)!r}: the disk store needs an absolute path, as in "
                "disk:///var/cache/myapp (three slashes; no '#' in the path)"
            )
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = set(options) - {"size_limit", "shared_dir"}
        if unknown:
            raise ConfigError(
                f"cache URL {redact_url(url)!r}: disk:// takes only ?size_limit=BYTES and "
                f"?shared_dir=true (unknown: {', '.join(sorted(unknown))})"
            )
        size_limit = None
        if "size_limit" in options:
            try:
                size_limit = int(options["size_limit"])
            except ValueError:
                size_limit = None
            if size_limit is None or size_limit < 1:
                raise ConfigError(
                    f"cache URL {redact_url(url)!r}: size_limit must be a positive integer"
                )
        shared_dir = options.get("shared_dir", "false").lower()
        if shared_dir not in ("true", "false", "1", "0"):
            raise ConfigError(f"cache URL {redact_url(url)!r}: shared_dir must be true or false")
        return cls(
            parts.path,
            namespace=namespace,
            codec=codec,
            size_limit=size_limit,
            shared_dir=shared_dir in ("true", "1"),
        )

    # ------------------------------------------------------------------ reading records

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

    def _refused(self, name: str, message: str) -> None:
        self.errors += 1
        self._refusals.note(name, message)

    def _fetch(self, name: str) -> Any:
        """``self._cache.get(name, _NO_VALUE)``, in one statement on diskcache's own
        connection: with statistics off and least-recently-stored eviction (this store's
        settings), diskcache's get does the same and only adds its bookkeeping's steps, a
        tenth of a disk hit."""
        con = self._con
        if con is None:
            return self._cache.get(name, _NO_VALUE)
        rows = con(self._cache).execute(_SELECT, (name, time.time())).fetchall()
        if not rows:
            return _NO_VALUE
        ((mode, filename, value),) = rows
        try:
            return self._cache._disk.fetch(mode, filename, value, False)
        except OSError:  # its file went meanwhile (culled, replaced): missing, as diskcache says
            return _NO_VALUE

    def _read(self, name: str) -> str | bytes | None:
        """The text or bytes stored under ``name``; None when there is none, or when what
        is there is refused (counted, logged once)."""
        data = self._fetch(name)
        kind = type(data)
        if kind is str or kind is bytes:
            return data  # type: ignore[no-any-return]
        if data is not _NO_VALUE:
            self._refused(name, f"the record {name!r} {data.why}")
        return None

    # ------------------------------------------------------------------ Adapter

    def get(self, key: str) -> Entry | None:
        if self._generation.due():
            self.generation()  # keeps ``gen`` current for the decorator's hot path
        if not key.isascii():
            checked(key)
        name = self._e + key
        data = self._fetch(name)
        if type(data) is not str and type(data) is not bytes:
            if data is not _NO_VALUE:
                self._refused(name, f"the record {name!r} {data.why}")
            return None
        try:
            entry = self.codec.loads(name, data)
        except CodecError as exc:
            self._refused(name, str(exc))
            return None
        if entry.gen == self.gen:
            entry.gen = self.gen  # the very object the hot path compares with ``is``
        if entry.tags:  # marked by any invalidation of its tags since it was stored
            return tag_mark(entry, [self._read(self._v + tag) for tag in entry.tags])
        return entry

    def store(self, key: str, entry: Entry, since: float) -> Entry | None:
        """Store a fetched value: marked by an invalidation since ``since`` (markers), and
        stamped with its tags' record numbers (see `isr.adapters.records.tag_mark`)."""
        mode = self.invalidated_since(key, entry.tags, since)
        if mode is Mode.PURGE:
            return None
        if mode is not None:
            entry = entry.marked(mode)
        if entry.tags:
            entry.tagv = tag_numbers([self._read(self._v + tag) for tag in entry.tags])
        self.set(key, entry)
        return entry

    def invalidate_tag(self, tag: str, mode: Mode, before: float | None = None) -> int:
        """A tag's invalidation: its record moves on (one write, whatever the number of
        entries: each sees it when next read), its rows in the tag table go (their count is
        the answer)."""
        name = self._v + checked(tag, "tag")
        now = int(time.time() * 1000)
        with self._cache.transact():
            old = parse_generation(self._read(name)) or Generation()
            self._cache.set(name, generation_text(old.bumped(mode, now)))
        row = (self._tag_prefix + tag,)
        with self._db() as db:
            # Counted: our rows (text keys), not one planted by whoever writes the directory.
            (count,) = db.execute(
                "SELECT COUNT(*) FROM isr_tags WHERE tag = ? AND typeof(key) = 'text'", row
            ).fetchone()
            db.execute("DELETE FROM isr_tags WHERE tag = ?", row)
        return int(count)

    def set(self, key: str, entry: Entry) -> None:
        name = self._e + checked(key)
        checked_all(entry.tags)
        data = self.codec.dumps(name, entry)  # a CodecError leaves the store untouched
        life = lifetime(entry)
        expire = None if life is None else max(life, 1.0)
        # JSON is kept as text: diskcache stores and returns str as is, no bytes round trip.
        record: bytes | str = data.decode() if self.codec.text else data
        self._cache.set(name, record, expire=expire)
        ns = self._tag_prefix
        with self._db() as db:
            # Rows of tags an earlier entry under the key had and this one has not go (the
            # namespace's rows: the table is shared by every namespace of the directory).
            kept = ",".join("?" * len(entry.tags))
            db.execute(
                "DELETE FROM isr_tags WHERE key = ? AND substr(tag, 1, ?) = ?"
                f" AND tag NOT IN ({kept})",
                [key, len(ns), ns, *(ns + tag for tag in entry.tags)],
            )
            if entry.tags:
                db.executemany(
                    "INSERT OR IGNORE INTO isr_tags (tag, key) VALUES (?, ?)",
                    [(ns + tag, key) for tag in entry.tags],
                )

    def delete(self, key: str) -> None:
        self._cache.delete(self._e + checked(key))

    def tagged(self, tag: str) -> list[str]:
        rows = self._db().execute(
            "SELECT key FROM isr_tags WHERE tag = ?", (self._tag_prefix + checked(tag, "tag"),)
        )
        return [key for (key,) in rows if type(key) is str]

    def untag(self, tag: str, keys: list[str]) -> None:
        """Forget index rows whose entry is gone or no longer carries ``tag``."""
        if keys:
            name = self._tag_prefix + checked(tag, "tag")
            checked_all(keys, "key")
            with self._db() as db:
                db.executemany(
                    "DELETE FROM isr_tags WHERE tag = ? AND key = ?", [(name, key) for key in keys]
                )

    def _stored_generation(self) -> Generation:
        """The generation record as stored (an earlier release's is read and rewritten)."""
        data = self._cache.get(self._gen, _NO_VALUE)
        if data is _NO_VALUE:
            return Generation()
        value = parse_generation(data)
        if value is not None:
            return value
        why = "is not a generation record"
        if isinstance(data, Refused):
            why = data.why
            value = None if data.pickled is None else _old_generation(data.pickled)
            if value is not None:  # an earlier release's record: kept, as text from now on
                self._cache.set(self._gen, generation_text(value))
                return value
        self._refused(self._gen, f"the record {self._gen!r} {why}")
        return Generation()

    def generation(self) -> Generation:
        cached = self._generation.current()
        if cached is not None:
            return cached
        value = self._stored_generation()
        known = self._known
        if known.current and value.current < known.current:
            # The record vanished (diskcache culled it, a hand deleted it) or went back (the
            # directory restored from a copy): give it back what this process saw, and let
            # the runtime re-apply its recent invalidations.
            self.losses += 1
            logger.warning(
                "disk store %s lost its invalidation record; giving it back what this process saw",
                self.directory,
            )
            with self._cache.transact():
                value = self._stored_generation().merged(known)
                self._cache.set(self._gen, generation_text(value))
        return self._seen(value)

    def bump_generation(self, mode: Mode) -> Generation:
        now = int(time.time() * 1000)
        with self._cache.transact():
            bumped = self._stored_generation().bumped(mode, now, self._known.current)
            self._cache.set(self._gen, generation_text(bumped))
        return self._seen(bumped)

    def _seen(self, value: Generation) -> Generation:
        """Keep ``value`` as the record read or written now; remember the most seen."""
        self._known = self._known.merged(value)
        record = self._generation.update(value)
        self.gen = record.current
        return record

    def note_invalidation(self, kind: str, name: str, mode: Mode, at: float, ttl: float) -> None:
        marker = f"{self._i}{kind}:{checked(name, kind)}"
        with self._cache.transact():
            old = marker_mode(self._read(marker))
            if old is not None and old > int(mode):  # keep the stronger mode on record
                mode = Mode(old)
            self._cache.set(marker, marker_text(at, mode), expire=ttl)

    def invalidated_since(self, key: str, tags: tuple[str, ...], since: float) -> Mode | None:
        checked(key)
        checked_all(tags)
        names = [f"{self._i}key:{key}", *(f"{self._i}tag:{tag}" for tag in tags)]
        return strongest(map(self._read, names), since)

    def acquire(self, key: str, token: str, ttl: float) -> bool:
        return bool(self._cache.add(self._l + checked(key), token, expire=ttl))

    def fetch_locked(self, key: str) -> bool | None:
        return (self._l + checked(key)) in self._cache  # an expired lock is not in it

    def release(self, key: str, token: str) -> None:
        name = self._l + checked(key)
        with self._cache.transact():
            if self._read(name) == token:
                self._cache.delete(name)

    def claim(self, name: str, ttl: float) -> bool | None:
        return bool(self._cache.add(self._c + checked(name, "claim"), "1", expire=ttl))

    def unclaim(self, name: str) -> None:
        self._cache.delete(self._c + checked(name, "claim"))

    # ------------------------------------------------------------------ coherence

    def register(self, instance: Instance) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO isr_instances (ns, id, record) VALUES (?, ?, ?)",
                (self._tag_prefix, instance.id, instance_record(instance)),
            )

    def unregister(self, instance_id: str) -> None:
        with self._db() as db:
            db.execute(
                "DELETE FROM isr_instances WHERE ns = ? AND id = ?",
                (self._tag_prefix, instance_id),
            )

    def instances(self, now: float) -> list[Instance]:
        rows = self._db().execute(
            "SELECT id, record FROM isr_instances WHERE ns = ?", (self._tag_prefix,)
        )
        live, stale = [], []
        for iid, record in rows.fetchall():
            found = instance_from(record)
            if found is None or found.id != iid or is_stale(found, now):
                stale.append((self._tag_prefix, iid))
            elif is_live(found, now):
                live.append(found)
        if stale:
            with self._db() as db:
                db.executemany("DELETE FROM isr_instances WHERE ns = ? AND id = ?", stale)
        return sorted(live, key=lambda i: i.id)

    def log_invalidation(self, entry: LoggedInvalidation, keep: int) -> str | None:
        ms = int(entry.at * 1000)
        ns = self._tag_prefix
        with self._db() as db:
            seq = db.execute(
                "INSERT INTO isr_log (ns, ms, record) VALUES (?, ?, ?)",
                (ns, ms, entry.to_record()),
            ).lastrowid
            db.execute(
                "DELETE FROM isr_log WHERE ns = ? AND seq <= ("
                " SELECT seq FROM isr_log WHERE ns = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                (ns, ns, keep),
            )
        return f"{ms}-{seq}"

    def confirm_logged(self, ids: Sequence[str], confirmation: Confirmation) -> None:
        seqs = [(confirmation.to_record(), self._tag_prefix, _seq(i)) for i in ids]
        with self._db() as db:
            db.executemany("UPDATE isr_log SET confirmation = ? WHERE ns = ? AND seq = ?", seqs)

    def invalidation_log(self, limit: int) -> list[LoggedInvalidation]:
        rows = self._db().execute(
            "SELECT seq, ms, record, confirmation FROM isr_log WHERE ns = ?"
            " ORDER BY seq DESC LIMIT ?",
            (self._tag_prefix, limit),
        )
        found = (
            LoggedInvalidation.from_record(f"{ms}-{seq}", record, Confirmation.from_record(conf))
            for seq, ms, record, conf in rows.fetchall()
        )
        return [logged for logged in found if logged is not None]

    def close(self) -> None:
        self._cache.close()
        with self._dbs_lock:
            dbs, self._dbs = self._dbs, []
        for db in dbs:  # every thread's connection (check_same_thread=False allows this)
            db.close()
        self._local_db = threading.local()
