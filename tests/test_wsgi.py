"""The WSGI edge (isr.wsgi): Flask and Django under a real gunicorn, with the visit of
tests/test_frameworks.py and the poisoning attempts of issue 14; then the WSGI contract
itself (close() always called, an empty wsgi.input, an incomplete answer) in process."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx
import pytest

import isr
from isr.wsgi import Environ, ISRMiddleware, Rule, StartResponse

from ._wsgi_sites import SECRET
from .conftest import FakeClock
from .gunicorn_server import Gunicorn

FIXED = {"host", "user-agent", "accept", "x-forwarded-host", "x-forwarded-proto"}
AGENT = isr._http.USER_AGENT


@pytest.fixture(scope="module", params=["flask", "django"])
def server(request: pytest.FixtureRequest) -> Iterator[Gunicorn]:
    with Gunicorn(f"tests._wsgi_sites:{request.param}_app()") as running:
        yield running


def client(server: Gunicorn) -> httpx.Client:
    """A client keeping no cookies, as a CDN's fetches do."""
    jar = CookieJar(DefaultCookiePolicy(allowed_domains=[]))
    return httpx.Client(base_url=server.url, timeout=10, cookies=jar)


def cached(response: httpx.Response) -> str:
    return str(response.headers.get("x-cache", ""))


def seen(c: httpx.Client, prefix: str) -> list[dict[str, Any]]:
    views: list[dict[str, Any]] = c.get("/_seen").json()
    return [view for view in views if view["path"].startswith(prefix)]


def test_a_visit_through_the_framework_under_gunicorn(server: Gunicorn) -> None:
    with client(server) as c:
        first, again = c.get("/posts/hi"), c.get("/posts/hi")
        head = c.head("/posts/hi")
        not_modified = c.get("/posts/hi", headers={"if-none-match": first.headers["etag"]})
        assert c.post("/_cms").status_code == 200  # the editor publishes...
        hook = c.post(
            "/hooks/isr",
            json={"tags": ["post:hi", "feed"], "mode": "revalidate"},
            headers={"authorization": f"Bearer {SECRET}"},
        )
        stale = c.get("/posts/hi")
        deadline = time.monotonic() + 10
        fresh = c.get("/posts/hi")
        while "v2" not in fresh.text and time.monotonic() < deadline:
            time.sleep(0.02)  # the background render runs in the runtime's pool
            fresh = c.get("/posts/hi")
        feeds = [c.get("/feed"), c.get("/feed")]
        logins = [c.get("/login"), c.get("/login")]
        unknown = c.get("/nowhere")
        views = seen(c, "/")
    page = "post hi v1 url=http://www.example.test/posts/hi lang=- ua=" + AGENT
    assert [(cached(r), r.text) for r in (first, again, stale)] == [
        ("MISS", page),
        ("HIT", page),
        ("STALE", page),
    ]
    assert (cached(fresh), fresh.text) == ("HIT", page.replace(" v1 ", " v2 "))
    assert hook.status_code == 200, hook.text
    assert first.headers["content-type"].startswith("text/plain")
    assert first.headers["x-cache-tags"] == "post:hi"
    assert first.headers["etag"] == again.headers["etag"] != fresh.headers["etag"]
    assert (cached(head), head.content, head.headers["etag"]) == ("HIT", b"", first.headers["etag"])
    assert head.headers["content-length"] == str(len(page))
    assert (not_modified.status_code, not_modified.content) == (304, b"")
    assert not_modified.headers["etag"] == first.headers["etag"]
    assert [(cached(r), r.text) for r in feeds] == [
        ("MISS", "item 0 v2\nitem 1 v2\nitem 2 v2\n"),
        ("HIT", "item 0 v2\nitem 1 v2\nitem 2 v2\n"),
    ]
    assert [cached(r) for r in logins] == ["MISS", "MISS"]
    assert all(r.headers["set-cookie"].startswith("sid=abc") for r in logins)
    assert (unknown.status_code, unknown.headers.get("x-cache")) == (404, None)
    assert [view["path"] for view in views] == [
        "/posts/hi",
        "/posts/hi",
        "/feed",
        "/login",
        "/login",
    ]


