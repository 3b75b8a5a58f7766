"""What only sync callers have: thread pools of callers, a loader that cannot be interrupted.

The semantics shared with async callers are generated into ``tests/_sync/test_runtime.py``.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import isr
from isr import Status

from .conftest import FakeClock


class Origin:
    def __init__(self) -> None:
        self.calls = 0
        self.version = 1
        self.fail: Exception | None = None
        self.gate: threading.Event | None = None
        self.lock = threading.Lock()

    def load(self, name: str) -> str:
        with self.lock:
            self.calls += 1
        if self.gate is not None:
            assert self.gate.wait(10), "test gate never opened"
        if self.fail is not None:
            raise self.fail
        return f"{name} v{self.version}"


def cached(rt: isr.ISR, origin: Origin, **options: Any) -> isr.SyncCached[[str], str]:
    options.setdefault("ttl", 10)

    @isr.with_revalidate("item:{name}", runtime=rt, **options)
    def get(name: str) -> str:
        return origin.load(name)

    return get


def test_threads_on_a_cold_key_run_the_loader_once(srt: isr.ISR) -> None:
    origin = Origin()
    origin.gate = threading.Event()
    get = cached(srt, origin)
    with ThreadPoolExecutor(32) as pool:
        futures = [pool.submit(get, "a") for _ in range(200)]
        while srt.stats().coalesced < 31:  # every worker thread is waiting on the one fetch
            threading.Event().wait(0.001)
        origin.gate.set()
        assert {f.result() for f in futures} == {"a v1"}
    assert origin.calls == 1


def test_threads_on_a_stale_key_trigger_one_refresh(srt: isr.ISR, clock: FakeClock) -> None:
    origin = Origin()
    get = cached(srt, origin, swr=None)
    get("a")
    clock.advance(60)
    origin.gate = threading.Event()
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: get.lookup("a"), range(500)))
    assert {r.status for r in results} == {Status.STALE}  # nobody waited on the refresh
    origin.gate.set()
    srt.drain_sync()
    assert origin.calls == 2


def test_sync_invalidation_spelling(srt: isr.ISR) -> None:
    origin = Origin()

    @isr.with_revalidate("post:{slug}", ttl=60, tags=["posts"], runtime=srt)
    def get_post(slug: str) -> str:
        return origin.load(slug)

    get_post("a")
    get_post("b")
    origin.version = 2
    assert srt.invalidate_sync("post:a") is True
    assert get_post.lookup("a").status is Status.MISS
    assert srt.invalidate_tag_sync("posts", mode="purge") == 2
    assert get_post.lookup("b") == isr.Result("b v2", Status.MISS, 0.0)
    srt.invalidate_all_sync(mode="revalidate")
    assert get_post.lookup("b").status is Status.STALE


def test_hard_timeout_on_a_sync_loader(srt: isr.ISR) -> None:
    origin = Origin()
    origin.gate = threading.Event()
    get = cached(srt, origin, timeout=0.05)
    with pytest.raises(TimeoutError, match=r"took longer than 0\.05 s"):
        get("a")
    origin.gate.set()
    srt.close()  # the late value still lands


@pytest.mark.anyio
async def test_async_code_can_drain_sync_refreshes(clock: FakeClock) -> None:
    rt = isr.ISR(clock=clock)
    origin = Origin()
    get = cached(rt, origin)
    with pytest.warns(isr.ISRWarning, match="blocks the loop"):  # a miss, in the loop
        get("a")
    clock.advance(10)
    origin.version = 2
    get("a")  # stale: answered at once, refreshed in a thread
    await rt.aclose()
    assert rt.adapter.get("item:a").value == "a v2"  # type: ignore[union-attr]
