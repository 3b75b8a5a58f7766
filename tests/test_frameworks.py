"""The middleware under the frameworks it promises: Starlette, FastAPI, Litestar and Django's
ASGI handler. Each serves the same site (tests/_sites.py) and goes through the same visit:
a page rendered once and then served from the cache, HEAD from the GET page, a publish
seen as STALE and then fresh, a streamed page cached whole, a response setting a cookie
never cached, and a path no route knows answered by the framework untouched."""

# No ``from __future__ import annotations`` here: FastAPI and Litestar read the endpoints'
# annotations at run time, and these endpoints name types imported inside the functions.
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import isr
from isr.asgi import ASGIApp, ISRMiddleware, Rule

from ._asgi_apps import client
from ._sites import Site
from .conftest import FakeClock

pytestmark = pytest.mark.anyio

RULES = [
    Rule("/posts/{slug}", ttl=60, tags=["post:{slug}"]),
    Rule("/feed", ttl=60),
    Rule("/login", ttl=60),
    Rule("/echo/{slug}", ttl=60),
]


def starlette_site(site: Site, runtime: isr.ISR) -> ASGIApp:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    async def post(request: Request) -> Response:
        return PlainTextResponse(site.post(request.url.path, request.path_params["slug"]))

    async def feed(request: Request) -> Response:
        async def items() -> AsyncIterator[bytes]:
            for piece in site.feed(request.url.path):
                yield piece

        return StreamingResponse(items(), media_type="text/plain")

    def login(request: Request) -> Response:  # a sync endpoint: Starlette runs it in a thread
        response = PlainTextResponse(site.login(request.url.path))
        response.set_cookie("sid", "abc")
        return response

    async def echo(request: Request) -> Response:
        return PlainTextResponse(site.echo(str(request.url), request.headers))

    return Starlette(
        routes=[
            Route("/posts/{slug}", post),
            Route("/feed", feed),
            Route("/login", login),
            Route("/echo/{slug}", echo),
        ],
        middleware=[Middleware(ISRMiddleware, runtime=runtime, rules=RULES)],
    )


def fastapi_site(site: Site, runtime: isr.ISR) -> ASGIApp:
    from fastapi import FastAPI, Request, Response
    from fastapi.responses import PlainTextResponse, StreamingResponse

    api = FastAPI()

    @api.get("/posts/{slug}", response_class=PlainTextResponse)
    async def post(request: Request, slug: str) -> str:
        return site.post(request.url.path, slug)

    @api.get("/feed")
    async def feed(request: Request) -> StreamingResponse:
        async def items() -> AsyncIterator[bytes]:
            for piece in site.feed(request.url.path):
                yield piece

        return StreamingResponse(items(), media_type="text/plain")

    @api.get("/login", response_class=PlainTextResponse)
    def login(request: Request, response: Response) -> str:
        response.set_cookie("sid", "abc")
        return site.login(request.url.path)

    @api.get("/echo/{slug}", response_class=PlainTextResponse)
    async def echo(request: Request, slug: str) -> str:
        return site.echo(str(request.url), request.headers)

    api.add_middleware(ISRMiddleware, runtime=runtime, rules=RULES)
    return api


