"""The switch beyond the decorated call (tests/_async/test_features.py has that): a runtime
built disabled, ISR_ENABLED, the page middleware (ASGI and WSGI) passing requests through
with ``X-Cache: BYPASS``, and the hot paths shut only while a scope is disabled."""

from __future__ import annotations

from collections.abc import Iterable

import anyio
import httpx
import pytest

import isr
from isr import Status
from isr._switch import CLOSED
from isr.asgi import ISRMiddleware, Rule
from isr.wsgi import Environ, StartResponse
from isr.wsgi import ISRMiddleware as WSGIMiddleware

from ._asgi_apps import Origin, client
from .conftest import FakeClock

SITE = "http://test"
POSTS = Rule("/posts/{slug}", ttl=10)


def test_a_runtime_built_disabled_runs_every_loader_and_stores_nothing() -> None:
    calls: list[int] = []
    with isr.ISR(enabled=False) as rt:

        @rt.with_revalidate("n:{n}", ttl=60)
        def square(n: int) -> int:
            calls.append(n)
            return n * n

        assert [square.lookup(3).status for _ in range(3)] == [Status.BYPASS] * 3
        assert calls == [3, 3, 3]
        assert rt.adapter.get("n:3") is None
        assert rt.stats().bypassed == 3
        assert square.refresh(3) == 9  # a refresh too: nothing kept
        assert rt.adapter.get("n:3") is None


@pytest.mark.anyio
async def test_a_runtime_built_disabled_bypasses_async_calls_too(anyio_backend: str) -> None:
    async with isr.ISR(enabled=False) as rt:

        @rt.with_revalidate("n:{n}", ttl=60)
        async def square(n: int) -> int:
            return n * n

        assert (await square.lookup(3)).status is Status.BYPASS
        assert (await square.lookup(3)).status is Status.BYPASS
        assert rt.adapter.get("n:3") is None


@pytest.mark.anyio
async def test_a_task_started_inside_a_disabled_scope_inherits_it(anyio_backend: str) -> None:
    statuses: list[Status] = []
    async with isr.ISR() as rt:

        @rt.with_revalidate("n:{n}", ttl=60)
        async def square(n: int) -> int:
            return n * n

        await square(2)

        async def read() -> None:
            statuses.append((await square.lookup(2)).status)

        with isr.disabled():
            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
    assert statuses == [Status.BYPASS, Status.HIT]


@pytest.mark.parametrize(
    ("value", "enabled"),
    [(None, True), ("1", True), ("true", True), ("On", True), ("0", False), ("FALSE", False)],
)
def test_isr_enabled_from_the_environment(value: str | None, enabled: bool) -> None:
    env = {} if value is None else {"ISR_ENABLED": value}
    with isr.ISR.from_env(env) as rt:
        assert rt.enabled is enabled


def test_a_bad_isr_enabled_is_refused_naming_the_variable() -> None:
    with pytest.raises(isr.ConfigError, match="ISR_ENABLED='maybe'"):
        isr.ISR.from_env({"ISR_ENABLED": "maybe"})
    with pytest.raises(isr.ConfigError, match="enabled="):
        isr.ISR(enabled="no")  # type: ignore[arg-type]


def _hot(fn: object) -> object:
    """What a decorated function's hot path compares entries' generations with."""
    namespace: dict[str, object] = fn.__isr_loader__.namespace  # type: ignore[attr-defined]
    return namespace["_isr_ad"]


def test_the_hot_path_is_shut_only_while_a_scope_is_disabled() -> None:
    """Outside every disabled scope a fresh hit is the generated wrapper's own (the store
    is what it compares with); while one is open anywhere, every call takes the slow path,
    which serves the others as before."""
    with isr.ISR() as rt:

        @rt.with_revalidate("n:{n}", ttl=60)
        def square(n: int) -> int:
            return n * n

        square(2)
        assert _hot(square) is rt.adapter
        with isr.disabled():
            assert _hot(square) is CLOSED
            assert square.lookup(2).status is Status.BYPASS

            @rt.with_revalidate("c:{n}", ttl=60)
            def cube(n: int) -> int:  # decorated while shut: shut too
                return n**3

            assert _hot(cube) is CLOSED
        assert _hot(square) is rt.adapter
        assert _hot(cube) is rt.adapter
        assert square.lookup(2).status is Status.HIT


# ---------------------------------------------------------------- the page middleware


@pytest.mark.anyio
async def test_asgi_passes_requests_through_while_disabled(
    anyio_backend: str, clock: FakeClock
) -> None:
    origin = Origin()
    async with isr.ISR(clock=clock) as rt:
        app = ISRMiddleware(origin, rt, [POSTS], origin=SITE)
        async with client(app) as c:
            cached = await c.get("/posts/a")
            with isr.disabled():
                passed = await c.get("/posts/a?utm=1", headers={"cookie": "s=1"})
                fresh = await c.get("/posts/b")
            after = [await c.get("/posts/a"), await c.get("/posts/b")]
    assert cached.headers["x-cache"] == "MISS"
    assert [passed.headers["x-cache"], fresh.headers["x-cache"]] == ["BYPASS", "BYPASS"]
    # the app answered the visitor's own request: its query and cookie, nothing canonical
    assert passed.text == "/posts/a?utm=1 lang=- v1"
    assert (b"cookie", b"s=1") in origin.calls[1]["headers"]
    assert [r.headers["x-cache"] for r in after] == ["HIT", "MISS"]  # nothing stored
    assert rt.stats().bypassed == 0  # the middleware's own count: per route (metrics)
    assert app.site.routes[0].counter.bypassed == 2


@pytest.mark.anyio
async def test_asgi_on_a_disabled_runtime_passes_every_request(anyio_backend: str) -> None:
    origin = Origin()
    rt = isr.ISR(enabled=False)
    async with rt, client(ISRMiddleware(origin, rt, [POSTS], origin=SITE)) as c:
        answers = [await c.get("/posts/a") for _ in range(3)]
    assert [r.headers["x-cache"] for r in answers] == ["BYPASS"] * 3
    assert len(origin.calls) == 3


def _wsgi_origin(calls: list[Environ]) -> isr.wsgi.WSGIApp:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        calls.append(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{environ['PATH_INFO']}?{environ.get('QUERY_STRING', '')}".encode()]

    return app


def test_wsgi_passes_requests_through_while_disabled(clock: FakeClock) -> None:
    calls: list[Environ] = []
    with isr.ISR(clock=clock) as rt:
        app = WSGIMiddleware(_wsgi_origin(calls), rt, [POSTS], origin=SITE)
        with httpx.Client(transport=httpx.WSGITransport(app=app), base_url=SITE) as c:
            cached = c.get("/posts/a")
            with isr.disabled():
                passed = c.get("/posts/a?utm=1")
            after = [c.get("/posts/a"), c.get("/posts/b")]
    assert cached.headers["x-cache"] == "MISS"
    assert passed.headers["x-cache"] == "BYPASS"
    assert passed.text == "/posts/a?utm=1"
    assert [r.headers["x-cache"] for r in after] == ["HIT", "MISS"]
    assert len(calls) == 3
