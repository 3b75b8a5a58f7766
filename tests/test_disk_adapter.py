"""The disk store: shared by processes, survives restarts, encodes with a codec."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

import isr
from isr import Status
from isr._codec import PickleCodec
from isr._entry import Mode
from isr.adapters.disk import DiskAdapter

from .conftest import FakeClock


def test_entries_survive_a_restart(tmp_path: Path) -> None:
    url = f"disk://{tmp_path}"
    first = isr.ISR(url)

    @first.with_revalidate("k:{x}", ttl=60)
    def load(x: int) -> dict[str, int]:
        return {"x": x}

    load(1)
    first.close()
    second = isr.ISR(url)
    again = second.with_revalidate("k:{x}", ttl=60)(lambda x: {"x": -1})
    assert again.lookup(1).status is Status.HIT
    assert again(1) == {"x": 1}
    second.close()


def test_a_value_json_cannot_hold_fails_naming_the_key_and_nothing_is_cached(
    tmp_path: Path,
) -> None:
    rt = isr.ISR(f"disk://{tmp_path}")

    @rt.with_revalidate("when:{x}", ttl=60)
    def load(x: int) -> object:
        return {"at": time}  # a module: not JSON

    with pytest.raises(isr.CodecError, match="cannot cache the value for 'isr:e:when:1' as JSON"):
        load(1)
    assert rt.adapter.get("when:1") is None
    rt.close()


def test_pickle_is_an_explicit_signed_opt_in(tmp_path: Path) -> None:
    rt = isr.ISR(f"disk://{tmp_path}", codec=PickleCodec(b"s" * 32))

    @rt.with_revalidate("set:{x}", ttl=60)
    def load(x: int) -> set[int]:
        return {x, x + 1}

    assert load(1) == {1, 2}
    assert load.lookup(1).value == {1, 2}
    # a record someone else wrote into the store, unsigned: refused, counted, refetched
    rt.adapter._cache.set("isr:e:set:2", b"\x00" * 40)  # type: ignore[attr-defined]
    assert load.lookup(2).status is Status.MISS
    assert rt.stats().store_errors >= 1
    rt.close()


def test_two_runtimes_on_one_directory_see_each_others_invalidations(tmp_path: Path) -> None:
    a = isr.ISR(DiskAdapter(tmp_path, generation_poll=0.0))
    b = isr.ISR(DiskAdapter(tmp_path, generation_poll=0.0))
    version = {"n": 1}

    def loader(rt: isr.ISR) -> isr.SyncCached[[str], str]:
        @rt.with_revalidate("post:{slug}", ttl=60, tags=["posts"])
        def post(slug: str) -> str:
            return f"{slug} v{version['n']}"

        return post

    pa, pb = loader(a), loader(b)
    assert pa("x") == "x v1"
    assert pb.lookup("x").status is Status.HIT  # b reads what a stored
    version["n"] = 2
    assert a.invalidate_tag_sync("posts") == 1
    assert pb.lookup("x").value == "x v2"  # b fetches at once after a's publish
    a.invalidate_all_sync(Mode.REVALIDATE)
    assert pb.lookup("x").status is Status.STALE  # within b's generation poll (0 s here)
    a.close()
    b.close()


def test_fetch_lock_is_exclusive_token_checked_and_expires(tmp_path: Path) -> None:
    store = DiskAdapter(tmp_path)
    assert store.acquire("k", "t1", ttl=0.3) is True
    assert store.acquire("k", "t2", ttl=0.3) is False
    store.release("k", "t2")  # not the holder: nothing happens
    assert store.acquire("k", "t2", ttl=0.3) is False
    time.sleep(0.4)
    assert store.acquire("k", "t2", ttl=0.3) is True  # the first holder's lock expired
    store.release("k", "t2")
    assert store.acquire("k", "t3", ttl=0.3) is True
    store.close()


def test_namespaces_isolate_applications_in_one_directory(tmp_path: Path) -> None:
    one = isr.ISR(f"disk://{tmp_path}", namespace="one")
    two = isr.ISR(f"disk://{tmp_path}", namespace="two")
    one.with_revalidate("k", ttl=60)(lambda: "one")()
    assert two.with_revalidate("k", ttl=60)(lambda: "two")() == "two"
    one.invalidate_all_sync("purge")
    assert two.adapter.get("k") is not None
    one.close()
    two.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("disk://relative/path", "needs an absolute path"),
        ("disk:///tmp/x?ttl=3", "unknown: ttl"),
        ("disk:///tmp/x?size_limit=big", "size_limit must be a positive integer"),
        ("disk:///tmp/x?size_limit=0", "size_limit must be a positive integer"),
        ("disk:///tmp/x?shared_dir=maybe", "shared_dir must be true or false"),
        ("disk:///tmp/x#frag", "no .#. in the path"),
    ],
)
def test_bad_disk_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(isr.ConfigError, match=message):
        isr.ISR(url)


def test_hits_stay_on_the_fast_path_past_generation_256(tmp_path: Path) -> None:
    rt = isr.ISR(DiskAdapter(tmp_path, generation_poll=0.0))
    for _ in range(300):
        rt.invalidate_all_sync()

    @rt.with_revalidate("k", ttl=60)
    def load() -> str:
        return "v"

    load()
    loader = load.__isr_loader__  # type: ignore[attr-defined]
    before = loader.fast_hits()
    for _ in range(10):
        load()
    assert loader.fast_hits() - before == 10  # the generation re-read keeps gen's identity
    rt.close()


@pytest.mark.parametrize("caller", ["sync", "async"])
def test_invalidating_a_tag_costs_one_write_and_starts_its_index_over(
    tmp_path: Path, caller: str
) -> None:
    """A tag's invalidation moves its record on (every entry sees it when next read) and
    forgets the tag's index rows, those of entries diskcache dropped behind its back (culled,
    expired) included; an entry stored again indexes itself again."""
    rt = isr.ISR(f"disk://{tmp_path}")

    @rt.with_revalidate("k:{x}", ttl=60, tags=["t"])
    def load(x: int) -> int:
        return x

    load(1)
    load(2)
    rt.adapter.delete("k:1")  # as a cull would
    if caller == "sync":
        affected = rt.invalidate_tag_sync("t")
    else:
        affected = anyio.run(rt.invalidate_tag, "t")
    assert affected == 2  # what the index listed: the culled one included
    assert rt.adapter.tagged("t") == []
    assert load.lookup(2).status is isr.Status.MISS  # the record reached it
    assert load.lookup(2).status is isr.Status.HIT
    assert rt.adapter.tagged("t") == ["k:2"]
    rt.close()


def test_an_injected_clock_does_not_cut_short_how_long_diskcache_keeps_an_entry(
    tmp_path: Path,
) -> None:
    """Windows are on the runtime's clock (a test's may start at 1000 s); diskcache's expiry
    is on the wall clock: an entry is kept for its windows from the write, whatever the
    runtime's clock says."""
    clock = FakeClock()
    rt = isr.ISR(f"disk://{tmp_path}", clock=clock)

    @rt.with_revalidate("k:{x}", ttl=60, swr=60, stale_if_error=60)
    def load(x: int) -> int:
        return x

    load(1)
    adapter = rt.adapter
    assert isinstance(adapter, DiskAdapter)
    _, expires = adapter._cache.get("isr:e:k:1", expire_time=True)
    assert 179 < expires - time.time() <= 180
    rt.close()


