"""The hot-path rule (``isr/adapters/base.py``) is one rule, inlined in four places for speed:
the generated wrappers (``isr/_decorator.py``'s ``_HIT_RULE``), the call-site form
(``ISR._site_hit``) and the page middleware's quick paths (ASGI and WSGI). For every state a
cached entry can be in, all four take the fast path exactly when the rule says a fresh hit,
and leave every other case to the runtime."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import pytest

import isr
from isr import asgi, wsgi
from isr.adapters import Adapter, Entry

from .conftest import FakeClock

pytestmark = pytest.mark.anyio

TTL = 10


def rule(entry: Entry | None, store: Adapter, now: float) -> bool:
    """The rule as ``isr/adapters/base.py`` states it."""
    return entry is not None and entry.gen is store.gen and now < entry.fresh_until


def fast_hits(rt: isr.ISR) -> int:
    """Hits served by an inlined rule (not by the runtime's slow path)."""
    return sum(loader.fast_hits() for loader in rt._loaders) + sum(rt._sites.hits.values())


async def page_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1")]})
    await send({"type": "http.response.body", "body": b"page"})


def wsgi_page_app(environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
    start("200 OK", [("X-A", "1")])
    return [b"page"]


async def asgi_get(app: Any, path: str) -> str:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b""}
    await app(scope, receive, send)
    value: bytes = dict(sent[0]["headers"])[b"x-cache"]
    return value.decode()


def wsgi_get(app: Any, path: str) -> str:
    got: dict[str, str] = {}

    def start(status: str, headers: list[tuple[str, str]], exc: Any = None) -> Any:
        got.update((k.lower(), v) for k, v in headers)
        return lambda data: None

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "test",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": io.StringIO(),
    }
    body = app(environ, start)
    b"".join(body)
    getattr(body, "close", lambda: None)()
    return got["x-cache"]


KEY = "page:/p"
#: A state of the cached entry, made by a step, and whether the rule calls it a fresh hit.
STATES: list[tuple[str, Callable[[isr.ISR, FakeClock], object], bool]] = [
    ("fresh", lambda rt, clock: clock.advance(1), True),
    ("past its ttl", lambda rt, clock: clock.advance(TTL), False),
    ("a later generation", lambda rt, clock: rt.invalidate_all_sync("revalidate"), False),
    ("invalidated", lambda rt, clock: rt.invalidate_sync(KEY, "revalidate"), False),
    ("purged", lambda rt, clock: rt.invalidate_sync(KEY, "purge"), False),
]


@pytest.mark.parametrize(("state", "step", "fresh"), STATES, ids=[s for s, _, _ in STATES])
@pytest.mark.parametrize("where", ["decorator", "call-site", "asgi", "wsgi"])
async def test_the_fast_path_serves_exactly_what_the_rule_calls_fresh(
    where: str, state: str, step: Callable[[isr.ISR, FakeClock], object], fresh: bool
) -> None:
    clock = FakeClock()
    rt = isr.ISR(clock=clock)
    if where == "decorator":

        @rt.with_revalidate("page:/{name}", ttl=TTL)
        def load(name: str) -> str:
            return "page"

        def read() -> object:
            return load("p")

    elif where == "call-site":

        def read() -> object:
            return rt.revalidating_sync(KEY, TTL, lambda: "page")

    elif where == "asgi":
        app = asgi.ISRMiddleware(page_app, rt, [asgi.Rule("/p", ttl=TTL)], origin="http://test")

        async def aread() -> object:
            return await asgi_get(app, "/p")

    else:
        wapp = wsgi.ISRMiddleware(
            wsgi_page_app, runtime=rt, rules=[wsgi.Rule("/p", ttl=TTL)], origin="http://test"
        )

        def read() -> object:
            return wsgi_get(wapp, "/p")

    async def visit() -> object:  # a sync read in a worker thread, as it must be
        return await aread() if where == "asgi" else await anyio.to_thread.run_sync(read)

    await visit()  # a miss: rendered, stored
    await visit()  # an answer from the store prepares what the quick paths send
    step(rt, clock)
    entry = rt.adapter.peek(KEY)
    assert rule(entry, rt.adapter, clock()) is fresh  # the table says what the rule says
    before = fast_hits(rt)
    await visit()
    assert (fast_hits(rt) - before == 1) is fresh, (where, state)
    await rt.drain()
    rt.close()
