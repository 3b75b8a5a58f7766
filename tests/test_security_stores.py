"""What a shared store's names and records promise, attacked on real stores (a disk
directory, a real redis-server): no two (namespace, key) pairs share a name; a signed record
moved to another name is not served; a record refused is logged once, not on every read;
a key that is not valid Unicode is the same clear error on every store."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import isr
from isr import Status
from isr._entry import Entry, Mode, Policy
from isr.adapters.disk import DiskAdapter
from isr.adapters.names import prefix
from isr.adapters.redis import RedisAdapter

from .redis_server import RedisServer, free_port

SHARED = ("disk", "redis")
CODEC = isr.PickleCodec(b"the application's key, 32 bytes")


class Place:
    """A shared store's location, and raw access to what it holds (as an attacker has)."""

    def __init__(self, kind: str, tmp_path: Path, server: RedisServer) -> None:
        self.kind = kind
        self.url = f"disk://{tmp_path / 'cache'}" if kind == "disk" else server.url
        self._client = redis.Redis.from_url(server.url) if kind == "redis" else None

    def runtime(self, namespace: str, **options: Any) -> isr.ISR:
        return isr.ISR(self.url, namespace=namespace, **options)

    def raw_get(self, rt: isr.ISR, name: str) -> Any:
        if self._client is not None:
            return self._client.get(name)
        adapter = rt.adapter
        assert isinstance(adapter, DiskAdapter)
        return adapter._cache.get(name)

    def raw_set(self, rt: isr.ISR, name: str, value: Any) -> None:
        if self._client is not None:
            self._client.set(name, value)
        else:
            adapter = rt.adapter
            assert isinstance(adapter, DiskAdapter)
            adapter._cache.set(name, value)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


@pytest.fixture(params=SHARED)
def place(
    request: pytest.FixtureRequest, tmp_path: Path, redis_server: RedisServer
) -> Iterator[Place]:
    found = Place(str(request.param), tmp_path, redis_server)
    yield found
    found.close()


def unique(word: str) -> str:
    return f"{word}-{uuid.uuid4().hex[:8]}"


def loader(rt: isr.ISR, who: str) -> isr.SyncCached[[str], str]:
    @rt.with_revalidate("user:{name}", ttl=60)
    def user(name: str) -> str:
        return f"{name} as seen by {who}"

    return user


def test_a_signed_record_moved_to_another_key_or_namespace_is_not_served(place: Place) -> None:
    ns, other_ns = unique("blog"), unique("shop")
    rt, other = place.runtime(ns, codec=CODEC), place.runtime(other_ns, codec=CODEC)
    loader(rt, "blog")("alice")
    alice = place.raw_get(rt, f"{ns}:e:user:alice")
    place.raw_set(rt, f"{ns}:e:user:bob", alice)  # alice's record under bob's key
    place.raw_set(rt, f"{other_ns}:e:user:alice", alice)  # and into another namespace
    bob = loader(rt, "blog").lookup("bob")
    assert (bob.value, bob.status) == ("bob as seen by blog", Status.MISS)
    moved = loader(other, "shop").lookup("alice")
    assert (moved.value, moved.status) == ("alice as seen by shop", Status.MISS)
    assert rt.stats().store_errors >= 1
    assert other.stats().store_errors >= 1
    rt.close()
    other.close()