@pytest.mark.parametrize("call", ["sync", "async"])
def test_a_value_the_codec_refuses_is_never_answered_with_the_old_one(
    tmp_path: Path, call: str
) -> None:
    """The origin starts returning what JSON cannot hold after the page expired: each read
    raises the CodecError and asks the origin again, the first and the ones in the failure's
    backoff alike; none gets the old value as STALE-IF-ERROR."""
    clock = FakeClock()
    rt = isr.ISR(f"disk://{tmp_path}", clock=clock)
    calls: list[int] = []

    def value(x: int) -> object:
        calls.append(x)
        return {"at": 1} if len(calls) == 1 else {"at": time}  # a module: not JSON

    windows = rt.with_revalidate("when:{x}", ttl=10, swr=10, stale_if_error=600)
    if call == "sync":
        load: Callable[[int], object] = windows(value)
    else:

        async def avalue(x: int) -> object:
            return value(x)

        aload = windows(avalue)

        def load(x: int) -> object:
            return anyio.run(aload, x)

    assert load(1) == {"at": 1}
    clock.advance(30)  # past ttl and swr, well within stale_if_error
    for _ in range(3):
        with pytest.raises(isr.CodecError, match="'isr:e:when:1'"):
            load(1)
    assert len(calls) == 4
    assert rt.stats().stale_if_error == 0
    rt.close()


def test_a_large_value_lives_in_a_file_and_a_file_gone_is_a_miss(tmp_path: Path) -> None:
    """A record of 32 KiB or more is kept in a file of its own (diskcache's layout): it is
    read back whole, and one removed under the record (a cleaner, a full disk's culling)
    is a miss that fetches again, not an error."""
    rt = isr.ISR(f"disk://{tmp_path / 'cache'}")
    calls: list[int] = []

    @rt.with_revalidate("big:{n}", ttl=60)
    def big(n: int) -> str:
        calls.append(n)
        return "x" * 40_000 + str(len(calls))

    assert big(1) == "x" * 40_000 + "1"
    assert big.lookup(1).status is Status.HIT
    assert big(1) == "x" * 40_000 + "1"
    files = list((tmp_path / "cache").rglob("*.val"))
    assert len(files) == 1
    files[0].unlink()
    assert big.lookup(1).status is Status.MISS
    assert big(1) == "x" * 40_000 + "2"
    assert rt.stats().store_errors == 0
    rt.close()
