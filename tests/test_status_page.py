"""The status page, ASGI and WSGI alike: who may see it, what it shows, and what an attacker
cannot make it do (see the browser's own view in tests/test_status_browser.py)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import isr
from isr._statuspage import COOKIE, StatusPage
from isr.asgi import ISRMiddleware, Rule, StatusApp
from isr.wsgi import StatusApp as WSGIStatusApp

pytestmark = pytest.mark.anyio

SECRET = "a-long-status-secret-0123456789"
EVIL = "<script>alert('x')</script>"


class Client:
    """One way of calling the page: ASGI (through httpx's ASGI transport) or WSGI (httpx's
    WSGI transport), with the same calls."""

    def __init__(self, kind: str, rt: isr.ISR, **options: Any) -> None:
        self.kind = kind
        base = "https://status.example" if options.pop("https", True) else "http://status.example"
        if kind == "asgi":
            self.client: Any = httpx.AsyncClient(
                transport=httpx.ASGITransport(StatusApp(rt, secret=SECRET, **options)),
                base_url=base,
            )
        else:
            self.client = httpx.Client(
                transport=httpx.WSGITransport(WSGIStatusApp(rt, secret=SECRET, **options)),
                base_url=base,
            )

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        if self.kind == "asgi":
            response: httpx.Response = await self.client.request(method, url, **kwargs)
        else:
            response = self.client.request(method, url, **kwargs)
        return response

    async def login(self, path: str = "/ops/status") -> httpx.Response:
        return await self.request("POST", path, data={"action": "login", "secret": SECRET})

    async def aclose(self) -> None:
        if self.kind == "asgi":
            await self.client.aclose()
        else:
            self.client.close()


@pytest.fixture
async def rt() -> AsyncIterator[isr.ISR]:
    async with isr.ISR("memory://") as runtime:
        yield runtime


@pytest.fixture(params=["asgi", "wsgi"])
async def client(request: pytest.FixtureRequest, rt: isr.ISR) -> AsyncIterator[Client]:
    made = Client(request.param, rt)
    yield made
    await made.aclose()


def _strict(response: httpx.Response) -> None:
    """Every answer: no-store, a CSP allowing no script and no other origin, no framing."""
    assert response.headers["cache-control"] == "no-store"
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src" not in csp
    assert "frame-ancestors 'none'" in csp
    assert "form-action 'self'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert SECRET not in response.text
    assert SECRET not in str(response.headers)


async def test_without_the_secret_only_a_login_form(client: Client, rt: isr.ISR) -> None:
    @rt.with_revalidate("post:{slug}", ttl=10, tags=["private-tag"])
    async def get_post(slug: str) -> str:
        return slug

    await get_post("hidden")
    await rt.invalidate("post:hidden")
    for response in (
        await client.request("GET", "/ops/status"),
        await client.request("GET", "/ops/status?q=post:hidden"),
        await client.request("GET", "/ops/status", headers={"authorization": "Bearer nope"}),
        await client.request(
            "GET", "/ops/status", headers={"cookie": f"{COOKIE}=v1.9999999999.00"}
        ),
    ):
        assert response.status_code == 401
        _strict(response)
        assert 'method="post"' in response.text
        assert 'type="password" name="secret"' in response.text
        assert "post:hidden" not in response.text
        assert "get_post" not in response.text
    wrong = await client.request("POST", "/ops/status", data={"action": "login", "secret": "x"})
    assert wrong.status_code == 401
    assert "Wrong secret." in wrong.text
    assert "set-cookie" not in wrong.headers


async def test_signing_in_sets_a_strict_cookie_that_opens_the_page(client: Client) -> None:
    response = await client.login()
    assert response.status_code == 303
    _strict(response)
    assert response.headers["location"] == "./status"
    cookie = response.headers["set-cookie"]
    for flag in ("HttpOnly", "SameSite=Strict", "Secure", "Path=/ops/status", "Max-Age=28800"):
        assert flag in cookie
    page = await client.request("GET", "/ops/status")
    assert page.status_code == 200
    _strict(page)
    assert "<h2>Explain a key or a page</h2>" in page.text
    bye = await client.request("POST", "/ops/status", data={"action": "logout"})
    assert bye.status_code == 303
    assert "Max-Age=0" in bye.headers["set-cookie"]
    assert (await client.request("GET", "/ops/status")).status_code == 401


async def test_plain_http_cookies_are_not_secure_unless_told(rt: isr.ISR) -> None:
    for options, secure in (
        ({"https": False}, False),
        ({"https": False, "secure_cookie": True}, True),
    ):
        client = Client("asgi", rt, **options)
        cookie = (await client.login()).headers["set-cookie"]
        assert ("; Secure" in cookie) is secure
        await client.aclose()


async def test_a_script_may_send_the_secret_as_a_bearer_token(client: Client) -> None:
    page = await client.request("GET", "/x", headers={"authorization": f"Bearer {SECRET}"})
    assert page.status_code == 200
    _strict(page)


def test_a_path_cannot_add_attributes_to_the_session_cookie() -> None:
    from isr._statuspage import Request

    page = StatusPage(isr.ISR(), secret=SECRET)
    body = f"action=login&secret={SECRET}".encode()
    for path in ("/s;Domain=evil.example", "/s; SameSite=None", "/s,x=1", "/s\u00e9 x"):
        answer = page.decide(Request("POST", path, "", {}, body, True), now=0.0)
        cookie = dict(answer.headers)["set-cookie"]  # type: ignore[union-attr]
        attributes = [part.strip().split("=")[0] for part in cookie.split(";")]
        assert attributes == [COOKIE, "Path", "Max-Age", "HttpOnly", "SameSite", "Secure"]
        assert cookie.isascii()


def test_a_forged_tampered_or_expired_cookie_is_refused() -> None:
    page = StatusPage(isr.ISR(), secret=SECRET, session=60)
    value = page.cookie_value(now=1000.0)
    assert page.authorized({"cookie": f"{COOKIE}={value}"}, now=1059.0)
    assert not page.authorized({"cookie": f"{COOKIE}={value}"}, now=1060.0)  # expired
    version, stamp, signature = value.split(".")
    longer = f"{version}.{int(stamp) + 10**6}.{signature}"  # pushed its expiry: unsigned
    assert not page.authorized({"cookie": f"{COOKIE}={longer}"}, now=1000.0)
    other = StatusPage(isr.ISR(), secret=SECRET + "-rotated", session=60)
    assert not other.authorized({"cookie": f"{COOKIE}={value}"}, now=1000.0)  # new secret
    for junk in ("", "v1", "v1..", "v2.1.x", f"v1.{'9' * 40}.x", "v1.-5.x", "ø"):
        assert not page.authorized({"cookie": f"{COOKIE}={junk}"}, now=0.0)


@pytest.mark.parametrize("secret", ["", "tiny-s3cret", " padded-secret-0123456789 ", "line\n" * 5])
def test_a_weak_or_malformed_secret_is_refused_without_showing_it(secret: str) -> None:
    with pytest.raises(isr.ConfigError) as caught:
        StatusApp(isr.ISR(), secret=secret)
    assert secret.strip() == "" or secret.strip() not in str(caught.value)


async def test_the_page_shows_the_rates_and_explains_keys_and_paths(
    client: Client, rt: isr.ISR
) -> None:
    @rt.with_revalidate("post:{slug}", ttl=10, tags=["posts", EVIL])
    async def get_post(slug: str) -> str:
        return slug

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("no render in this test")

    pages = ISRMiddleware(app, rt, [Rule("/posts/{slug}", ttl=60)], origin="https://a.example")
    await get_post("hello")
    await get_post("hello")
    await client.login()
    page = await client.request("GET", "/ops/status")
    rates = page.text[page.text.index('id="rates"') :]
    counts = r'<td class="n">1</td><td class="n">0</td><td class="n">1</td>'  # HIT STALE MISS
    assert re.search(r"get_post</td><td>function</td>" + counts, rates)
    assert "/posts/{slug}</td><td>page rule</td>" in rates

    found = await client.request("GET", "/ops/status", params={"q": "post:hello"})
    assert 'id="next-read">HIT<' in found.text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in found.text
    assert EVIL not in found.text
    assert "<script" not in found.text

    by_path = await client.request("GET", "/ops/status", params={"q": "/posts/hello"})
    assert "Page key <code>page:/posts/hello</code>" in by_path.text
    assert 'id="next-read"' in by_path.text
    nowhere = await client.request("GET", "/ops/status", params={"q": "/nowhere"})
    assert "No page rule caches /nowhere" in nowhere.text
    echoed = await client.request("GET", "/ops/status", params={"q": EVIL})
    assert EVIL not in echoed.text
    assert 'value="&lt;script&gt;' in echoed.text
    bad = await client.request("GET", "/ops/status?q=%ED%A0%80%00")  # no UTF-8, a NUL
    assert bad.status_code == 200
    del pages


async def test_oversized_and_odd_requests_get_clear_refusals(client: Client) -> None:
    await client.login("/s")
    assert (await client.request("GET", "/s", params={"q": "k" * 5000})).status_code == 414
    many = "&".join(f"f{i}=1" for i in range(20))
    assert (await client.request("GET", f"/s?{many}")).status_code == 400
    big = await client.request("POST", "/s", content=b"action=login&secret=" + b"x" * 9000)
    assert big.status_code == 413
    odd = await client.request("PUT", "/s")
    assert odd.status_code == 405
    assert odd.headers["allow"] == "GET, HEAD, POST"
    assert (await client.request("POST", "/s", data={"action": "drop"})).status_code == 400
    assert (await client.request("POST", "/s", content=b"\xff\xfe")).status_code == 400
    head = await client.request("HEAD", "/s")
    assert head.status_code == 200
    assert head.content == b""


def test_a_pages_html_is_one_document_without_any_script_or_remote_asset() -> None:
    async def never(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError

    rt = isr.ISR()
    with httpx.Client(
        transport=httpx.WSGITransport(WSGIStatusApp(rt, secret=SECRET)), base_url="http://h"
    ) as client:
        page = client.get("/", headers={"authorization": f"Bearer {SECRET}"}).text
    assert page.startswith("<!doctype html>")
    assert not re.search(r"<script|<link|<img|<iframe|src=|href=\"http", page)
    assert page.count("<style>") == 1


async def test_instances_and_invalidations_with_their_confirmations(
    client: Client, rt: isr.ISR
) -> None:
    await client.login()
    with isr.invalidation_source("webhook", event="entry.publish", model=EVIL, entry="7"):
        await rt.invalidate_tag(EVIL, mode="purge")
    page = (await client.request("GET", "/ops/status")).text
    instances = page[page.index('id="instances"') : page.index('id="log"')]
    assert rt.instance_id in instances
    log = page[page.index('id="log"') : page.index('id="rates"')]
    assert "<td>tag</td>" in log
    assert "<td>purge</td>" in log
    assert "not yet known" in log  # no confirmation asked yet
    assert "webhook (event=entry.publish, model=&lt;script&gt;" in log
    assert "<script" not in page
    await rt.confirm(timeout=0.5)
    page = (await client.request("GET", "/ops/status")).text
    log = page[page.index('id="log"') : page.index('id="rates"')]
    assert re.search(r'<td class="ok">1 confirmed in [0-9.]+ ms</td>', log)


FUZZ_PAGE = StatusPage(isr.ISR(), secret=SECRET)
FUZZ_COOKIE = f"{COOKIE}={FUZZ_PAGE.cookie_value(10**9)}"


@settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "get", ""]),
    raw_path=st.text(max_size=40),
    query=st.text(max_size=120),
    headers=st.dictionaries(
        st.sampled_from(["authorization", "cookie", "content-type", "x-any", "host"]),
        st.one_of(st.text(max_size=80), st.just(FUZZ_COOKIE), st.just(f"Bearer {SECRET}")),
        max_size=4,
    ),
    body=st.one_of(
        st.binary(max_size=300),
        st.builds(lambda q: q.encode(), st.text(max_size=200)),
        st.just(f"action=login&secret={SECRET}".encode()),
    ),
    https=st.booleans(),
)
def test_fuzz_no_request_breaks_the_page_or_shows_the_secret(
    method: str, raw_path: str, query: str, headers: dict[str, str], body: bytes, https: bool
) -> None:
    from isr._statuspage import Render, Request
    from isr._sync.status import gather

    request = Request(method, raw_path, query, headers, body, https)
    step = FUZZ_PAGE.decide(request, now=1000.0)
    if isinstance(step, Render):
        step = FUZZ_PAGE.render(gather(FUZZ_PAGE, step.query))
    assert step.status in (200, 303, 400, 401, 405, 413, 414)
    assert SECRET.encode() not in step.body
    assert SECRET not in str(step.headers)
    assert ("cache-control", "no-store") in step.headers
    assert b"<script" not in step.body.lower()
