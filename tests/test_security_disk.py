"""The disk store attacked as a second local user would: whoever can write the cache
directory must not make the application run code, read or delete other files, or take the
directory over; the directory and its files are the application user's alone.

The code-execution tests plant pickles whose ``__reduce__`` creates a marker file, under
every name isr reads (the generation record, an entry, the invalidation markers, a lock, a
claim, a pickled key, the tag table), in rows and in value files, then open the store, read,
invalidate, warm and invalidate everything, with the JSON codec and with `PickleCodec`; the
marker must never appear. Planted with diskcache's own default Disk, which pickles anything
that is not text, bytes or a number: exactly what a hostile writer would use.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import sqlite3
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import diskcache
import pytest

import isr
from isr import Status
from isr._config import url_from_env, user_cache_dir
from isr._entry import Generation, Mode
from isr.adapters.disk import DiskAdapter

NS = "shop"
KEY = "post:1"


class Plant:
    """A pickle that, if ever unpickled, creates ``marker`` (and returns a harmless str)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (shutil.copyfile, (os.devnull, str(self.marker)))


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "code-ran"
    yield path
    assert not path.exists(), "a pickle planted in the cache directory was unpickled"


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    path = tmp_path / "cache"
    path.mkdir(mode=0o700)
    return path


CODECS = {"json": None, "pickle": isr.PickleCodec(b"an application key, 32 bytes ok")}


def plant_everything(directory: Path, marker: Path) -> None:
    """Pickles under every name the store reads, as rows and as value files."""
    with diskcache.Cache(str(directory)) as cache:  # the stock Disk: pickles objects
        for name in (
            f"{NS}:gen",
            f"{NS}:e:{KEY}",
            f"{NS}:i:key:{KEY}",
            f"{NS}:i:tag:posts",
            f"{NS}:c:webhook:abc",
        ):
            cache.set(name, Plant(marker))
        cache.set(f"{NS}:e:post:big", [Plant(marker), "x" * 40_000])  # a pickled value file
        cache.set((f"{NS}:e:", KEY), Plant(marker))  # a pickled key
    with sqlite3.connect(directory / "isr-tags.sqlite3") as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS isr_tags (tag TEXT NOT NULL, key TEXT NOT NULL, "
            "PRIMARY KEY (tag, key))"
        )
        db.execute("INSERT INTO isr_tags VALUES (?, ?)", (f"{NS}:posts", pickle.dumps(1)))
    db.close()


@pytest.mark.parametrize("codec", CODECS)
def test_pickles_planted_under_every_name_never_run(
    directory: Path, marker: Path, codec: str, caplog: pytest.LogCaptureFixture
) -> None:
    plant_everything(directory, marker)
    origin = {"calls": 0}
    with caplog.at_level(logging.WARNING, logger="isr"):
        rt = isr.ISR(f"disk://{directory}", namespace=NS, codec=CODECS[codec])

        @rt.with_revalidate("post:{n}", ttl=60, tags=["posts"])
        def post(n: str) -> str:
            origin["calls"] += 1
            return f"post {n}"

        assert rt.adapter.generation() == Generation()  # the planted record: missing
        assert post.lookup("1").status is Status.MISS  # the planted entry: missing
        assert post.lookup("big").status is Status.MISS
        assert post.lookup("1").status is Status.HIT  # replaced by a record of ours
        assert post("2") == "post 2"  # warm: writes beside the planted rows
        assert rt.invalidate_sync(KEY) is True
        assert rt.invalidate_tag_sync("posts") == 3  # ours; the planted index row skipped
        rt.invalidate_all_sync("purge")
        assert rt.adapter.claim("webhook:abc", 5) is False  # held (by the planted row)
        assert post("1") == "post 1"
        assert rt.stats().store_errors >= 5  # each refused row counted
        rt.close()
    refused = [r.getMessage() for r in caplog.records if "isr never unpickles" in r.getMessage()]
    assert len(refused) == len(set(refused)) >= 3  # logged, once per record
    # The planted entry is gone for good: rewritten as a record of ours.
    store = DiskAdapter(directory, namespace=NS, codec=CODECS[codec])
    assert store.get(KEY) is not None
    store.close()