def litestar_site(site: Site, runtime: isr.ISR, define: bool = False) -> ASGIApp:
    from litestar import Litestar, MediaType, Request, Response, get
    from litestar.datastructures import Cookie
    from litestar.middleware import DefineMiddleware
    from litestar.response import Stream

    @get("/posts/{slug:str}", media_type=MediaType.TEXT)
    async def post(request: Request[Any, Any, Any]) -> str:
        return site.post(request.url.path, request.path_params["slug"])

    @get("/feed")
    async def feed(request: Request[Any, Any, Any]) -> Stream:
        async def items() -> AsyncIterator[bytes]:
            for piece in site.feed(request.url.path):
                yield piece

        return Stream(items(), media_type=MediaType.TEXT)

    @get("/login", media_type=MediaType.TEXT, sync_to_thread=True)
    def login(request: Request[Any, Any, Any]) -> Response[str]:
        return Response(site.login(request.url.path), cookies=[Cookie(key="sid", value="abc")])

    @get("/echo/{slug:str}", media_type=MediaType.TEXT)
    async def echo(request: Request[Any, Any, Any]) -> str:
        return site.echo(str(request.url), request.headers)

    handlers = [post, feed, login, echo]
    if not define:
        # Litestar routes before its middleware runs, so HEAD on a GET route is a 405 there:
        # wrap the whole app, as an asgi.py does, to answer HEAD from the GET page.
        return ISRMiddleware(Litestar(route_handlers=handlers), runtime=runtime, rules=RULES)
    middleware = DefineMiddleware(ISRMiddleware, runtime=runtime, rules=RULES)
    return Litestar(route_handlers=handlers, middleware=[middleware])


def django_site(site: Site, runtime: isr.ISR) -> ASGIApp:
    from . import _django_site

    _django_site.SITE = site
    # Django's middleware is not ASGI: wrap its ASGI handler, as in an asgi.py.
    return ISRMiddleware(_django_site.application(), runtime=runtime, rules=RULES)


FRAMEWORKS: dict[str, Callable[[Site, isr.ISR], ASGIApp]] = {
    "starlette": starlette_site,
    "fastapi": fastapi_site,
    "litestar": litestar_site,
    "django": django_site,
}


@pytest.fixture(params=list(FRAMEWORKS))
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def runtime(clock: FakeClock) -> AsyncIterator[isr.ISR]:
    async with isr.ISR(clock=clock) as rt:
        yield rt


async def test_a_visit_through_the_framework(
    framework: str, runtime: isr.ISR, clock: FakeClock
) -> None:
    site = Site()
    app = FRAMEWORKS[framework](site, runtime)
    async with client(app) as c:
        first, again = await c.get("/posts/hi"), await c.get("/posts/hi")
        head = await c.head("/posts/hi")
        site.version = 2  # publish
        clock.advance(61)
        stale = await c.get("/posts/hi")
        await runtime.drain()  # the background re-render
        fresh = await c.get("/posts/hi")
        feeds = [await c.get("/feed"), await c.get("/feed")]
        logins = [await c.get("/login"), await c.get("/login")]
        unknown = await c.get("/nowhere")

    assert [(r.headers.get("x-cache"), r.text) for r in (first, again, stale, fresh)] == [
        ("MISS", "post hi v1"),
        ("HIT", "post hi v1"),
        ("STALE", "post hi v1"),
        ("HIT", "post hi v2"),
    ]
    assert first.headers["content-type"].startswith("text/plain")
    assert first.headers["x-cache-tags"] == "post:hi"
    assert first.headers["etag"] == again.headers["etag"] != fresh.headers["etag"]
    assert (head.headers["x-cache"], head.content) == ("HIT", b"")
    assert head.headers["etag"] == first.headers["etag"]
    assert [(r.headers["x-cache"], r.text) for r in feeds] == [
        ("MISS", "item 0 v2\nitem 1 v2\nitem 2 v2\n"),
        ("HIT", "item 0 v2\nitem 1 v2\nitem 2 v2\n"),
    ]
    assert [r.headers["x-cache"] for r in logins] == ["MISS", "MISS"]
    assert all(r.headers["set-cookie"].startswith("sid=abc") for r in logins)
    assert (unknown.status_code, unknown.headers.get("x-cache")) == (404, None)
    assert site.calls == ["/posts/hi", "/posts/hi", "/feed", "/login", "/login"]


#: Request parts that are not in the key (issue 14), each tried on its own page.
ATTACKS: list[tuple[str, dict[str, str]]] = [
    ("?utm=%3Cscript%3Ealert(1)%3C/script%3E", {}),
    ("", {"host": "evil.example"}),
    ("", {"x-forwarded-host": "evil.example", "x-forwarded-proto": "https"}),
    ("", {"x-original-url": "/admin"}),
    ("", {"accept-language": "xx-evil"}),
    ("", {"user-agent": "evil-agent"}),
]


