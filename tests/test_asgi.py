"""The ASGI edge, seen as a client sees it: through httpx, every window crossed on a fake clock."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from pathlib import Path

import anyio
import httpx
import pytest

import isr
from isr.asgi import ISRMiddleware, Message, Receive, Rule, Scope, Send

from ._asgi_apps import Origin, client
from .conftest import FakeClock

pytestmark = pytest.mark.anyio

#: The canonical origin of the tests' site (httpx's base URL): keys are then the path's.
SITE = "http://test"
POSTS = Rule("/posts/{slug}", ttl=10, tags=["posts", "post:{slug}"])
CACHE_CONTROL = "public, s-maxage=10, stale-while-revalidate=31536000, stale-if-error=86400"


@pytest.fixture
async def runtime(clock: FakeClock) -> AsyncIterator[isr.ISR]:
    async with isr.ISR(clock=clock) as rt:
        yield rt


def etag_of(body: bytes) -> str:
    return f'"{hashlib.sha256(body).hexdigest()[:32]}"'


def cached(response: httpx.Response) -> str:
    return str(response.headers.get("x-cache", ""))


async def test_miss_then_hit_without_running_the_app_again(
    runtime: isr.ISR, clock: FakeClock
) -> None:
    origin = Origin()
    origin.chunks = 3  # streamed: buffered whole for the cache
    async with client(ISRMiddleware(origin, runtime, [POSTS], origin=SITE)) as c:
        first = await c.get("/posts/hello")
        clock.advance(3.7)
        second = await c.get("/posts/hello")
    assert [cached(first), cached(second)] == ["MISS", "HIT"]
    assert first.status_code == second.status_code == 200
    assert first.text == second.text == "/posts/hello? lang=- v1"
    assert len(origin.calls) == 1
    assert [first.headers["age"], second.headers["age"]] == ["0", "3"]
    for response in (first, second):
        assert response.headers["content-type"] == "text/plain"
        assert response.headers["content-length"] == str(len(response.content))
        assert response.headers["cache-control"] == CACHE_CONTROL
        assert response.headers["x-cache-tags"] == "posts,post:hello"
        assert response.headers["etag"] == etag_of(response.content)
        assert "surrogate-key" not in response.headers
        assert "cache-tag" not in response.headers
    # Last-Modified is when the page was rendered: the same on every answer from it.
    assert first.headers["last-modified"] == second.headers["last-modified"]
    rendered = parsedate_to_datetime(first.headers["last-modified"]).timestamp()
    assert time.time() - 5 < rendered <= time.time()


async def test_hits_are_counted_and_every_invalidation_is_obeyed_on_every_store(
    rt: isr.ISR,
) -> None:
    """A fresh page is served by the middleware's quick path where the store keeps one in
    this process (memory, disk, an L1), by a lookup elsewhere: either way its hits count
    in stats() and no invalidation strength is missed."""
    origin = Origin()
    async with client(ISRMiddleware(origin, rt, [POSTS], origin=SITE)) as c:
        seen = [await c.get("/posts/hello") for _ in range(3)]
        assert rt.stats().hits == 2
        origin.version = 2
        await rt.invalidate_all(mode="revalidate")
        seen.append(await c.get("/posts/hello"))
        await rt.drain()
        seen.append(await c.get("/posts/hello"))
        origin.version = 3
        await rt.invalidate_all()
        seen.append(await c.get("/posts/hello"))
        origin.version = 4
        assert await rt.invalidate("page:/posts/hello", mode="purge")
        seen.append(await c.get("/posts/hello"))
        seen.append(await c.head("/posts/hello"))
    assert [(cached(r), r.text.rsplit(" ", 1)[-1]) for r in seen] == [
        ("MISS", "v1"),
        ("HIT", "v1"),
        ("HIT", "v1"),
        ("STALE", "v1"),
        ("HIT", "v2"),
        ("MISS", "v3"),
        ("MISS", "v4"),
        ("HIT", ""),
    ]
    assert (rt.stats().hits, rt.stats().stale) == (4, 1)


async def test_an_app_that_waits_for_the_disconnect_is_not_left_hanging(
    runtime: isr.ISR, clock: FakeClock
) -> None:
    """A server says ``http.disconnect`` once the response is complete; the middleware's
    renders say it too, or an app waiting for it (Litestar's streams) never returns."""
    origin = Origin()
    origin.chunks, origin.linger = 3, True
    async with client(ISRMiddleware(origin, runtime, [POSTS], origin=SITE)) as c:
        with anyio.fail_after(10):
            first = await c.get("/posts/hello")
            clock.advance(11)
            stale = await c.get("/posts/hello")
            await runtime.drain()
            fresh = await c.get("/posts/hello")
    assert [cached(first), cached(stale), cached(fresh)] == ["MISS", "STALE", "HIT"]
    assert len(origin.calls) == 2


async def test_age_is_seconds_since_the_render_never_the_ttl_left(
    runtime: isr.ISR, clock: FakeClock
) -> None:
    origin = Origin()
    ages = []
    async with client(ISRMiddleware(origin, runtime, [POSTS], origin=SITE)) as c:
        for step in (0, 1, 4, 5.9, 0):
            clock.advance(step)
            response = await c.get("/posts/hello")
            ages.append((cached(response), response.headers["age"]))
            await runtime.drain()  # the refresh after a STALE answer renders at 10.9 s
        clock.advance(3)
        response = await c.get("/posts/hello")
        ages.append((cached(response), response.headers["age"]))
    assert ages == [
        ("MISS", "0"),
        ("HIT", "1"),
        ("HIT", "5"),
        ("STALE", "10"),
        ("HIT", "0"),
        ("HIT", "3"),
    ]


async def test_a_quick_hit_says_the_age_of_its_own_moment(
    runtime: isr.ISR, clock: FakeClock
) -> None:
    """The quick path keeps the Age header it last wrote for the second it holds: hits in
    the same second agree, the next second says one more, a wall clock stepped back says
    less again, and a new render starts again at 0 even within the kept second."""
    origin = Origin()
    ages = []
    async with client(ISRMiddleware(origin, runtime, [POSTS], origin=SITE)) as c:
        await c.get("/posts/hello")
        for step in (2.0, 0.99, 0.01, -1.5):
            clock.advance(step)
            ages.append((await c.get("/posts/hello")).headers["age"])
        clock.advance(0.2)
        assert await runtime.invalidate("page:/posts/hello", mode="purge")
        await c.get("/posts/hello")  # rendered again at 1.7 s
        clock.advance(0.1)
        again = await c.get("/posts/hello")
    assert ages == ["2", "2", "3", "1"]
    assert (cached(again), again.headers["age"]) == ("HIT", "0")
    assert runtime.stats().hits == 5


async def test_an_age_of_hours_is_sent_in_full_on_every_path(
    runtime: isr.ISR, clock: FakeClock
) -> None:
    """Ages past the ten minutes kept ready-made are written out: on the quick path (plain
    GET, HEAD), on the full one (a request with a validator) and on a STALE answer."""
    origin = Origin()
    rule = Rule("/posts/{slug}", ttl=7200)
    async with client(ISRMiddleware(origin, runtime, [rule], origin=SITE)) as c:
        await c.get("/posts/hello")
        clock.advance(3599.5)
        quick, head = await c.get("/posts/hello"), await c.head("/posts/hello")
        full = await c.get("/posts/hello", headers={"if-none-match": '"other"'})
        clock.advance(3601)
        stale = await c.get("/posts/hello")
    assert [(cached(r), r.headers["age"]) for r in (quick, head, full, stale)] == [
        ("HIT", "3599"),
        ("HIT", "3599"),
        ("HIT", "3599"),
        ("STALE", "7200"),
    ]
    assert quick.text == full.text
    assert head.content == b""


async def test_stale_at_once_then_the_background_render_is_served(
    runtime: isr.ISR, clock: FakeClock
) -> None:
    origin = Origin()
    async with client(ISRMiddleware(origin, runtime, [POSTS], origin=SITE)) as c:
        await c.get("/posts/hello", headers={"if-none-match": '"old"', "range": "bytes=0-3"})
        origin.version = 2
        clock.advance(11)
        stale = await c.get("/posts/hello")
        assert (cached(stale), stale.text, stale.headers["age"]) == (
            "STALE",
            "/posts/hello? lang=- v1",
            "11",
        )
        await runtime.drain()
        assert len(origin.calls) == 2
        fresh = await c.get("/posts/hello")
    assert (cached(fresh), fresh.text, fresh.headers["age"]) == (
        "HIT",
        "/posts/hello? lang=- v2",
        "0",
    )
    assert fresh.headers["etag"] != stale.headers["etag"]
    # Renders see a GET with an empty body, and never the client's conditional headers.
    assert [scope["method"] for scope in origin.calls] == ["GET", "GET"]
    assert origin.bodies == [b"", b""]
    for scope in origin.calls:
        names = {name for name, _ in scope["headers"]}
        assert not names & {b"if-none-match", b"range"}


async def test_a_stale_answer_is_never_fresh_for_a_cdn_even_when_young(
    runtime: isr.ISR, clock: FakeClock
) -> None:
    """After a revalidate mark a page can be stale at an Age under its ttl: a CDN
    refetching it (on a soft purge) must not take it as fresh for the rest of the ttl."""
    origin = Origin()
    async with client(ISRMiddleware(origin, runtime, [POSTS], origin=SITE)) as c:
        first = await c.get("/posts/hello")
        assert "s-maxage=10," in first.headers["cache-control"]
        clock.advance(2)
        await runtime.invalidate_tag("post:hello", mode="revalidate")
        stale = await c.get("/posts/hello")
        assert (cached(stale), stale.headers["age"]) == ("STALE", "2")
        assert stale.headers["cache-control"].startswith("public, s-maxage=0, ")
        await runtime.drain()
        fresh = await c.get("/posts/hello")
        assert (cached(fresh), fresh.headers["cache-control"]) == (
            "HIT",
            first.headers["cache-control"],
        )


async def test_stale_if_error_serves_the_old_page_when_the_app_fails(
    runtime: isr.ISR, clock: FakeClock
) -> None:
    origin = Origin()
    rule = Rule("/posts/{slug}", ttl=10, swr=5, stale_if_error=100)
    async with client(ISRMiddleware(origin, runtime, [rule], origin=SITE)) as c:
        await c.get("/posts/hello")
        origin.status = 503
        clock.advance(20)
        old = await c.get("/posts/hello")
        assert (old.status_code, cached(old), old.text) == (
            200,
            "STALE-IF-ERROR",
            "/posts/hello? lang=- v1",
        )
        assert old.headers["age"] == "20"
        assert old.headers["cache-control"] == (  # stale: never fresh for a CDN
            "public, s-maxage=0, stale-while-revalidate=5, stale-if-error=100"
        )
        origin.status, origin.fail = 200, RuntimeError("database down")
        clock.advance(2)  # past the backoff: the app is asked again, and raises
        assert cached(await c.get("/posts/hello")) == "STALE-IF-ERROR"
        assert len(origin.calls) == 3
        origin.status, origin.fail = 500, None
        clock.advance(200)  # past every window: the app's own error goes out, not kept
        error = await c.get("/posts/hello")
        assert (error.status_code, cached(error), error.text) == (
            500,
            "MISS",
            "/posts/hello? lang=- v1",
        )
        assert "public" not in error.headers.get("cache-control", "")
        assert "etag" not in error.headers


async def test_an_app_exception_without_an_old_page_reaches_the_server(runtime: isr.ISR) -> None:
    origin = Origin()
    origin.fail = RuntimeError("boom")
    async with client(ISRMiddleware(origin, runtime, [POSTS], origin=SITE)) as c:
        with pytest.raises(RuntimeError, match="boom"):
            await c.get("/posts/hello")


async def test_etag_is_the_same_in_every_process_and_answers_304(clock: FakeClock) -> None:
    async with isr.ISR(clock=clock) as rt1, isr.ISR(clock=clock) as rt2:
        async with client(ISRMiddleware(Origin(), rt1, [POSTS], origin=SITE)) as c1:
            one = await c1.get("/posts/hello")
        async with client(ISRMiddleware(Origin(), rt2, [POSTS], origin=SITE)) as c2:
            two = await c2.get("/posts/hello")
            etag = two.headers["etag"]
            clock.advance(2)
            answers = {
                tag: await c2.get("/posts/hello", headers={"if-none-match": tag})
                for tag in (etag, f"W/{etag}", f'"nope", {etag}', "*", '"nope"')
            }
            modified = two.headers["last-modified"]
            since = await c2.get("/posts/hello", headers={"if-modified-since": modified})
            before = await c2.get(
                "/posts/hello", headers={"if-modified-since": "Thu, 01 Jan 1970 00:00:00 GMT"}
            )
            head = await c2.head("/posts/hello", headers={"if-none-match": etag})
    assert one.headers["etag"] == etag == etag_of(b"/posts/hello? lang=- v1")
    assert [r.status_code for r in answers.values()] == [304, 304, 304, 304, 200]
    not_modified = answers[etag]
    assert not_modified.content == b""
    assert not_modified.headers["etag"] == etag
    assert not_modified.headers["cache-control"] == CACHE_CONTROL
    assert not_modified.headers["age"] == "2"
    assert not_modified.headers["x-cache"] == "HIT"
    assert "content-length" not in not_modified.headers
    assert answers['"nope"'].text == "/posts/hello? lang=- v1"
    assert (since.status_code, before.status_code, head.status_code) == (304, 200, 304)


async def test_an_asctime_if_modified_since_is_utc_on_a_machine_west_of_greenwich(
    runtime: isr.ISR, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP dates without a zone (the asctime form) are UTC, whatever the server's TZ."""
    monkeypatch.setenv("TZ", "XST+5")  # five hours west of UTC (POSIX form, no tzdata)
    time.tzset()

    def asctime(t: float) -> str:  # the asctime form: no zone, so UTC
        return time.strftime("%a %b %e %H:%M:%S %Y", time.gmtime(t))

    try:
        async with client(ISRMiddleware(Origin(), runtime, [POSTS], origin=SITE)) as c:
            await c.get("/posts/hello")  # rendered now
            now = time.time()
            before = await c.get("/posts/hello", headers={"if-modified-since": asctime(now - 3600)})
            after = await c.get("/posts/hello", headers={"if-modified-since": asctime(now + 3600)})
    finally:
        monkeypatch.undo()
        time.tzset()
    assert (before.status_code, after.status_code) == (200, 304)


async def test_head_is_answered_from_the_get_page(runtime: isr.ISR) -> None:
    origin = Origin()
    async with client(ISRMiddleware(origin, runtime, [POSTS], origin=SITE)) as c:
        head = await c.head("/posts/hello")
        get = await c.get("/posts/hello")
        head_again = await c.head("/posts/hello")
    assert (cached(head), cached(get), cached(head_again)) == ("MISS", "HIT", "HIT")
    assert head.content == b"" == head_again.content
    assert head.headers["content-length"] == str(len(get.content))
    assert head.headers["etag"] == get.headers["etag"]
    assert [scope["method"] for scope in origin.calls] == ["GET"]


async def test_listed_query_parameters_select_the_page_others_do_not(runtime: isr.ISR) -> None:
    origin = Origin()
    rule = Rule("/", ttl=10, query=["page", "sort"], bypass_query=["search", "filter["])
    async with client(ISRMiddleware(origin, runtime, [rule], origin=SITE)) as c:

        async def get(url: str) -> tuple[str, str]:
            response = await c.get(url)
            return cached(response), response.text

        assert await get("/?page=2&sort=new") == ("MISS", "/?page=2&sort=new lang=- v1")
        assert await get("/?sort=new&utm_source=x&page=2") == ("HIT", "/?page=2&sort=new lang=- v1")
        assert await get("/?page=3") == ("MISS", "/?page=3 lang=- v1")
        assert await get("/") == ("MISS", "/? lang=- v1")
        assert await get("/?utm_source=mail") == ("HIT", "/? lang=- v1")
        calls = len(origin.calls)
        for url in ("/?search=ann", "/?search=ann", "/?page=2&filter[status]=draft"):
            status, text = await get(url)
            assert (status, text) == ("BYPASS", f"{url} lang=- v1")
        assert len(origin.calls) == calls + 3


@pytest.mark.parametrize(
    ("status", "header"),
    [
        (200, (b"set-cookie", b"sid=secret; HttpOnly")),
        (200, (b"cache-control", b"private, max-age=60")),
        (200, (b"cache-control", b"public, no-store")),
        (404, (b"x-reason", b"no such post")),
        (301, (b"location", b"/posts/other")),
    ],
)
async def test_responses_that_must_not_be_kept_are_served_once(
    runtime: isr.ISR, status: int, header: tuple[bytes, bytes]
) -> None:
    origin = Origin()
    origin.status, origin.headers = status, [header]
    async with client(ISRMiddleware(origin, runtime, [POSTS], origin=SITE)) as c:
        answers = [await c.get("/posts/hello", follow_redirects=False) for _ in range(2)]
    assert len(origin.calls) == 2
    for response in answers:
        assert (response.status_code, cached(response)) == (status, "MISS")
        assert response.headers[header[0].decode()] == header[1].decode()  # as the app said
        assert "etag" not in response.headers
        assert "x-cache-tags" not in response.headers


async def test_a_private_response_is_never_handed_to_the_requests_that_waited(
    runtime: isr.ISR,
) -> None:
    gate = anyio.Event()
    served = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal served
        served += 1
        user = served
        await gate.wait()
        headers = [(b"set-cookie", f"sid={user}".encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": f"hello user {user}".encode()})

    answers: list[httpx.Response] = []
    async with client(ISRMiddleware(app, runtime, [POSTS], origin=SITE)) as c:

        async def visit() -> None:
            answers.append(await c.get("/posts/hello"))

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(visit)
            await anyio.wait_all_tasks_blocked()
            assert served == 1  # one render; three requests wait for it
            gate.set()
    assert served == 4
    assert sorted(r.text for r in answers) == [f"hello user {n}" for n in (1, 2, 3, 4)]
    for response in answers:
        assert response.text == f"hello user {response.headers['set-cookie'].removeprefix('sid=')}"


async def test_concurrent_misses_render_once(runtime: isr.ISR) -> None:
    origin = Origin()
    origin.gate = anyio.Event()
    answers: list[httpx.Response] = []
    async with client(ISRMiddleware(origin, runtime, [POSTS], origin=SITE)) as c:

        async def visit() -> None:
            answers.append(await c.get("/posts/hello"))

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(visit)
            await anyio.wait_all_tasks_blocked()
            origin.gate.set()
    assert len(origin.calls) == 1
    assert [cached(r) for r in answers] == ["MISS"] * 5
    assert {r.text for r in answers} == {"/posts/hello? lang=- v1"}


async def test_authorization_and_cookies_are_never_served_from_the_cache(runtime: isr.ISR) -> None:
    origin = Origin()
    async with client(ISRMiddleware(origin, runtime, [POSTS], origin=SITE)) as c:
        await c.get("/posts/hello")
        origin.version = 2
        private = [
            await c.get("/posts/hello", headers={"authorization": "Bearer x"}),
            await c.get("/posts/hello", headers={"cookie": "sid=1"}),
            await c.options("/posts/hello"),  # safe: answered by the app, changes nothing
        ]
        public = await c.get("/posts/hello")
    for response in private:
        assert (cached(response), response.text) == ("BYPASS", "/posts/hello? lang=- v2")
        assert "etag" not in response.headers
    assert len(origin.calls) == 4
    assert (cached(public), public.text) == ("HIT", "/posts/hello? lang=- v1")


async def test_private_ok_lets_cookies_in_and_renders_without_them(runtime: isr.ISR) -> None:
    origin = Origin()
    rule = Rule("/posts/{slug}", ttl=10, private_ok=True)
    async with client(ISRMiddleware(origin, runtime, [rule], origin=SITE)) as c:
        first = await c.get("/posts/hello", headers={"cookie": "consent=yes"})
        second = await c.get("/posts/hello", headers={"cookie": "sid=someone-else"})
        authorized = await c.get("/posts/hello", headers={"authorization": "Basic eDp5"})
    assert (cached(first), cached(second), cached(authorized)) == ("MISS", "HIT", "BYPASS")
    assert b"cookie" not in dict(origin.calls[0]["headers"])


async def test_vary_headers_of_the_rule_select_the_page(runtime: isr.ISR) -> None:
    origin = Origin()
    origin.headers = [(b"vary", b"Accept-Language")]
    rule = Rule("/posts/{slug}", ttl=10, vary=["Accept-Language"])
    async with client(ISRMiddleware(origin, runtime, [rule], origin=SITE)) as c:

        async def get(lang: str) -> httpx.Response:
            return await c.get("/posts/hello", headers={"accept-language": lang})

        en, de, en_again = await get("en"), await get("de"), await get("en")
    assert [cached(r) for r in (en, de, en_again)] == ["MISS", "MISS", "HIT"]
    assert (en.text, de.text, en_again.text) == (
        "/posts/hello? lang=en v1",
        "/posts/hello? lang=de v1",
        "/posts/hello? lang=en v1",
    )
    assert en_again.headers["vary"] == "accept-language"


@pytest.mark.parametrize("vary", [b"User-Agent", b"accept-language, Accept-Encoding", b"*"])
async def test_a_response_varying_on_what_the_key_ignores_is_not_kept(
    runtime: isr.ISR, vary: bytes
) -> None:
    origin = Origin()
    origin.headers = [(b"vary", vary)]
    rule = Rule("/posts/{slug}", ttl=10, vary=["accept-language"])
    async with client(ISRMiddleware(origin, runtime, [rule], origin=SITE)) as c:
        answers = [await c.get("/posts/hello") for _ in range(2)]
    assert [cached(r) for r in answers] == ["MISS", "MISS"]
    assert answers[1].headers["vary"] == vary.decode()
    assert len(origin.calls) == 2


async def test_invalidating_a_tag_makes_the_next_request_render(runtime: isr.ISR) -> None:
    origin = Origin()
    async with client(ISRMiddleware(origin, runtime, [POSTS], origin=SITE)) as c:
        await c.get("/posts/hello")
        await c.get("/posts/other")
        origin.version = 2
        assert await runtime.invalidate_tag("post:hello") == 1
        hello, other = await c.get("/posts/hello"), await c.get("/posts/other")
    assert (cached(hello), hello.text) == ("MISS", "/posts/hello? lang=- v2")
    assert (cached(other), other.text) == ("HIT", "/posts/other? lang=- v1")


async def test_keys_are_the_url_path_so_a_page_can_be_invalidated_by_key(
    runtime: isr.ISR,
) -> None:
    origin = Origin()
    rules = [Rule("/docs/{rest:path}", ttl=10, tags=["doc:{rest}"]), POSTS]
    async with client(ISRMiddleware(origin, runtime, rules, origin=SITE)) as c:
        for url in ("/posts/hello", "/posts/caf%C3%A9", "/docs/a/b", "/docs/a/b"):
            await c.get(url)
        assert len(origin.calls) == 3
        origin.version = 2
        assert await runtime.invalidate("page:/posts/hello")
        assert await runtime.invalidate("page:/posts/caf%C3%A9")
        assert await runtime.invalidate_tag("doc:a/b") == 1
        answers = [await c.get(url) for url in ("/posts/hello", "/posts/café", "/docs/a/b")]
    assert [(cached(r), r.text[-2:]) for r in answers] == [("MISS", "v2")] * 3


async def test_tags_go_out_for_cdns_and_the_app_can_add_its_own(runtime: isr.ISR) -> None:
    """Every tag goes out encoded one way (`isr._tags.encode_tag`, as the purgers send it):
    a space or a comma in a slug never splits it into several CDN keys, a non-ASCII one is
    UTF-8 percent-encoded, and the app declares its own tags the same way (``%2C`` for a
    comma) or as plain text."""
    origin = Origin()
    origin.headers = [(b"x-cache-tags", "author:ann, lang:én, item:a%2Cb".encode())]
    edge = ISRMiddleware(
        origin, runtime, [POSTS], surrogate_keys=True, cache_tag_header=True, origin=SITE
    )
    async with client(edge) as c:
        first = await c.get("/posts/hello")
        second = await c.get("/posts/hello")
        assert await runtime.invalidate_tag("author:ann") == 1
        third = await c.get("/posts/hello")
        assert await runtime.invalidate_tag("item:a,b") == 1
    assert (cached(first), cached(second), cached(third)) == ("MISS", "HIT", "MISS")
    raw = dict(second.headers.raw)
    tags = ["posts", "post:hello", "author:ann", "lang:%C3%A9n", "item:a%2Cb"]
    assert raw[b"x-cache-tags"] == ",".join(tags).encode()
    assert raw[b"surrogate-key"] == " ".join(tags).encode()
    assert raw[b"cache-tag"] == ",".join(tags).encode()
    async with client(ISRMiddleware(Origin(), runtime, [POSTS], origin=SITE)) as c:
        pages = [await c.get(url) for url in ("/posts/日本", "/posts/a%20b,c", "/posts/x%0D%0Ay")]
        assert await runtime.invalidate_tag("post:a b,c") == 1
    sent = [dict(page.headers.raw)[b"x-cache-tags"] for page in pages]
    assert sent == [
        b"posts,post:%E6%97%A5%E6%9C%AC",
        b"posts,post:a%20b%2Cc",
        b"posts,post:x%0D%0Ay",
    ]


async def test_unmatched_paths_and_other_scopes_pass_through_untouched(runtime: isr.ISR) -> None:
    origin = Origin()
    edge = ISRMiddleware(origin, runtime, [POSTS, Rule("/", ttl=5)], origin=SITE)
    async with client(edge) as c:
        answers = [await c.get(url) for url in ("/about", "/about", "/posts/a/b", "/posts/")]
    assert len(origin.calls) == 4
    for response in answers:
        assert "x-cache" not in response.headers
        assert "cache-control" not in response.headers

    seen: list[tuple[Scope, Receive, Send]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((scope, receive, send))

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        pass

    edge = ISRMiddleware(app, runtime, [Rule("/{path:path}", ttl=5)], origin=SITE)
    for kind in ("lifespan", "websocket"):
        scope: Scope = {"type": kind, "path": "/posts/hello", "headers": []}
        await edge(scope, receive, send)
        assert seen[-1] == (scope, receive, send)


async def test_streamed_and_binary_pages_are_kept_as_json_on_a_shared_store(
    clock: FakeClock, tmp_path: Path
) -> None:
    payload = bytes(range(256)) * 3

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/octet-stream"), (b"x-name", "café".encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(0, len(payload), 100):
            await send(
                {"type": "http.response.body", "body": payload[i : i + 100], "more_body": True}
            )
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async with isr.ISR(f"disk://{tmp_path}", clock=clock) as rt:
        async with client(ISRMiddleware(app, rt, [Rule("/blob", ttl=10)], origin=SITE)) as c:
            first, second = await c.get("/blob"), await c.get("/blob")
        assert rt.stats().store_errors == 0
    assert (cached(first), cached(second)) == ("MISS", "HIT")
    assert first.content == second.content == payload
    assert dict(second.headers.raw)[b"x-name"] == "café".encode()  # bytes kept as they were
    assert second.headers["content-length"] == str(len(payload))


async def test_bad_rules_are_refused_when_the_middleware_is_built(runtime: isr.ISR) -> None:
    app = Origin()
    with pytest.raises(ValueError, match=r"tag 'post:\{id\}' does not fit"):
        ISRMiddleware(app, runtime, [Rule("/posts/{slug}", ttl=1, tags=["post:{id}"])], origin=SITE)
    with pytest.raises(ValueError, match="start with '/'"):
        ISRMiddleware(app, runtime, [Rule("posts", ttl=1)], origin=SITE)
    with pytest.raises(ValueError, match="twice"):
        ISRMiddleware(app, runtime, [Rule("/{a}/{a}", ttl=1)], origin=SITE)
    with pytest.raises(ValueError, match="ttl"):
        ISRMiddleware(app, runtime, [Rule("/", ttl=-1)], origin=SITE)
    with pytest.raises(ValueError, match="non-empty"):
        Rule("/", ttl=1, tags=[""])
    assert Rule("/", ttl=1, tags="home").tags == ("home",)


async def test_pages_prepared_once_go_out_fresh_and_follow_each_new_render(
    runtime: isr.ISR, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tiny memories for prepared pages and matched paths: past them, answers stay right.
    monkeypatch.setattr("isr.asgi._WIRES_KEPT", 2)
    monkeypatch.setattr("isr.asgi._WIRE_BYTES", 60)
    monkeypatch.setattr("isr._http.PATHS_KEPT", 3)
    origin = Origin()
    edge = ISRMiddleware(origin, runtime, [POSTS], origin=SITE)

    async def meddling(scope: Scope, receive: Receive, send: Send) -> None:
        """An outer middleware that edits the messages it is handed, in place."""

        async def edit(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"].append((b"x-outer", b"1"))
                message["status"] = 200
            await send(message)

        await edge(scope, receive, edit)

    slugs = ["a", "b", "c", "d", "a", "long-" + "x" * 80, "a", "b"]
    async with client(meddling) as c:
        first = [await c.get(f"/posts/{slug}") for slug in slugs]
        again = [await c.get(f"/posts/{slug}") for slug in slugs]
        origin.version = 2
        clock.advance(11)
        await c.get("/posts/a")  # STALE: renders v2 in the background
        await runtime.drain()
        fresh = await c.get("/posts/a")
        edge.surrogate_keys = True  # read on every answer, as before
        tagged = await c.get("/posts/a")
    assert len(origin.calls) == 6  # 5 pages, 1 refresh
    for slug, response in zip(slugs * 2, first + again, strict=True):
        assert response.text == f"/posts/{slug}? lang=- v1"
        assert response.headers.get_list("x-outer") == ["1"]
        assert response.headers["content-length"] == str(len(response.content))
        assert response.headers["etag"] == etag_of(response.content)
        assert response.headers["x-cache-tags"] == f"posts,post:{slug}"
    assert all(cached(r) == "HIT" for r in again)
    assert (cached(fresh), fresh.text) == ("HIT", "/posts/a? lang=- v2")
    assert fresh.headers["etag"] == etag_of(fresh.content) != again[0].headers["etag"]
    assert "surrogate-key" not in fresh.headers
    assert tagged.headers["surrogate-key"] == "posts post:a"


async def test_repeated_request_fields_are_read_as_one(runtime: isr.ISR) -> None:
    async with client(ISRMiddleware(Origin(), runtime, [POSTS], origin=SITE)) as c:
        page = await c.get("/posts/hello")
        etag = page.headers["etag"]
        both = await c.get(
            "/posts/hello", headers=[("if-none-match", '"nope"'), ("if-none-match", etag)]
        )
        neither = await c.get(
            "/posts/hello", headers=[("if-none-match", '"nope"'), ("if-none-match", '"no"')]
        )
    assert (both.status_code, cached(both), both.content) == (304, "HIT", b"")
    assert (neither.status_code, neither.content) == (200, page.content)
