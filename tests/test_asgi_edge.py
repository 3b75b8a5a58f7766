"""Issue 14 on the ASGI edge, tried as an attacker would: what a render sees (never the
visitor's request), what other clients are served, HTTP correctness (no-cache, incomplete
bodies, If-Match / If-Unmodified-Since, Last-Modified and Date, a 304's headers), 404/410
from the origin, unsafe methods (the cache-tests invalidation scenarios) and memory."""

from __future__ import annotations

import gc
import json
import time
import tracemalloc
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx
import pytest

import isr
from isr.asgi import ISRMiddleware, Message, Receive, Rule, Scope, Send

from ._asgi_apps import Origin, client
from .conftest import FakeClock
from .test_asgi_uvicorn import serving

pytestmark = pytest.mark.anyio

SITE = "https://www.example.com"
POSTS = Rule("/posts/{slug}", ttl=10, tags=["posts", "post:{slug}"])
#: Request parts that are not in the key: none may reach a render others are served.
ATTACKS: list[tuple[str, dict[str, str]]] = [
    ("/posts/a?utm=%3Cscript%3Ealert(1)%3C/script%3E", {}),
    ("/posts/a", {"host": "evil.example"}),
    ("/posts/a", {"x-forwarded-host": "evil.example", "x-forwarded-proto": "http"}),
    ("/posts/a", {"x-original-url": "/admin", "x-rewrite-url": "/admin"}),
    ("/posts/a", {"accept-language": "xx-evil"}),
    ("/posts/a", {"user-agent": "evil-agent", "accept": "application/evil"}),
    ("/posts/a", {"forwarded": "host=evil.example;proto=http", "x-evil": "boom"}),
]


class Reflecting:
    """A site that prints whatever it is given, as a careless app does (absolute links
    from Host and X-Forwarded-*, the query, headers): what a poisoned page would carry.
    It fails on ``x-evil``, as an app rejecting a header would."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.seen.append(
            {
                "scheme": scope["scheme"],
                "path": scope["path"],
                "raw_path": scope.get("raw_path"),
                "query": scope["query_string"].decode(),
                "headers": headers,
                "client": scope.get("client"),
                "method": scope["method"],
            }
        )
        if "x-evil" in headers:
            raise RuntimeError("the app refuses this header")
        host = headers.get("x-forwarded-host") or headers.get("host", "")
        proto = headers.get("x-forwarded-proto") or scope["scheme"]
        body = json.dumps(
            {
                "canonical": f"{proto}://{host}{scope['path']}?{scope['query_string'].decode()}",
                "headers": headers,
            }
        ).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


def clean(seen: dict[str, Any], host: str = "www.example.com", scheme: str = "https") -> bool:
    """What a render may see: the key's parts and the fixed headers, nothing else."""
    return (
        seen["method"] == "GET"
        and seen["scheme"] == scheme
        and seen["query"] == ""
        and seen["client"] is None
        and seen["headers"]
        == {
            "host": host,
            "user-agent": isr._http.USER_AGENT,
            "accept": "*/*",
            "x-forwarded-host": host,
            "x-forwarded-proto": scheme,
        }
    )


@pytest.fixture
async def runtime(clock: FakeClock) -> AsyncIterator[isr.ISR]:
    async with isr.ISR(clock=clock) as rt:
        yield rt


def cached(response: httpx.Response) -> str:
    return str(response.headers.get("x-cache", ""))


# ---------------------------------------------------------------- the canonical render


@pytest.mark.parametrize(("url", "headers"), ATTACKS)
async def test_no_request_part_outside_the_key_reaches_a_shared_render(
    runtime: isr.ISR, clock: FakeClock, url: str, headers: dict[str, str]
) -> None:
    """A miss, a background refresh and a revalidate, each started by the attacker's
    request: the app sees the canonical request every time, and a plain client is served
    the clean page."""
    app = Reflecting()
    async with client(ISRMiddleware(app, runtime, [POSTS], origin=SITE)) as c:
        miss = await c.get(url, headers=headers)
        clock.advance(11)
        stale = await c.get(url, headers=headers)
        await runtime.drain()
        await runtime.invalidate_tag("post:a", mode="revalidate")
        await c.get(url, headers=headers)
        await runtime.drain()
        plain = await c.get("/posts/a")
    assert [cached(miss), cached(stale), cached(plain)] == ["MISS", "STALE", "HIT"]
    assert len(app.seen) == 3
    assert all(clean(seen) for seen in app.seen), app.seen
    assert miss.content == plain.content
    assert json.loads(plain.content)["canonical"] == "https://www.example.com/posts/a?"
    assert runtime.stats().refresh_failures == 0  # x-evil never reached the app