#: Request parts that are not in the key, each on its own page.
ATTACKS: list[tuple[str, dict[str, str]]] = [
    ("?utm=%3Cscript%3Ealert(1)%3C/script%3E", {}),
    ("", {"host": "evil.example"}),
    ("", {"x-forwarded-host": "evil.example", "x-forwarded-proto": "https"}),
    ("", {"x-original-url": "/admin", "x-rewrite-url": "/admin"}),
    ("", {"accept-language": "xx-evil"}),
    ("", {"user-agent": "evil-agent", "accept": "application/evil"}),
    ("", {"forwarded": "host=evil.example;proto=https"}),
]


def test_poisoning_attempts_never_reach_a_shared_render(server: Gunicorn) -> None:
    with client(server) as c:
        for n, (query, headers) in enumerate(ATTACKS):
            c.get(f"/posts/p{n}{query}", headers=headers)
        plain = [c.get(f"/posts/p{n}") for n in range(len(ATTACKS))]
        private = c.get("/private/x", headers={"cookie": "sid=secret-session"})
        shared = c.get("/private/x")
        authorized = c.get("/posts/p0", headers={"authorization": "Bearer someone"})
        views = seen(c, "/posts/p") + seen(c, "/private/")
    for n, response in enumerate(plain):
        assert cached(response) == "HIT"
        expected = f"post p{n} v1 url=http://www.example.test/posts/p{n} lang=- ua={AGENT}"
        assert response.text.replace(" v2 ", " v1 ") == expected
    assert (cached(private), private.text) == ("MISS", "hello nobody")
    assert (cached(shared), shared.text) == ("HIT", "hello nobody")
    assert cached(authorized) == "BYPASS"
    renders, bypassed = views[: len(ATTACKS)] + views[-1:], views[len(ATTACKS) : -1]
    for view in renders:
        assert {name.lower() for name in view["headers"]} == FIXED, view
        assert view["headers"].get("User-Agent") == AGENT
        assert view["query"] == ""
        assert view["url"].startswith("http://www.example.test/")
        assert view["client"] in ("", None)
    assert [view["headers"].get("Authorization") for view in bypassed] == ["Bearer someone"]


# ---------------------------------------------------------------- the WSGI contract


class Tracked:
    """A WSGI app whose iterable records ``close()``; ``broken`` makes it raise mid-body."""

    def __init__(self) -> None:
        self.closed = 0
        self.calls: list[Environ] = []
        self.inputs: list[bytes] = []
        self.broken = False
        self.status = "200 OK"

    def __call__(self, environ: Environ, start_response: StartResponse) -> Any:
        self.calls.append(environ)
        self.inputs.append(environ["wsgi.input"].read())
        start_response(self.status, [("Content-Type", "text/plain")])
        app = self

        class Body:
            def __iter__(self) -> Iterator[bytes]:
                yield b"part one, "
                if app.broken:
                    raise RuntimeError("the database went away")
                yield b"part two"

            def close(self) -> None:
                app.closed += 1

        return Body()


def call(
    app: Any, path: str, method: str = "GET", **headers: str
) -> tuple[str, dict[str, str], bytes]:
    """One request through ``app`` as a server makes it: the iterable read and closed."""
    environ: Environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "test",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b"posted body"),
        "wsgi.errors": io.StringIO(),
        "HTTP_HOST": "test",
        **{"HTTP_" + k.upper(): v for k, v in headers.items()},
    }
    got: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        got["status"], got["headers"] = status, {k.lower(): v for k, v in headers}
        return lambda data: None

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return got["status"], got["headers"], body