def test_a_refused_record_is_logged_once_and_counted_each_time(
    place: Place, caplog: pytest.LogCaptureFixture
) -> None:
    ns = unique("blog")
    rt = place.runtime(ns, codec=CODEC)
    place.raw_set(rt, f"{ns}:e:user:mallory", b"\x00" * 40)
    get = loader(rt, "blog")
    with caplog.at_level(logging.WARNING, logger="isr"):
        for _ in range(3):
            rt.adapter.get("user:mallory")
        assert get.lookup("mallory").status is Status.MISS  # and the fetch's own reads
    lines = [r for r in caplog.records if "mallory" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert rt.stats().store_errors >= 4
    rt.close()


@pytest.mark.parametrize(
    ("one", "two"),
    [
        (("site", "post:e:1"), ("site:e:post", "1")),  # the pair
        (("x%3Ay", "k"), ("x:y", "k")),  # the escape itself, spelt by hand
    ],
)
def test_no_two_namespace_and_key_pairs_share_a_name(
    place: Place, one: tuple[str, str], two: tuple[str, str]
) -> None:
    suffix = unique("")  # a fresh pair for each run on the session's Redis
    (ns1, key1), (ns2, key2) = (
        (one[0] + suffix, one[1]),
        (two[0].replace(one[0], one[0] + suffix, 1), two[1]),
    )
    a, b = place.runtime(ns1), place.runtime(ns2)
    get_a = a.with_revalidate(key1, ttl=60)(lambda: "a")
    get_b = b.with_revalidate(key2, ttl=60)(lambda: "b")
    get_a(), get_b()
    assert (get_a.lookup().value, get_b.lookup().value) == ("a", "b")
    # Everything else named by the pair too: locks, markers, claims, invalidate-all.
    assert a.adapter.acquire(key1, "a", 5) is True
    assert b.adapter.acquire(key2, "b", 5) is True
    a.adapter.note_invalidation("key", key1, Mode.PURGE, time.time(), 5)
    assert b.adapter.invalidated_since(key2, (), 0.0) is None
    assert a.adapter.claim(key1, 5) is True
    assert b.adapter.claim(key2, 5) is True
    a.invalidate_all_sync("purge")
    assert get_b.lookup().status is Status.HIT
    a.close()
    b.close()


@pytest.mark.parametrize(
    ("one", "two"),
    [
        (("s", "p:t:c"), ("s:t:p", "c")),  # one Redis tag set name before the fix
        (("a", "b:c"), ("a:b", "c")),  # one disk tag table row before the fix
    ],
)
def test_tags_of_two_namespaces_never_meet(
    place: Place, one: tuple[str, str], two: tuple[str, str]
) -> None:
    suffix = unique("")
    (ns1, tag1), (ns2, tag2) = (
        (one[0] + suffix, one[1]),
        (two[0].replace(one[0], one[0] + suffix, 1), two[1]),
    )
    a, b = place.runtime(ns1), place.runtime(ns2)
    get_a = a.with_revalidate("k", ttl=60, tags=[tag1])(lambda: "a")
    get_b = b.with_revalidate("k", ttl=60, tags=[tag2])(lambda: "b")
    get_a(), get_b()
    assert b.invalidate_tag_sync(tag2, mode="purge") == 1
    assert get_a.lookup().status is Status.HIT
    assert a.adapter.tagged(tag1) == ["k"]
    a.close()
    b.close()


def test_a_plain_namespace_keeps_the_layout_deployed_caches_have(
    place: Place, redis_server: RedisServer
) -> None:
    ns = unique("blog")
    assert prefix(ns) == ns
    rt = place.runtime(ns)
    rt.with_revalidate("post:{n}", ttl=60, tags=["posts"])(lambda n: n)("1")
    rt.invalidate_all_sync("revalidate")
    assert place.raw_get(rt, f"{ns}:e:post:1") is not None
    if place.kind == "redis":
        client = redis.Redis.from_url(redis_server.url)
        assert client.smembers(f"{ns}:t:posts") == {b"post:1"}
        current = client.hget(f"{ns}:gen", "current")
        assert current is not None
        assert client.hget(f"{ns}:gen", "revalidate") == current
        client.close()
    else:
        adapter = rt.adapter
        assert isinstance(adapter, DiskAdapter)
        current, revalidate, expire, purge = adapter._cache.get(f"{ns}:gen").split()
        assert (current, expire, purge) == (revalidate, "0", "0")
        rows = adapter._db().execute("SELECT tag, key FROM isr_tags").fetchall()
        assert rows == [(f"{ns}:posts", "post:1")]
    rt.close()


@pytest.mark.parametrize(
    ("namespace", "expected"),
    [
        (None, "isr"),
        ("", "isr"),
        ("blog", "blog"),
        ("test-abc123", "test-abc123"),
        ("site:e:post", "site%3Ae%3Apost"),
        ("50%", "50%25"),
        ("a%3Ab", "a%253Ab"),
        ("café", "café"),
    ],
)
def test_prefix(namespace: str | None, expected: str) -> None:
    assert prefix(namespace) == expected


# ------------------------------------------------------------------ lone surrogates

BAD = "post:\ud800"


@pytest.mark.anyio
async def test_a_key_with_a_lone_surrogate_is_the_same_clear_error_on_every_store(
    rt: isr.ISR,
) -> None:
    @rt.with_revalidate("post:{slug}", ttl=60)
    async def post(slug: str) -> str:
        return slug

    @rt.with_revalidate("page", ttl=60)
    async def page() -> str:
        isr.cache_tag("tag:\udc80")
        return "page"

    for call in (
        lambda: post("\ud800"),
        lambda: post.lookup("\ud800"),
        lambda: rt.invalidate(BAD),
        lambda: rt.invalidate(BAD, mode="purge"),
        lambda: rt.invalidate_tag("tag:\udc80"),
        page,
    ):
        with pytest.raises(isr.ConfigError, match="lone surrogate"):
            await call()
    assert await post("fine") == "fine"


def test_a_key_with_a_lone_surrogate_is_a_clear_error_from_sync_code(srt: isr.ISR) -> None:
    post = srt.with_revalidate("post:{slug}", ttl=60)(lambda slug: slug)
    with pytest.raises(isr.ConfigError, match=r"key 'post:\\ud800' is not valid Unicode"):
        post("\ud800")
    with pytest.raises(isr.ConfigError, match="lone surrogate"):
        srt.invalidate_tag_sync("\udfff")


def test_a_namespace_with_a_lone_surrogate_is_refused(tmp_path: Path) -> None:
    with pytest.raises(isr.ConfigError, match=re.escape("namespace '\\udc80x' is not valid")):
        DiskAdapter(tmp_path, namespace="\udc80x")


def test_a_lone_surrogate_is_refused_before_redis_is_asked() -> None:
    """The same answer when Redis cannot be reached: it is not a store failure."""
    store = RedisAdapter(f"redis://127.0.0.1:{free_port()}/0")
    for call in (
        lambda: store.get(BAD),
        lambda: store.set(BAD, Entry("v", 0.0, Policy(1, 1, 1), 0)),
        lambda: store.set("k", Entry("v", 0.0, Policy(1, 1, 1), 0, ("\ud800",))),
        lambda: store.delete(BAD),
        lambda: store.tagged("\ud800"),
        lambda: store.acquire(BAD, "t", 1),
        lambda: store.claim("\ud800", 1),
    ):
        with pytest.raises(isr.ConfigError, match="lone surrogate"):
            call()
    assert store.errors == 0  # nothing was sent, nothing counted against Redis
    store.close()