async def test_poisoning_attempts_through_the_framework(framework: str, runtime: isr.ISR) -> None:
    """Each attack renders its page from the canonical request (the Host attack gets a page
    of its own host, never served for ours): a plain reader then gets every page clean."""
    site = Site()
    app = FRAMEWORKS[framework](site, runtime)
    async with client(app) as c:
        for n, (query, headers) in enumerate(ATTACKS):
            await c.get(f"/echo/p{n}{query}", headers=headers)
        plain = [await c.get(f"/echo/p{n}") for n in range(len(ATTACKS))]
    agent = isr._http.USER_AGENT
    for n, response in enumerate(plain):
        assert response.headers["x-cache"] == ("MISS" if n == 1 else "HIT")
        assert response.text == f"url=http://test/echo/p{n} lang=- ua={agent}"
    assert "http://evil.example/echo/p1" in site.calls  # its own key, rendered canonically


async def test_fastapi_json_keeps_its_content_type(runtime: isr.ISR) -> None:
    from fastapi import FastAPI

    api = FastAPI()
    calls: list[str] = []

    @api.get("/items/{item}")
    async def item(item: str) -> dict[str, Any]:
        calls.append(item)
        return {"item": item}

    api.add_middleware(ISRMiddleware, runtime=runtime, rules=[Rule("/items/{item}", ttl=60)])
    async with client(api) as c:
        first, second = await c.get("/items/a"), await c.get("/items/a")
    assert [r.headers["x-cache"] for r in (first, second)] == ["MISS", "HIT"]
    assert first.json() == second.json() == {"item": "a"}
    assert second.headers["content-type"] == "application/json"
    assert calls == ["a"]


async def test_litestar_define_middleware(runtime: isr.ISR) -> None:
    """Litestar's own way to add middleware works for GET (HEAD is Litestar's to answer)."""
    site = Site()
    async with client(litestar_site(site, runtime, define=True)) as c:
        answers = [await c.get("/posts/hi"), await c.get("/posts/hi"), await c.get("/feed")]
        answers += [await c.get("/feed")]
    assert [(r.headers["x-cache"], r.text[:10]) for r in answers] == [
        ("MISS", "post hi v1"),
        ("HIT", "post hi v1"),
        ("MISS", "item 0 v1\n"),
        ("HIT", "item 0 v1\n"),
    ]
    assert site.calls == ["/posts/hi", "/feed"]


async def test_compression_around_the_middleware_edits_a_fresh_answer_every_time(
    runtime: isr.ISR,
) -> None:
    """Starlette's GZipMiddleware edits the start message's header list and the body message
    in place, so every answer from the cache must be made of new messages: a kept page that
    handed out the same objects twice would go out with two ``Content-Encoding`` headers, a
    wrong length or a body compressed twice."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.gzip import GZipMiddleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    text = "a page long enough to be worth compressing. " * 20

    async def page(request: Request) -> Response:
        return PlainTextResponse(text)

    app = Starlette(
        routes=[Route("/page", page)],
        middleware=[  # the first listed is the outermost
            Middleware(GZipMiddleware, minimum_size=100),
            Middleware(ISRMiddleware, runtime=runtime, rules=[Rule("/page", ttl=60)]),
        ],
    )
    async with client(app) as c:
        answers = [await c.get("/page", headers={"accept-encoding": "gzip"}) for _ in range(4)]
        plain = await c.get("/page", headers={"accept-encoding": "identity"})
    assert [r.headers["x-cache"] for r in answers] == ["MISS", "HIT", "HIT", "HIT"]
    for r in answers:
        assert r.headers.get_list("content-encoding") == ["gzip"]
        assert r.headers.get_list("x-cache") == [r.headers["x-cache"]]
        assert r.text == text  # httpx decompresses, once
    assert len({r.headers["content-length"] for r in answers}) == 1
    assert (plain.headers.get("content-encoding"), plain.text) == (None, text)
