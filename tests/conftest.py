"""Shared fixtures: a fake clock, runtimes on it, and the asyncio/trio parametrization."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import isr

from ._third_party import DictStore
from .redis_cluster import RedisCluster
from .redis_server import FLAVOURS, Flavour, RedisServer

#: Every store the runtime's behaviour is checked on (the conformance suite): the tests
#: that take the ``rt``/``srt`` fixtures run once per store. "valkey" is the Redis store
#: on a Valkey server.
STORES = ("memory", "disk", "redis", "redis-l1", "valkey", "third-party")
#: Parameter values whose tests run on asyncio only (see below): a Redis-protocol server
#: (redis-py's asyncio client) and Django (asgiref's handler is asyncio-only).
ASYNCIO_ONLY = {"django"}


class FakeClock:
    """A clock tests move by hand: every window is crossed with ``advance``, never a sleep."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer("redis") as server:
        yield server


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[RedisServer]:
    with RedisServer("valkey") as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    with RedisCluster("redis") as cluster:
        yield cluster


@pytest.fixture(scope="session")
def valkey_cluster() -> Iterator[RedisCluster]:
    with RedisCluster("valkey") as cluster:
        yield cluster


@pytest.fixture(params=FLAVOURS)
def flavour(request: pytest.FixtureRequest) -> Flavour:
    """For the tests of the Redis store itself: run once on Redis, once on Valkey."""
    value: Flavour = request.param
    return value


@pytest.fixture
def server(flavour: Flavour, request: pytest.FixtureRequest) -> RedisServer:
    """The session's server of ``flavour``."""
    found: RedisServer = request.getfixturevalue(f"{flavour}_server")
    return found


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(store: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A cache URL for ``store``, private to the test (own directory, own namespace)."""
    if store == "memory":
        return "memory://"
    if store == "disk":
        return f"disk://{tmp_path / 'cache'}"
    server: RedisServer = request.getfixturevalue(
        "valkey_server" if store == "valkey" else "redis_server"
    )
    # These tests are about what callers see from a working store, not about its timeouts
    # (test_redis_adapter covers those): a command may wait 5 s, not the default 0.25 s, so
    # a loaded CI machine cannot trip the breaker. It did once: 200 cold callers opened
    # connections at once, three passed 0.25 s, and each of those callers fetched.
    return f"{server.url}?timeout=5"


@pytest.fixture
def store_options(store: str) -> dict[str, object]:
    return {"l1": True} if store == "redis-l1" else {}


def _runtime(
    store: str, store_url: str, clock: FakeClock, namespace: str, options: dict[str, Any]
) -> isr.ISR:
    if store == "third-party":  # made by hand, as its author would
        return isr.ISR(DictStore(), clock=clock)
    return isr.ISR(store_url, clock=clock, namespace=namespace, **options)


@pytest.fixture
def namespace() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def rt(
    store: str, clock: FakeClock, store_url: str, namespace: str, store_options: dict[str, Any]
) -> AsyncIterator[isr.ISR]:
    async with _runtime(store, store_url, clock, namespace, store_options) as runtime:
        assert await runtime.wait_ready(10)  # an L1 serves once its bus listens, as apps do
        yield runtime


@pytest.fixture
def srt(
    store: str, clock: FakeClock, store_url: str, namespace: str, store_options: dict[str, Any]
) -> Iterator[isr.ISR]:
    runtime = _runtime(store, store_url, clock, namespace, store_options)
    try:
        assert runtime.wait_ready_sync(10)
        yield runtime
    finally:
        runtime.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """redis-py's asyncio client and Django's ASGI handler run on asyncio only: Redis (and
    Valkey) and Django async tests are pinned to asyncio (deselected on trio, not skipped).
    Memory and disk, and the other frameworks, run on both."""
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        pinned = ASYNCIO_ONLY & {str(v) for v in params.values()}
        if params.get("anyio_backend") == "trio" and pinned:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
