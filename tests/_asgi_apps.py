"""ASGI apps for the edge's tests: a bare origin whose answers the test steers, and clients."""

from __future__ import annotations

from http.cookiejar import CookieJar, DefaultCookiePolicy

import anyio
import httpx

from isr.asgi import ASGIApp, Receive, Scope, Send


class Origin:
    """A bare ASGI app playing the site. Its body names the path, the query, the request's
    ``Accept-Language`` and ``version`` (bump it to publish); ``status`` and ``headers`` shape
    the next answers; ``chunks`` > 1 streams the body in pieces; ``gate``, when set, holds every
    request until it is set; ``linger`` makes it wait for ``http.disconnect`` after its answer
    before it returns, as Litestar's streams do. ``calls`` records each scope it was called
    with."""

    def __init__(self) -> None:
        self.version = 1
        self.status = 200
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks = 1
        self.linger = False
        self.gate: anyio.Event | None = None
        self.fail: BaseException | None = None
        self.calls: list[Scope] = []
        self.bodies: list[bytes] = []

    def body(self, scope: Scope) -> bytes:
        headers = dict(scope["headers"])
        lang = headers.get(b"accept-language", b"-").decode()
        query = scope["query_string"].decode()
        return f"{scope['path']}?{query} lang={lang} v{self.version}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        self.calls.append(scope)
        body = b""
        while True:  # read the whole request, as a well-behaved app does
            message = await receive()
            assert message["type"] == "http.request"
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.bodies.append(body)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        body = self.body(scope)
        headers = [(b"content-type", b"text/plain"), *self.headers]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        size = -(-len(body) // self.chunks)
        for i in range(self.chunks):
            piece = body[i * size : (i + 1) * size]
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        while self.linger and (await receive())["type"] != "http.disconnect":
            pass


def client(app: ASGIApp) -> httpx.AsyncClient:
    """An httpx client calling ``app`` in process. It keeps no cookies, as a CDN's fetches
    do: a test sends a ``Cookie`` only when it says so."""
    jar = CookieJar(DefaultCookiePolicy(allowed_domains=[]))
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", cookies=jar
    )