def test_the_apps_iterable_is_always_closed(clock: FakeClock) -> None:
    app = Tracked()
    rt = isr.ISR(clock=clock)
    edge = ISRMiddleware(app, rt, [Rule("/p/{x}", ttl=10)], origin="http://test")
    try:
        miss = call(edge, "/p/a")
        assert app.closed == 1
        head = call(edge, "/p/b", "HEAD")
        assert app.closed == 2
        etag = miss[1]["etag"]
        assert call(edge, "/p/a", IF_NONE_MATCH=etag)[0].startswith("304")
        bypass = call(edge, "/p/a", AUTHORIZATION="Basic eA==")
        assert app.closed == 3  # by the server, as for any app
        app.broken = True
        with pytest.raises(RuntimeError, match="went away"):
            call(edge, "/p/c")
        assert app.closed == 4
        app.broken = False
        posted = call(edge, "/p/a", "POST")
        assert app.closed == 5
    finally:
        rt.close()
    assert (miss[0], miss[1]["x-cache"], miss[2]) == ("200 OK", "MISS", b"part one, part two")
    assert (head[1]["x-cache"], head[2], head[1]["content-length"]) == ("MISS", b"", "18")
    assert bypass[1]["x-cache"] == "BYPASS"
    assert posted[1]["x-cache"] == "BYPASS"
    assert [e["REQUEST_METHOD"] for e in app.calls] == ["GET", "GET", "GET", "GET", "POST"]
    assert app.inputs == [b"", b"", b"posted body", b"", b"posted body"]  # renders: empty


def test_a_render_gets_the_canonical_environ(clock: FakeClock) -> None:
    app = Tracked()
    rt = isr.ISR(clock=clock)
    edge = ISRMiddleware(app, rt, [Rule("/p/{x}", ttl=10, query=["page"])], origin="https://s.test")
    try:
        call(edge, "/p/caf\xc3\xa9", X_EVIL="x", X_FORWARDED_HOST="evil")
    finally:
        rt.close()
    environ = app.calls[0]
    assert {k for k in environ if k.startswith("HTTP_")} == {
        "HTTP_HOST",
        "HTTP_USER_AGENT",
        "HTTP_ACCEPT",
        "HTTP_X_FORWARDED_HOST",
        "HTTP_X_FORWARDED_PROTO",
    }
    assert (environ["PATH_INFO"], environ["RAW_URI"]) == ("/p/caf\xc3\xa9", "/p/caf%C3%A9")
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("s.test", "443")
    assert (environ["wsgi.url_scheme"], environ["HTTP_X_FORWARDED_PROTO"]) == ("https", "https")
    assert environ["REMOTE_ADDR"] == ""
    assert "wsgi.file_wrapper" not in environ


def test_an_incomplete_answer_is_never_kept_and_aborts_under_gunicorn(server: Gunicorn) -> None:
    """``/broken`` streams part of its page, then its generator raises: the client gets the
    part and an aborted connection, as gunicorn gives without the cache, and nothing is kept."""
    with client(server) as c:
        for _ in range(2):
            with pytest.raises(httpx.RemoteProtocolError):
                c.get("/broken")
        renders = seen(c, "/broken")
    assert len(renders) == 2


def test_negative_caching_and_gone_on_wsgi(clock: FakeClock) -> None:
    app = Tracked()
    app.status = "404 Not Found"
    rt = isr.ISR(clock=clock)
    rules = [Rule("/keep/{x}", ttl=10, negative_ttl=5), Rule("/p/{x}", ttl=10)]
    edge = ISRMiddleware(app, rt, rules, origin="http://test")
    try:
        kept = [call(edge, "/keep/a")[1]["x-cache"] for _ in range(3)]
        gone = [call(edge, "/p/a")[1]["x-cache"] for _ in range(2)]
        gone_count = rt.stats().gone
    finally:
        rt.close()
    assert (kept, gone, gone_count) == (["MISS", "HIT", "HIT"], ["MISS", "MISS"], 3)