async def test_without_an_origin_scheme_and_host_are_keyed_and_hosts_limit_them(
    runtime: isr.ISR,
) -> None:
    app = Reflecting()
    edge = ISRMiddleware(app, runtime, [POSTS], hosts=["test", "www.test"])
    async with client(edge) as c:
        own = await c.get("/posts/a", headers={"x-forwarded-host": "evil.example"})
        www = await c.get("/posts/a", headers={"host": "WWW.test:80"})
        again = await c.get("/posts/a")
        evil = await c.get("/posts/a", headers={"host": "evil.example"})
        evil_again = await c.get("/posts/a", headers={"host": "evil.example"})
    assert [cached(r) for r in (own, www, again, evil, evil_again)] == [
        "MISS",
        "MISS",
        "HIT",
        "BYPASS",
        "BYPASS",
    ]
    assert clean(app.seen[0], host="test", scheme="http")
    assert clean(app.seen[1], host="www.test", scheme="http")
    assert json.loads(again.content)["canonical"] == "http://test/posts/a?"
    assert len(app.seen) == 4  # the other host: the app's own answer each time, never kept
    assert runtime.adapter.size() == 2
    assert await runtime.invalidate("page:http://www.test/posts/a")


async def test_keyed_query_and_vary_values_reach_the_render_and_nothing_else(
    runtime: isr.ISR,
) -> None:
    app = Reflecting()
    rule = Rule("/posts/{slug}", ttl=10, query=["page"], vary=["accept-language"])
    async with client(ISRMiddleware(app, runtime, [rule], origin=SITE)) as c:
        first = await c.get("/posts/a?utm=x&page=2", headers={"accept-language": "de"})
        second = await c.get("/posts/a?page=2&junk=<b>", headers={"accept-language": " de"})
    assert (cached(first), cached(second)) == ("MISS", "HIT")
    seen = app.seen[0]
    assert seen["query"] == "page=2"
    assert seen["headers"]["accept-language"] == "de"
    assert "junk" not in second.text
    assert "utm" not in second.text


async def test_private_ok_renders_without_the_cookie_and_shares_nothing_of_it(
    runtime: isr.ISR,
) -> None:
    app = Reflecting()
    rule = Rule("/posts/{slug}", ttl=10, private_ok=True)
    async with client(ISRMiddleware(app, runtime, [rule], origin=SITE)) as c:
        with_cookie = await c.get("/posts/a", headers={"cookie": "sid=secret-session"})
        plain = await c.get("/posts/a")
        authorized = await c.get("/posts/a", headers={"authorization": "Bearer token"})
    assert (cached(with_cookie), cached(plain), cached(authorized)) == ("MISS", "HIT", "BYPASS")
    assert clean(app.seen[0])
    assert b"secret" not in plain.content
    assert app.seen[1]["headers"]["authorization"] == "Bearer token"  # its own answer only


async def test_a_failing_header_cannot_put_the_page_into_backoff(
    runtime: isr.ISR, clock: FakeClock
) -> None:
    """The app raises on ``x-evil``; the attacker's request cannot make a render fail,
    so a publish is seen at once by everyone, never held back by a backoff."""
    origin = Origin()
    real = origin.__call__

    async def picky(scope: Scope, receive: Receive, send: Send) -> None:
        if any(name == b"x-evil" for name, _ in scope["headers"]):
            raise RuntimeError("refused")
        await real(scope, receive, send)

    async with client(ISRMiddleware(picky, runtime, [POSTS], origin=SITE)) as c:
        await c.get("/posts/a", headers={"x-evil": "1"})
        origin.version = 2
        await runtime.invalidate_tag("post:a", mode="revalidate")
        stale = await c.get("/posts/a", headers={"x-evil": "1"})
        await runtime.drain()
        fresh = await c.get("/posts/a")
    assert (cached(stale), cached(fresh), fresh.text[-2:]) == ("STALE", "HIT", "v2")
    assert (runtime.stats().refresh_failures, runtime.stats().errors) == (0, 0)


