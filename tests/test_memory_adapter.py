"""The memory store: bounded, evicts what was not read, keeps its tag index exact, small."""

from __future__ import annotations

import tracemalloc

import pytest

import isr
from isr._entry import Entry, Mode, Policy
from isr.adapters.memory import MemoryAdapter

POLICY = Policy(60, None, 0)


def put(adapter: MemoryAdapter, key: str, tags: tuple[str, ...] = ()) -> None:
    adapter.set(key, Entry(key.upper(), 0.0, POLICY, 0, tags))


def test_bounded_to_max_entries() -> None:
    adapter = MemoryAdapter(100)
    for i in range(1000):
        put(adapter, f"k{i}")
    assert adapter.size() == 100
    assert adapter.evictions == 900
    assert adapter.get("k999") is not None  # the newest stay
    assert adapter.get("k0") is None


def test_a_recently_read_entry_survives_eviction() -> None:
    rt = isr.ISR(MemoryAdapter(3))
    calls: list[str] = []

    @isr.with_revalidate("k:{name}", ttl=60, runtime=rt)
    def get(name: str) -> str:
        calls.append(name)
        return name

    for name in "abc":
        get(name)
    get("a")  # read: a gets a second chance
    get("d")  # evicts b, the oldest entry not read since it was stored
    assert rt.adapter.get("k:a") is not None
    assert rt.adapter.get("k:b") is None
    get("a")
    assert calls == ["a", "b", "c", "d"]
    rt.close()


def test_tag_index_follows_sets_deletes_and_evictions() -> None:
    adapter = MemoryAdapter(2)
    put(adapter, "a", ("t1", "t2"))
    put(adapter, "b", ("t1",))
    assert sorted(adapter.tagged("t1")) == ["a", "b"]
    put(adapter, "a", ("t2",))  # retagged
    assert adapter.tagged("t1") == ["b"]
    adapter.delete("b")
    assert adapter.tagged("t1") == []
    put(adapter, "c", ("t3",))
    put(adapter, "d", ("t3",))  # evicts a
    assert adapter.tagged("t2") == []
    assert adapter._tags.keys() == {"t3"}  # no empty sets left behind


def test_generation_bump_is_recorded() -> None:
    adapter = MemoryAdapter()
    g = adapter.bump_generation(Mode.EXPIRE)
    assert (g.current, g.expire, adapter.gen) == (1, 1, 1)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "10", True])
def test_bad_bounds_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="max_entries must be a positive integer"):
        MemoryAdapter(bad)  # type: ignore[arg-type]


def test_bookkeeping_is_at_most_200_bytes_an_entry() -> None:
    """Beyond key and value: dict slot, ring slot, the Entry and its two timestamps."""
    n = 50_000
    keys = [f"post:{i}" for i in range(n)]
    values = [object() for _ in range(n)]
    adapter = MemoryAdapter(n)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, (key, value) in enumerate(zip(keys, values, strict=True)):
            adapter.set(key, Entry(value, float(i), POLICY, 0))
        per_entry = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    assert per_entry <= 200, per_entry


def test_the_hot_path_reads_cachetools_own_dict() -> None:
    """If a cachetools release renames its private dict, reads fall back to the slower
    public get: still correct, but the hot path would lose its speed. Fail loudly instead."""
    adapter = MemoryAdapter()
    put(adapter, "a")
    assert type(adapter.peek).__name__ == "builtin_function_or_method"
    assert adapter.peek("a") is adapter._cache["a"]


def test_bounded_in_bytes_too_counting_what_values_hold() -> None:
    adapter = MemoryAdapter(1000, max_bytes=10_000)

    def page(key: str) -> None:
        value = {"body": b"x" * 2_000, "headers": [["content-type", "text/plain"]]}
        adapter.set(key, Entry(value, 0.0, POLICY, 0, ("pages",)))

    for key in ("p0", "p1", "p2", "p3"):
        page(key)  # 2,024 bytes each
    first = adapter.get("p0")
    assert first is not None
    first.used = True  # read: a second chance
    page("p4")
    page("p5")
    assert [adapter.get(key) is not None for key in ("p0", "p1", "p2", "p3", "p4", "p5")] == [
        True,
        False,
        False,
        True,
        True,
        True,
    ]
    assert adapter.counters()["bytes"] == 4 * 2_022
    assert adapter.evictions == 2
    assert sorted(adapter.tagged("pages")) == ["p0", "p3", "p4", "p5"]
    adapter.delete("p5")
    assert adapter.counters()["bytes"] == 3 * 2_022
    adapter.set("huge", Entry("y" * 20_000, 0.0, POLICY, 0))  # heavier than the whole bound
    assert adapter.get("huge") is None
    assert adapter.counters()["bytes"] <= 10_000


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("memory://?max_bytes=65536", 65536),
        ("memory://?max_bytes=64KiB", 65536),
        ("memory://?max_bytes=32MB&max_entries=5", 32_000_000),
        ("memory://?max_bytes=1GiB", 2**30),
        ("memory://", None),
    ],
)
def test_max_bytes_from_the_url(url: str, expected: int | None) -> None:
    adapter = isr.ISR(url).adapter
    assert isinstance(adapter, MemoryAdapter)
    assert adapter.max_bytes == expected


@pytest.mark.parametrize("bad", ["0", "-1", "lots", "64 parsecs", "1.5MB"])
def test_a_bad_max_bytes_is_refused(bad: str) -> None:
    with pytest.raises(isr.ConfigError, match="max_bytes"):
        isr.ISR(f"memory://?max_bytes={bad}")


def test_more_invalidated_tags_than_marks_kept_still_reach_every_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past `MARKS_KEPT` tags with marks, the store applies them all at once and forgets
    them: every entry still obeys its tag's invalidation."""
    from isr.adapters import memory

    monkeypatch.setattr(memory, "MARKS_KEPT", 3)
    rt = isr.ISR("memory://")
    calls: list[int] = []

    def loader(n: int) -> str:
        calls.append(n)
        return f"{n} v{calls.count(n)}"

    gets = []
    for n in range(10):
        gets.append(rt.with_revalidate(f"n:{n}", ttl=60, tags=[f"t{n}"])(lambda n=n: loader(n)))
        assert gets[n]() == f"{n} v1"
    for n in range(10):
        rt.invalidate_tag_sync(f"t{n}", "purge")
    assert [g() for g in gets] == [f"{n} v2" for n in range(10)]
    assert rt.adapter.size() == 10