def test_a_pickled_lock_or_marker_is_read_as_missing(directory: Path, marker: Path) -> None:
    """The paths a fetch takes on a shared store: its lock and the markers it checks."""
    with diskcache.Cache(str(directory)) as cache:
        cache.set(f"{NS}:l:{KEY}", Plant(marker), expire=60)
        cache.set(f"{NS}:i:key:{KEY}", Plant(marker), expire=60)
        cache.set(f"{NS}:i:tag:posts", Plant(marker), expire=60)
    store = DiskAdapter(directory, namespace=NS)
    assert store.invalidated_since(KEY, ("posts",), 0.0) is None
    store.note_invalidation("key", KEY, Mode.EXPIRE, time.time(), 60)  # overwrites it
    assert store.invalidated_since(KEY, ("posts",), 0.0) is Mode.EXPIRE
    assert store.acquire(KEY, "mine", ttl=5) is False  # the planted lock is live
    store.release(KEY, "mine")  # not ours: left alone, never loaded
    assert store.errors == 5  # each read of a planted row, the same row twice too
    store.close()


def test_an_earlier_releases_cache_keeps_its_invalidate_all_and_is_rewritten(
    directory: Path,
) -> None:
    """Earlier releases let diskcache pickle the generation record (a tuple) and the
    markers: the record is read from the pickle's opcodes alone (nothing is unpickled),
    so an invalidate-all purge made before the upgrade still holds; the markers are
    missing. Nothing crashes."""
    with diskcache.Cache(str(directory)) as cache:
        cache.set("isr:gen", (5, 0, 3, 5))  # purged at 5: entries fetched before are gone
        cache.set("isr:i:key:post:1", (time.time(), 3), expire=30)
        entry = '[1,"old",1000.0,60.0,null,86400.0,null,4,[]]'  # JSON text, gen 4
        cache.set("isr:e:post:1", entry)
    rt = isr.ISR(f"disk://{directory}")
    assert rt.adapter.generation() == Generation(5, 0, 3, 5)
    get = rt.with_revalidate("post:{n}", ttl=60)(lambda n: "new")
    assert get.lookup("1").value == "new"  # the purge before the upgrade still applies
    assert rt.adapter.invalidated_since("post:1", (), 0.0) is None
    rt.invalidate_all_sync("expire")
    rt.close()
    with diskcache.Cache(str(directory)) as cache:
        current, revalidate, expire, purge = cache.get("isr:gen").split()  # text from now on
        assert (revalidate, purge) == ("0", "5")
        assert int(current) == int(expire) > 6  # moved on (a time on a shared store)


@pytest.mark.parametrize(
    "record",
    [
        b"\x80\x05\x95\x0c\x00\x00\x00\x00\x00\x00\x00(K\x05K\x00K\x00K\x05\x85\x94.",  # TUPLE1
        b"\x80\x05K\x01K\x02\x86\x94.",  # a 2-tuple
        b"\x80\x05(K\x01K\x02K\x03\x8a\x01\xfft.",  # a negative number
        b"not a pickle at all",
    ],
)
def test_an_old_generation_record_of_another_shape_is_missing(
    directory: Path, record: bytes
) -> None:
    path = directory / "cache.db"
    with diskcache.Cache(str(directory)):
        pass
    with sqlite3.connect(path) as db:  # a pickle-mode row, as an attacker could write it
        db.execute(
            "INSERT INTO Cache (key, raw, store_time, expire_time, access_time, access_count,"
            " tag, size, mode, filename, value) VALUES ('isr:gen', 1, 0, NULL, 0, 0, NULL, 0,"
            " 4, NULL, ?)",
            (record,),
        )
    db.close()
    store = DiskAdapter(directory)
    assert store.generation() == Generation()
    assert store.errors == 1
    store.close()