async def test_framework_plumbing_passes_but_nothing_an_outer_middleware_decoded(
    runtime: isr.ISR,
) -> None:
    """A session or user an outer middleware decoded from the visitor's cookie, the client
    address and TLS details never reach a render; the lifespan state does, as a copy."""
    app = Origin()

    async def site(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await app(scope, receive, send)

    edge = ISRMiddleware(site, runtime, [Rule("/posts/{slug}", ttl=10, private_ok=True)])

    async def outer(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {
                **scope,
                "session": {"user": "alice"},
                "user": "alice",
                "state": {"db": "pool", "user": "alice"},
                "extensions": {"tls": {"client_cert_name": "alice"}},
                "root_path": "/blog",
                "app": "the app",
            }
        await edge(scope, receive, send)

    async def lifespan_receive() -> Message:
        return {"type": "lifespan.shutdown"}

    async def ignore(message: Message) -> None:
        pass

    state = {"db": "pool"}
    await edge({"type": "lifespan", "state": state}, lifespan_receive, ignore)
    async with client(outer) as c:
        await c.get("/posts/a", headers={"cookie": "sid=alice"})
    seen = app.calls[0]
    assert not {"session", "user"} & set(seen)
    assert seen["extensions"] == {}
    assert seen["client"] is None
    assert seen["state"] == {"db": "pool"}
    assert seen["state"] is not state
    assert (seen["root_path"], seen["app"]) == ("/blog", "the app")


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_poisoning_attempts_on_a_real_uvicorn(http: str) -> None:
    """Host keyed (no origin): each attack renders the canonical request of its own key;
    a plain client then gets every page clean, from the cache."""
    app = Reflecting()
    rt = isr.ISR()
    edge = ISRMiddleware(app, rt, [Rule("/plain/{slug}", ttl=10)])
    with serving(edge, http) as base, httpx.Client(base_url=base, timeout=10) as c:
        host = base.removeprefix("http://")
        for n, (url, headers) in enumerate(ATTACKS):
            c.get(url.replace("/posts/a", f"/plain/p{n}"), headers=headers)
        plain = [c.get(f"/plain/p{n}") for n in range(len(ATTACKS))]
    rt.close()
    assert len(app.seen) == len(ATTACKS) + 1  # the Host attack got its own page, not ours
    for seen in app.seen:
        own = seen["headers"]["host"]
        assert own in (host, "evil.example")
        assert clean(seen, host=own, scheme="http"), seen
    for n, response in enumerate(plain):
        assert cached(response) == ("MISS" if n == 1 else "HIT")
        assert json.loads(response.content)["canonical"] == f"http://{host}/plain/p{n}?"


# ---------------------------------------------------------------- HTTP correctness


async def test_no_cache_is_never_kept_nor_relabelled(runtime: isr.ISR) -> None:
    origin = Origin()
    origin.headers = [(b"cache-control", b'no-cache="x-thing", max-age=60')]
    async with client(ISRMiddleware(origin, runtime, [POSTS], origin=SITE)) as c:
        answers = [await c.get("/posts/a") for _ in range(2)]
    assert [cached(r) for r in answers] == ["MISS", "MISS"]
    assert len(origin.calls) == 2
    for response in answers:
        assert response.headers["cache-control"] == 'no-cache="x-thing", max-age=60'
        assert "etag" not in response.headers


class Breaking:
    """An app that sends part of a body and then returns or raises, or lies about its
    Content-Length; ``broken`` steers it."""

    def __init__(self) -> None:
        self.broken = "return"
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        if self.broken == "length":
            headers = [(b"content-length", b"100")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"only a part"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if self.broken == "no":
            await send({"type": "http.response.body", "body": b"whole page v%d" % self.calls})
            return
        await send({"type": "http.response.body", "body": b"half a pa", "more_body": True})
        if self.broken == "raise":
            raise RuntimeError("database went away mid-page")


@pytest.mark.parametrize("broken", ["return", "raise", "length"])
def test_an_incomplete_render_is_never_kept_and_the_client_sees_the_abort(broken: str) -> None:
    app = Breaking()
    app.broken = broken
    rt = isr.ISR()
    edge = ISRMiddleware(app, rt, [POSTS], origin=SITE)
    with serving(edge, "h11") as base, httpx.Client(base_url=base, timeout=10) as c:
        for _ in range(2):
            with pytest.raises(httpx.RemoteProtocolError):
                c.get("/posts/a")
        app.broken = "no"
        whole = c.get("/posts/a")
        app.broken = broken
        rt.invalidate_tag_sync("post:a", mode="expire")  # the old page is the fallback now
        fallback = c.get("/posts/a")
    rt.close()
    assert app.calls == 4
    assert (cached(whole), whole.content) == ("MISS", b"whole page v3")
    assert (cached(fallback), fallback.content) == ("STALE-IF-ERROR", b"whole page v3")
    assert fallback.headers["content-length"] == str(len(fallback.content))


async def test_if_match_and_if_unmodified_since_on_a_cached_page(
    runtime: isr.ISR, clock: FakeClock
) -> None:
    origin = Origin()
    origin.headers = [(b"content-location", b"/posts/a.txt")]
    async with client(ISRMiddleware(origin, runtime, [POSTS], origin=SITE)) as c:
        page = await c.get("/posts/a")
        etag, modified = page.headers["etag"], page.headers["last-modified"]
        clock.advance(2)
        answers = {
            "match": await c.get("/posts/a", headers={"if-match": etag}),
            "no match": await c.get("/posts/a", headers={"if-match": '"other"'}),
            "unmodified": await c.get("/posts/a", headers={"if-unmodified-since": modified}),
            "modified": await c.get(
                "/posts/a", headers={"if-unmodified-since": "Thu, 01 Jan 1970 00:00:00 GMT"}
            ),
            "both": await c.get("/posts/a", headers={"if-match": '"x"', "if-none-match": etag}),
            "304": await c.get("/posts/a", headers={"if-none-match": etag}),
        }
    assert {name: r.status_code for name, r in answers.items()} == {
        "match": 200,
        "no match": 412,
        "unmodified": 200,
        "modified": 412,
        "both": 412,
        "304": 304,
    }
    failed = answers["no match"]
    assert (failed.content, failed.headers["etag"], cached(failed)) == (b"", etag, "HIT")
    not_modified = answers["304"]
    full = answers["match"]
    for name in ("etag", "content-location", "cache-control", "x-cache-tags", "age"):
        assert not_modified.headers[name] == full.headers[name], name
    assert not_modified.headers["content-location"] == "/posts/a.txt"


async def test_a_vary_rule_sends_vary_on_its_304_too(runtime: isr.ISR) -> None:
    rule = Rule("/posts/{slug}", ttl=10, vary=["accept-language"])
    async with client(ISRMiddleware(Origin(), runtime, [rule], origin=SITE)) as c:
        page = await c.get("/posts/a")
        again = await c.get("/posts/a", headers={"if-none-match": page.headers["etag"]})
    assert again.status_code == 304
    assert again.headers["vary"] == page.headers["vary"] == "accept-language"


def test_last_modified_never_after_date_and_date_minus_age_is_the_render_on_uvicorn() -> None:
    """uvicorn's Date is the one of its last tick (up to a second behind); the middleware
    reads it, so Last-Modified is never later. A real clock: the render time is real."""
    rt = isr.ISR()
    edge = ISRMiddleware(Origin(), rt, [POSTS], origin=SITE)
    seen = []
    with serving(edge, "httptools") as base, httpx.Client(base_url=base, timeout=10) as c:
        for n in range(12):
            response = c.get(f"/posts/p{n % 4}")
            seen.append(response)
            time.sleep(0.23)
    rt.close()
    for response in seen:
        date = parsedate_to_datetime(response.headers["date"]).timestamp()
        modified = parsedate_to_datetime(response.headers["last-modified"]).timestamp()
        age = int(response.headers["age"])
        assert modified <= date, (response.headers["date"], response.headers["last-modified"])
        # Date and Age are whole seconds, and uvicorn's Date is its last tick's (up to a
        # second old): they agree with the render to within those two seconds.
        assert -2.0 <= (date - age) - modified <= 1.0, response.headers


# ---------------------------------------------------------------- 404 and 410


@pytest.mark.parametrize("status", [404, 410])
async def test_a_page_the_origin_says_is_gone_is_purged_in_every_way_it_is_rendered(
    runtime: isr.ISR, clock: FakeClock, status: int
) -> None:
    """Foreground (after an expire), background (swr=None, after the ttl) and after a
    revalidate: the 404/410 purges the page, goes to the requester, and is counted."""
    origin = Origin()
    async with client(ISRMiddleware(origin, runtime, [POSTS], origin=SITE)) as c:
        hows: list[Literal["expire", "ttl", "revalidate"]] = ["expire", "ttl", "revalidate"]
        for how in hows:
            await c.get("/posts/a")
            origin.status = status
            if how == "ttl":
                clock.advance(11)
            else:
                await runtime.invalidate_tag("post:a", mode=how)
            first = await c.get("/posts/a")
            await runtime.drain()
            after = await c.get("/posts/a")
            assert (after.status_code, cached(after)) == (status, "MISS"), how
            if how == "expire":
                assert (first.status_code, cached(first)) == (status, "MISS")
            else:  # the old page once, at once, while the background render asks
                assert (first.status_code, cached(first)) == (200, "STALE")
            assert runtime.adapter.size() == 0
            origin.status = 200
    assert runtime.stats().gone == 6


async def test_negative_caching_keeps_a_404_for_its_own_short_ttl(
    runtime: isr.ISR, clock: FakeClock
) -> None:
    origin = Origin()
    origin.status = 404
    rule = Rule("/posts/{slug}", ttl=60, negative_ttl=5, tags=["post:{slug}"])
    async with client(ISRMiddleware(origin, runtime, [rule], origin=SITE)) as c:
        flood = [await c.get("/posts/missing") for _ in range(5)]
        clock.advance(6)
        origin.status = 200  # published meanwhile
        later = await c.get("/posts/missing")
        plain = [await c.get("/posts/other") for _ in range(2)]
    assert [(r.status_code, cached(r)) for r in flood] == [(404, "MISS")] + [(404, "HIT")] * 4
    assert flood[1].headers["cache-control"] == "public, s-maxage=5"
    assert (later.status_code, cached(later)) == (200, "MISS")
    assert [cached(r) for r in plain] == ["MISS", "HIT"]
    assert len(origin.calls) == 3
    off = Origin()
    off.status = 404
    async with client(ISRMiddleware(off, runtime, [POSTS], origin=SITE)) as c:
        answers = [await c.get("/posts/elsewhere") for _ in range(3)]
    assert [cached(r) for r in answers] == ["MISS"] * 3  # off by default
    assert len(off.calls) == 3


# ---------------------------------------------------------------- unsafe methods


class Writable(Origin):
    """The site, and an unsafe request that answers ``unsafe_status`` with ``Location``
    and ``Content-Location`` headers pointing at other pages (cache-tests' lcl_response)."""

    def __init__(self) -> None:
        super().__init__()
        self.unsafe_status = 200
        self.unsafe_headers: list[tuple[bytes, bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] in ("GET", "HEAD"):
            await super().__call__(scope, receive, send)
            return
        while (await receive()).get("more_body"):
            pass
        headers = self.unsafe_headers
        await send(
            {"type": "http.response.start", "status": self.unsafe_status, "headers": headers}
        )
        await send({"type": "http.response.body", "body": b"done"})


#: cache-tests' invalidation suite (tests/invalidation.mjs): these methods, each for the
#: target URI, for Location and for Content-Location, and a failed one invalidating nothing.
METHODS = ["POST", "PUT", "DELETE", "M-SEARCH"]


@pytest.mark.parametrize("method", METHODS)
async def test_a_successful_unsafe_request_invalidates_its_target(
    runtime: isr.ISR, method: str
) -> None:
    app = Writable()
    rule = Rule("/posts/{slug}", ttl=100, query=["page"], vary=["accept-language"])
    async with client(ISRMiddleware(app, runtime, [rule], origin=SITE)) as c:
        variants = [
            ("/posts/a", {}),
            ("/posts/a?page=2", {}),
            ("/posts/a", {"accept-language": "de"}),
        ]
        for url, headers in variants:
            await c.get(url, headers=headers)
        answer = await c.request(method, "/posts/a", content=b"abc")
        after = [await c.get(url, headers=headers) for url, headers in variants]
    assert (answer.status_code, cached(answer)) == (200, "BYPASS")
    assert [cached(r) for r in after] == ["MISS"] * 3  # every variant of the path


@pytest.mark.parametrize("method", METHODS)
async def test_a_failed_unsafe_request_invalidates_nothing(runtime: isr.ISR, method: str) -> None:
    app = Writable()
    app.unsafe_status = 500
    async with client(ISRMiddleware(app, runtime, [POSTS], origin=SITE)) as c:
        await c.get("/posts/a")
        await c.request(method, "/posts/a", content=b"abc")
        after = await c.get("/posts/a")
    assert cached(after) == "HIT"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("header", [b"location", b"content-location"])
@pytest.mark.parametrize(
    ("value", "invalidated"),
    [
        (b"/posts/target", True),
        (b"target", True),  # relative to /posts/a
        (b"https://www.example.com/posts/target", True),
        (b"http://test/posts/target", True),  # the request's own origin
        (b"https://elsewhere.example/posts/target", False),  # another site: never
    ],
)
async def test_location_and_content_location_on_the_same_origin_are_invalidated(
    runtime: isr.ISR, method: str, header: bytes, value: bytes, invalidated: bool
) -> None:
    app = Writable()
    app.unsafe_headers = [(header, value)]
    async with client(ISRMiddleware(app, runtime, [POSTS], origin=SITE)) as c:
        await c.get("/posts/target")
        await c.request(method, "/posts/a", content=b"abc")
        after = await c.get("/posts/target")
    assert cached(after) == ("MISS" if invalidated else "HIT")


async def test_an_unsafe_request_elsewhere_invalidates_the_page_it_points_at(
    runtime: isr.ISR,
) -> None:
    """A form posted to a path no rule caches (``/comments``) that redirects to the post."""
    app = Writable()
    app.status = 200
    app.unsafe_status, app.unsafe_headers = 303, [(b"location", b"/posts/a")]
    async with client(ISRMiddleware(app, runtime, [POSTS], origin=SITE)) as c:
        await c.get("/posts/a")
        answer = await c.post("/comments", content=b"nice")
        after = await c.get("/posts/a")
    assert "x-cache" not in answer.headers  # a path no rule matches: untouched
    assert cached(after) == "MISS"


def test_unsafe_invalidation_on_a_real_uvicorn() -> None:
    app = Writable()
    app.unsafe_headers = [(b"content-location", b"/posts/b")]
    rt = isr.ISR()
    edge = ISRMiddleware(app, rt, [POSTS], origin=SITE)
    with serving(edge, "httptools") as base, httpx.Client(base_url=base, timeout=10) as c:
        for path in ("/posts/a", "/posts/b", "/posts/c"):
            c.get(path)
        c.put("/posts/a", content=b"abc")
        after = [cached(c.get(path)) for path in ("/posts/a", "/posts/b", "/posts/c")]
    rt.close()
    assert after == ["MISS", "MISS", "HIT"]


# ---------------------------------------------------------------- memory


async def test_each_page_body_is_held_once_and_max_bytes_bounds_them(clock: FakeClock) -> None:
    """Eight 4 MiB pages cost about 32 MiB on the memory store (the entry and the prepared
    answer share the body), and ``max_bytes`` keeps only what fits."""
    size = 4 * 1024 * 1024

    async def big(scope: Scope, receive: Receive, send: Send) -> None:
        body = scope["path"].encode().ljust(size, b".")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    rule = Rule("/big/{n}", ttl=60)
    async with isr.ISR(clock=clock) as rt, client(ISRMiddleware(big, rt, [rule], origin=SITE)) as c:
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for n in range(8):
                assert cached(await c.get(f"/big/{n}")) == "MISS"
            for n in range(8):
                assert cached(await c.get(f"/big/{n}")) == "HIT"
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    assert 8 * size <= held < 8 * size * 1.25, held / 2**20
    async with isr.ISR("memory://?max_bytes=17MiB", clock=clock) as rt:
        async with client(ISRMiddleware(big, rt, [rule], origin=SITE)) as c:
            for n in range(8):
                await c.get(f"/big/{n}")
            again = [cached(await c.get(f"/big/{n}")) for n in range(6, 8)]
        assert rt.adapter.size() == 4
        assert rt.stats().evictions == 4
        assert rt.stats().store["bytes"] <= 17 * 2**20
    assert again == ["HIT", "HIT"]
