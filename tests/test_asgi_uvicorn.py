"""The edge under a real uvicorn server in this process, on both of its HTTP implementations.

uvicorn's own ``send`` is handed the quick path's messages as the middleware keeps them (no
copies: `isr.asgi._server_sends`); an app outside the middleware gets copies it may edit.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import import_module

import httpx
import pytest
import uvicorn

import isr
from isr.asgi import ASGIApp, ISRMiddleware, Message, Receive, Rule, Scope, Send

from ._asgi_apps import Origin
from .conftest import FakeClock

POSTS = Rule("/posts/{slug}", ttl=10, tags=["posts", "post:{slug}"])


class Appending:
    """An outer middleware whose ``send`` is a bound method (as Starlette's GZip responder's
    is) that adds a header to the start message in place."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.downstream: Send | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        responder = Appending(self.app)
        responder.downstream = send
        await self.app(scope, receive, responder.send)

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"].append((b"x-outer", b"1"))
        assert self.downstream is not None
        await self.downstream(message)


@contextmanager
def serving(app: ASGIApp, http: str) -> Iterator[str]:
    """``app`` under uvicorn (``http``: its HTTP implementation) in a thread; its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, http=http, loop="asyncio", lifespan="off", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_every_answer_from_uvicorns_send_carries_its_own_age_and_no_outer_edit(
    http: str, clock: FakeClock
) -> None:
    edge = ISRMiddleware(Origin(), isr.ISR(clock=clock), [POSTS])
    outer = Appending(edge)

    async def site(scope: Scope, receive: Receive, send: Send) -> None:
        """``/posts/…`` straight to the middleware, ``/outer/posts/…`` through `Appending`:
        the same page either way."""
        path = scope.get("path", "")
        if path.startswith("/outer/"):
            await outer({**scope, "path": path.removeprefix("/outer")}, receive, send)
        else:
            await edge(scope, receive, send)

    def seen(response: httpx.Response) -> tuple[str, str, list[str], bytes]:
        h = response.headers
        return h["x-cache"], h["age"], h.get_list("x-outer"), response.content

    with serving(site, http) as base, httpx.Client(base_url=base, timeout=10) as c:
        first = c.get("/posts/hello")
        page = first.content
        answers = [seen(c.get(path)) for path in ["/posts/hello", "/outer/posts/hello"] * 2]
        clock.advance(3.5)
        later = [seen(c.get(path)) for path in ["/outer/posts/hello", "/posts/hello"] * 2]
        head = c.head("/posts/hello")
        clock.advance(1)
        last = seen(c.get("/posts/hello"))
        # The path under test: the middleware took this server's send for its own.
        cycle = import_module(f"uvicorn.protocols.http.{http}_impl").RequestResponseCycle
        assert cycle.send in edge._server_sends

    assert (first.headers["x-cache"], page) == ("MISS", b"/posts/hello? lang=- v1")
    assert answers == [("HIT", "0", [], page), ("HIT", "0", ["1"], page)] * 2
    assert later == [("HIT", "3", ["1"], page), ("HIT", "3", [], page)] * 2
    assert seen(head) == ("HIT", "3", [], b"")
    assert head.headers["content-length"] == str(len(page))
    assert last == ("HIT", "4", [], page)