def plant_row(directory: Path, name: str, mode: int, filename: str) -> None:
    """A row naming a value file, written as an attacker would, straight into SQLite."""
    with diskcache.Cache(str(directory)):
        pass
    with sqlite3.connect(directory / "cache.db") as db:
        db.execute(
            "INSERT INTO Cache (key, raw, store_time, expire_time, access_time, access_count,"
            " tag, size, mode, filename, value) VALUES (?, 1, 0, NULL, 0, 0, NULL, 1, ?, ?,"
            " NULL)",
            (name, mode, filename),
        )
    db.close()


@pytest.mark.parametrize("where", ["absolute", "relative", "symlink"])
def test_a_row_naming_another_file_neither_reads_nor_deletes_it(
    directory: Path, tmp_path: Path, where: str
) -> None:
    victim = tmp_path / "victim.json"
    victim.write_text('[1,"the victim file",1000.0,60.0,null,60.0,null,0,[]]')
    filename = {
        "absolute": str(victim),
        "relative": os.path.join("..", "victim.json"),
        "symlink": os.path.join("ab", "cd", "0" * 28 + ".val"),
    }[where]
    if where == "symlink":
        (directory / "ab" / "cd").mkdir(parents=True)
        (directory / filename).symlink_to(victim)
    plant_row(directory, "isr:e:k", 3, filename)  # MODE_TEXT
    rt = isr.ISR(f"disk://{directory}")
    assert rt.adapter.get("k") is None  # not read through the row
    assert rt.invalidate_sync("k", mode="purge") is False
    rt.adapter.set("k", _entry())  # overwriting the row cleans its file up
    rt.adapter.delete("k")
    rt.close()
    assert victim.exists()  # and not deleted either


def _entry() -> Any:
    from isr._entry import Entry, Policy

    return Entry("v", time.time(), Policy(60, None, 60), 0)


def test_a_tampered_settings_table_cannot_move_value_files(directory: Path) -> None:
    """diskcache copies its ``disk_*`` settings onto its Disk: a planted one must not
    point the store's value files elsewhere."""
    elsewhere = directory.parent / "elsewhere"
    elsewhere.mkdir()
    with diskcache.Cache(str(directory)):
        pass
    with sqlite3.connect(directory / "cache.db") as db:
        db.execute("INSERT INTO Settings VALUES ('disk__directory', ?)", (str(elsewhere),))
        db.execute("UPDATE Settings SET value = 'big' WHERE key = 'disk_min_file_size'")
    db.close()
    rt = isr.ISR(f"disk://{directory}")
    get = rt.with_revalidate("big", ttl=60)(lambda: "x" * 100_000)
    assert get() == "x" * 100_000
    assert get.lookup().status is Status.HIT
    rt.close()
    assert list(elsewhere.iterdir()) == []


# ------------------------------------------------------------------ the directory


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in root.rglob("*")}


def test_a_new_directory_and_everything_in_it_is_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask, which made 0755 directories and 0644 files
    try:
        directory = tmp_path / "a" / "b" / "cache"
        rt = isr.ISR(f"disk://{directory}", namespace=NS)
        get = rt.with_revalidate("p:{n}", ttl=60, tags=["t"])(lambda n: "x" * 100_000)
        get(1)  # a value over 32 KB: a value file in two new subdirectories
        rt.invalidate_tag_sync("t")
        get(2)
        found = modes(tmp_path / "a")  # while open: SQLite removes the -wal file on close
        rt.close()
    finally:
        os.umask(old)
    assert any(name.endswith(".val") for name in found)
    assert any(name.endswith("-wal") for name in found)
    for name, mode in found.items():
        is_dir = (tmp_path / "a" / name).is_dir()
        assert mode == (0o700 if is_dir else 0o600), (name, oct(mode))


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702, 0o1777])
def test_a_directory_others_can_write_is_refused(directory: Path, mode: int) -> None:
    directory.chmod(mode)
    with pytest.raises(isr.ConfigError, match="writable by other users"):
        isr.ISR(f"disk://{directory}")
    assert os.listdir(directory) == []  # refused before anything was opened
    rt = isr.ISR(f"disk://{directory}?shared_dir=true")  # shared on purpose: accepted
    rt.close()


def test_a_symlinked_directory_is_refused(tmp_path: Path, directory: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(directory)
    with pytest.raises(isr.ConfigError, match="is a symbolic link"):
        isr.ISR(f"disk://{link}")
    assert os.listdir(directory) == []
    isr.ISR(f"disk://{link}?shared_dir=true").close()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown needs root")
def test_a_directory_of_another_user_is_refused(directory: Path) -> None:
    os.chown(directory, 65534, 65534)  # nobody's
    with pytest.raises(isr.ConfigError, match="belongs to uid 65534"):
        isr.ISR(f"disk://{directory}")
    assert os.listdir(directory) == []


def test_a_readable_directory_is_used_with_a_warning(
    directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory.chmod(0o755)  # as earlier releases made it
    with caplog.at_level(logging.WARNING, logger="isr"):
        isr.ISR(f"disk://{directory}").close()
    assert "other users can read the cached data (mode 0755)" in caplog.text


def test_a_path_naming_an_environment_variable_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ISR_TEST_ELSEWHERE", str(tmp_path / "elsewhere"))
    with pytest.raises(isr.ConfigError, match="names an environment variable"):
        isr.ISR(f"disk://{tmp_path}/$ISR_TEST_ELSEWHERE")
    assert not (tmp_path / "elsewhere").exists()


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory every local user may write, as /tmp is (sticky, world-writable)."""
    path = Path(tempfile.mkdtemp(prefix="isr-shared-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_another_user_who_made_the_directory_first_gets_nothing(
    shared_tmp: Path, marker: Path
) -> None:
    """The attack on the old default (``<tempdir>/isr-cache``): a second local user
    (``nobody``, for real, in its own process) creates the directory first and plants a
    pickle under the generation record. The application refuses the directory."""
    directory = shared_tmp / "isr-cache"
    bait = shared_tmp / "bait"
    with diskcache.Cache(str(bait)) as cache:  # made here: the test's Python is root's own
        cache.set("isr:gen", Plant(marker))
    (bait / "cache.db").chmod(0o644)
    bait.chmod(0o755)
    subprocess.run(  # nobody makes the directory first and puts the pickle in
        ["sh", "-c", f"mkdir -m 755 {directory} && cp {bait}/cache.db {directory}/cache.db"],
        check=True,
        user=65534,
        group=65534,
        cwd="/",
    )
    assert (directory / "cache.db").exists()
    with pytest.raises(isr.ConfigError, match="belongs to uid 65534"):
        isr.ISR.from_env({"ISR_CACHE_URL": f"disk://{directory}"})


def test_single_host_without_a_directory_uses_the_users_cache_dir(tmp_path: Path) -> None:
    env = {"ISR_TARGET": "single-host", "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert url_from_env(env) == f"disk://{tmp_path / 'xdg' / 'isr-runtime'}"
    rt = isr.ISR.from_env(env)
    assert isinstance(rt.adapter, DiskAdapter)
    assert not rt.adapter.directory.startswith(tempfile.gettempdir() + os.sep + "isr")
    rt.close()
    for path in (tmp_path / "xdg", tmp_path / "xdg" / "isr-runtime"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700


@pytest.mark.parametrize(
    ("platform", "env", "expected"),
    [
        ("linux", {"HOME": "/home/ann"}, "/home/ann/.cache/isr-runtime"),
        ("linux", {"HOME": "/home/ann", "XDG_CACHE_HOME": "/var/c"}, "/var/c/isr-runtime"),
        ("linux", {"HOME": "/home/ann", "XDG_CACHE_HOME": "rel"}, "/home/ann/.cache/isr-runtime"),
        ("freebsd14", {"HOME": "/home/ann"}, "/home/ann/.cache/isr-runtime"),
        ("darwin", {"HOME": "/Users/ann"}, "/Users/ann/Library/Caches/isr-runtime"),
        (
            "win32",
            {"LOCALAPPDATA": "C:\\Users\\ann\\AppData\\Local"},
            "C:\\Users\\ann\\AppData\\Local\\isr-runtime\\Cache",
        ),
    ],
)
def test_the_users_cache_dir_follows_the_platforms_convention(
    platform: str, env: dict[str, str], expected: str
) -> None:
    assert user_cache_dir(env, platform) == expected
