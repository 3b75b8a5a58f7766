"""CDN purgers against a real HTTP server on loopback: request shapes, batching, retries,
backoff, Retry-After, rate limiting, and failures reported (never raised)."""

from __future__ import annotations

import base64
import itertools
import json
import logging
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler

import httpx
import pytest

import isr
from isr._tags import encode_tag
from isr.cdn import CloudflarePurger, FastlyPurger, Purger, PurgeResult, VarnishPurger
from isr.webhook import WebhookApp

from .recording_server import LoopbackServer, RecordingServer, Reply
from .redis_server import free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with RecordingServer() as srv:
        yield srv


def tags(n: int) -> list[str]:
    return [f"post:{i}" for i in range(n)]


def gaps(server: RecordingServer) -> list[float]:
    return [b.at - a.at for a, b in itertools.pairwise(server.requests)]


# ------------------------------------------------------------------ request shapes


async def test_fastly_purges_by_surrogate_key(server: RecordingServer) -> None:
    async with FastlyPurger("svc123", "tok", base_url=server.url) as purger:
        result = await purger.purge(["posts", "post:hello"])
        soft = await purger.purge(["posts"], soft=True)

    assert result == PurgeResult("fastly", False, ("posts", "post:hello"))
    assert result.ok
    assert soft.soft
    hard_req, soft_req = server.requests
    assert (hard_req.method, hard_req.path) == ("POST", "/service/svc123/purge")
    assert hard_req.headers["surrogate-key"] == "posts post:hello"
    assert hard_req.headers["fastly-key"] == "tok"
    assert "fastly-soft-purge" not in hard_req.headers
    assert soft_req.headers["fastly-soft-purge"] == "1"
    assert soft_req.headers["surrogate-key"] == "posts"
    assert purger.stats() == {"purged": 2, "failed": 0, "retries": 0}


async def test_every_purger_sends_the_headers_it_was_given_and_its_own_win(
    server: RecordingServer,
) -> None:
    """Extra headers (a gateway's token in front of the CDN's API, say) go with every purge
    request of each purger; one named like a purge's own header (its credentials, its
    tags), in any case, is left out rather than sent twice or in their place."""
    given = {"X-Gateway-Token": "g", "fastly-key": "not-mine", "AUTHORIZATION": "no", "XKEY": "x"}
    purgers = [
        FastlyPurger("svc", "tok", base_url=server.url, headers=given),
        CloudflarePurger("zone", "cf-token", base_url=server.url, rate=None, headers=given),
        VarnishPurger(server.url + "/", headers=given),
    ]
    for purger in purgers:
        async with purger:
            assert (await purger.purge(["posts"])).ok
    fastly, cloudflare, varnish = server.requests
    for request in (fastly, cloudflare, varnish):
        assert request.headers["x-gateway-token"] == "g"
    assert fastly.values("fastly-key") == ["tok"]
    assert cloudflare.values("authorization") == ["Bearer cf-token"]
    assert varnish.values("xkey") == ["posts"]
    assert fastly.values("authorization") == ["no"]  # not one of Fastly's own


async def test_fastly_sends_at_most_256_keys_a_request(server: RecordingServer) -> None:
    async with FastlyPurger("svc", "tok", base_url=server.url) as purger:
        result = await purger.purge(tags(300))
    assert result.ok
    assert len(result.purged) == 300
    sent = [r.headers["surrogate-key"].split(" ") for r in server.requests]
    assert [len(batch) for batch in sent] == [256, 44]
    assert [tag for batch in sent for tag in batch] == tags(300)


async def test_cloudflare_purges_tags_in_batches_of_100(server: RecordingServer) -> None:
    async with CloudflarePurger("zone9", "cf-token", base_url=server.url, rate=None) as purger:
        result = await purger.purge(tags(250), soft=True)

    assert result.ok
    assert not result.soft  # Cloudflare has no soft purge: done hard, and said so
    assert [r.path for r in server.requests] == ["/zones/zone9/purge_cache"] * 3
    assert all(r.method == "POST" for r in server.requests)
    assert all(r.headers["authorization"] == "Bearer cf-token" for r in server.requests)
    assert all(r.headers["content-type"] == "application/json" for r in server.requests)
    bodies = [r.json() for r in server.requests]
    assert [sorted(b) for b in bodies] == [["tags"]] * 3
    assert [len(b["tags"]) for b in bodies] == [100, 100, 50]
    assert [tag for b in bodies for tag in b["tags"]] == tags(250)


async def test_cloudflare_batch_size_is_configurable_up_to_100(server: RecordingServer) -> None:
    async with CloudflarePurger("z", "t", base_url=server.url, batch=30, rate=None) as purger:
        await purger.purge(tags(70))
    assert [len(r.json()["tags"]) for r in server.requests] == [30, 30, 10]
    with pytest.raises(ValueError, match="100"):
        CloudflarePurger("z", "t", batch=101)


async def test_cloudflare_rate_limit_spaces_requests(server: RecordingServer) -> None:
    # 10 requests a second, no burst: one request every 100 ms.
    async with CloudflarePurger(
        "z", "t", base_url=server.url, batch=10, rate=10.0, burst=1
    ) as purger:
        started = time.monotonic()
        result = await purger.purge(tags(40))
        elapsed = time.monotonic() - started
    assert result.ok
    assert len(server.requests) == 4
    # Request i cannot leave before i tokens have refilled after the first one was taken.
    # (Lower bounds only: a loaded machine can make requests later, never earlier.)
    assert [r.at - started >= i * 0.1 - 0.005 for i, r in enumerate(server.requests)] == [True] * 4
    assert elapsed >= 0.295


async def test_rate_limit_holds_across_calls(server: RecordingServer) -> None:
    async with CloudflarePurger("z", "t", base_url=server.url, rate=10.0, burst=2) as purger:
        started = time.monotonic()
        for _ in range(5):
            await purger.purge(["a"])
        elapsed = time.monotonic() - started
    # Two at once (the burst), then one every 100 ms: request i (i >= 2) cannot leave before
    # (i - 1) refills, and 5 requests take at least 0.3 s. Lower bounds only: a loaded
    # machine makes requests later, never earlier.
    assert len(server.requests) == 5
    waits = [r.at - started >= (i - 1) * 0.1 - 0.005 for i, r in enumerate(server.requests)]
    assert waits[2:] == [True] * 3
    assert elapsed >= 0.29


async def test_cloudflare_success_false_is_a_failure(server: RecordingServer) -> None:
    server.script(Reply(200, body=b'{"success": false, "errors": [{"message": "bad tag"}]}'))
    async with CloudflarePurger(
        "z", "t", base_url=server.url, rate=None, backoff=0.01, max_backoff=2.0
    ) as purger:
        result = await purger.purge(["a", "b"])
    assert not result.ok
    assert result.failed == ("a", "b")
    assert result.error is not None
    assert "bad tag" in result.error
    assert len(server.requests) == 1  # a refusal is not retried


async def test_varnish_sends_xkey_headers(server: RecordingServer) -> None:
    async with VarnishPurger(server.url + "/", headers={"x-purge-token": "p"}) as purger:
        hard = await purger.purge(["article", "article:café"])
        soft = await purger.purge(["article"], soft=True)
    assert hard.ok
    assert soft.ok
    assert soft.soft
    hard_req, soft_req = server.requests
    assert (hard_req.method, hard_req.path) == ("PURGE", "/")
    assert hard_req.headers["xkey"] == "article article:caf%C3%A9"  # encode_tag's form
    assert hard_req.headers["x-purge-token"] == "p"
    assert "xkey-softpurge" not in hard_req.headers
    assert soft_req.headers["xkey-softpurge"] == "article"
    assert "xkey" not in soft_req.headers


async def test_varnish_method_is_configurable(server: RecordingServer) -> None:
    async with VarnishPurger(server.url, method="POST") as purger:
        assert (await purger.purge(["a"])).ok
    assert [r.method for r in server.requests] == ["POST"]


async def test_501_is_not_retried(server: RecordingServer) -> None:
    async with VarnishPurger(server.url, method="BAN", backoff=0.01, max_backoff=2.0) as purger:
        result = await purger.purge(["a"])  # http.server knows no BAN: 501
    assert result.error is not None
    assert result.error.startswith("HTTP 501")
    assert purger.stats() == {"purged": 0, "failed": 1, "retries": 0}


async def test_varnish_batches_long_headers(server: RecordingServer) -> None:
    many = [f"tag:{'x' * 90}:{i}" for i in range(100)]  # ~10 KB of tags
    async with VarnishPurger(server.url) as purger:
        result = await purger.purge(many)
    assert result.ok
    sent = [r.headers["xkey"] for r in server.requests]
    assert len(sent) == 3
    assert all(len(header) <= 4000 for header in sent)
    assert " ".join(sent).split(" ") == many


async def test_duplicate_tags_are_sent_once(server: RecordingServer) -> None:
    async with FastlyPurger("s", "t", base_url=server.url) as purger:
        result = await purger.purge(["a", "b", "a"])
    assert result.purged == ("a", "b")
    assert server.requests[0].headers["surrogate-key"] == "a b"


async def test_tags_go_out_encoded_as_one_key_each(server: RecordingServer) -> None:
    """A space, a comma or a control character no longer splits or refuses a tag: it is
    sent as the one key the page's headers carry (`encode_tag`), and reported as given."""
    given = ["good", "two words", "a,b", "tab\there", "caf\u00e9 50%"]
    async with FastlyPurger("s", "t", base_url=server.url) as fastly:
        result = await fastly.purge(given)
    async with CloudflarePurger("z", "t", base_url=server.url, rate=None) as cloudflare:
        assert (await cloudflare.purge(given)).ok
    assert result.ok
    assert result.purged == tuple(given)
    sent = ["good", "two%20words", "a%2Cb", "tab%09here", "caf%C3%A9%2050%25"]
    assert sent == [encode_tag(tag) for tag in given]
    fastly_request, cloudflare_request = server.requests
    assert fastly_request.headers["surrogate-key"] == " ".join(sent)
    assert cloudflare_request.json() == {"tags": sent}


async def test_only_tags_that_cannot_be_encoded_or_are_too_long_fail(
    server: RecordingServer,
) -> None:
    long = "t" * 1025
    async with FastlyPurger("s", "t", base_url=server.url) as purger:
        result = await purger.purge(["good", "\ud800", long, "\u00e9" * 200])  # 1200 B
    assert result.purged == ("good",)
    assert set(result.failed) == {"\ud800", long, "\u00e9" * 200}
    assert result.error is not None
    assert "not valid Unicode text" in result.error
    assert "longer than 1024 bytes" in result.error
    assert [r.headers["surrogate-key"] for r in server.requests] == ["good"]
    async with VarnishPurger(server.url) as varnish:  # Varnish takes longer keys
        assert (await varnish.purge([long])).ok


async def test_nothing_to_purge_sends_nothing(server: RecordingServer) -> None:
    async with FastlyPurger("s", "t", base_url=server.url) as purger:
        result = await purger.purge([])
    assert result.ok
    assert result.purged == ()
    assert server.requests == []


# ------------------------------------------------------------------ retries and failures


async def test_5xx_is_retried_with_exponential_backoff(server: RecordingServer) -> None:
    server.script(Reply(503), Reply(502))
    async with FastlyPurger(
        "s", "t", base_url=server.url, retries=3, backoff=0.1, max_backoff=1.0
    ) as purger:
        result = await purger.purge(["a"])
    assert result.ok
    assert result.requests == 3
    assert len(server.requests) == 3
    first, second = gaps(server)
    assert first >= 0.09  # 0.1 s
    assert second >= 0.19  # then 0.2 s
    assert purger.stats() == {"purged": 1, "failed": 0, "retries": 2}


async def test_429_waits_for_retry_after(server: RecordingServer) -> None:
    server.script(Reply(429, {"Retry-After": "1"}))
    async with CloudflarePurger(
        "z", "t", base_url=server.url, rate=None, backoff=0.01, max_backoff=2.0
    ) as purger:
        result = await purger.purge(["a"])
    assert result.ok
    assert len(server.requests) == 2
    assert gaps(server)[0] >= 0.95


async def test_a_retry_after_date_out_of_any_calendar_is_ignored_not_raised(
    server: RecordingServer,
) -> None:
    """A CDN (or a proxy) answering nonsense never makes purge raise: it backs off as usual."""
    server.script(Reply(429, {"Retry-After": "Mon, 01 Jan 2024 00:00:00 +99999999999999999999"}))
    async with CloudflarePurger(
        "z", "t", base_url=server.url, rate=None, backoff=0.01, max_backoff=1.0
    ) as purger:
        result = await purger.purge(["a"])
    assert result.ok
    assert len(server.requests) == 2


async def test_retry_after_longer_than_max_backoff_fails_at_once(
    server: RecordingServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.script(Reply(429, {"Retry-After": "3600"}))
    async with CloudflarePurger(
        "z", "t", base_url=server.url, rate=None, backoff=0.01, max_backoff=5.0
    ) as purger:
        with caplog.at_level(logging.ERROR, logger="isr"):
            result = await purger.purge(["a"])
    assert result.failed == ("a",)
    assert result.error is not None
    assert "HTTP 429" in result.error
    assert "Retry-After 3600 s" in result.error
    assert len(server.requests) == 1
    assert "cloudflare" in caplog.text
    assert "HTTP 429" in caplog.text


async def test_gives_up_after_the_retries_and_reports(
    server: RecordingServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.default = Reply(503, body=b"backend down")
    async with FastlyPurger(
        "s", "t", base_url=server.url, retries=2, backoff=0.01, max_backoff=2.0
    ) as purger:
        with caplog.at_level(logging.WARNING, logger="isr"):
            result = await purger.purge(tags(300))  # two batches
    assert not result.ok
    assert result.purged == ()
    assert result.failed == tuple(tags(300))
    assert result.error == "HTTP 503 Service Unavailable: backend down (after 3 attempts)"
    # The first batch was tried 3 times; the second was not sent to a CDN that is down.
    assert len(server.requests) == 3
    assert purger.stats() == {"purged": 0, "failed": 1, "retries": 2}
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].name == "isr"
    assert "300 of 300 tag(s) failed" in errors[0].getMessage()
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 2


async def test_4xx_is_not_retried(server: RecordingServer) -> None:
    server.script(Reply(403, body=b'{"msg": "bad token"}'))
    async with FastlyPurger("s", "t", base_url=server.url, backoff=0.01, max_backoff=2.0) as purger:
        result = await purger.purge(tags(300))
    assert result.error == 'HTTP 403 Forbidden: {"msg": "bad token"}'
    # A refusal of one batch does not stop the next one.
    assert len(server.requests) == 2
    assert result.failed == tuple(tags(256))
    assert result.purged == tuple(tags(300)[256:])
    assert purger.stats() == {"purged": 1, "failed": 1, "retries": 0}


async def test_connection_refused_is_retried_then_reported() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    async with VarnishPurger(url, retries=2, backoff=0.01, max_backoff=2.0) as purger:
        result = await purger.purge(["a"])
    assert result.failed == ("a",)
    assert result.error is not None
    assert result.error.startswith("ConnectError")
    assert result.requests == 3
    assert purger.stats()["retries"] == 2


async def test_a_slow_answer_times_out(server: RecordingServer) -> None:
    server.script(Reply(delay=1.0))
    async with FastlyPurger(
        "s", "t", base_url=server.url, timeout=0.2, retries=1, backoff=0.01, max_backoff=2.0
    ) as p:
        started = time.monotonic()
        result = await p.purge(["a"])
        elapsed = time.monotonic() - started
    assert result.ok  # the retry got through
    assert len(server.requests) == 2
    assert 0.2 <= elapsed < 0.9


async def test_timeout_failure_says_so(server: RecordingServer) -> None:
    server.script(Reply(delay=1.0))
    async with FastlyPurger("s", "t", base_url=server.url, timeout=0.2, retries=0) as p:
        result = await p.purge(["a"])
    assert result.error == "ReadTimeout: no answer within 0.2 s (after 1 attempt)"


# ------------------------------------------------------------------ the object


async def test_a_client_passed_in_is_used_and_left_open(server: RecordingServer) -> None:
    async with httpx.AsyncClient(headers={"user-agent": "mine"}) as client:
        purger = FastlyPurger("s", "t", base_url=server.url, client=client)
        assert (await purger.purge(["a"])).ok
        await purger.aclose()
        assert not client.is_closed
    assert server.requests[0].headers["user-agent"] == "mine"


async def test_purgers_satisfy_the_protocol() -> None:
    for purger in (
        VarnishPurger("http://127.0.0.1:1"),
        FastlyPurger("s", "t"),
        CloudflarePurger("z", "t"),
    ):
        assert isinstance(purger, Purger)
        assert {"purged", "failed"} <= set(purger.stats())
        await purger.aclose()


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="service_id"):
        FastlyPurger("", "t")
    with pytest.raises(ValueError, match="retries"):
        VarnishPurger("http://x", retries=-1)
    with pytest.raises(ValueError, match="rate"):
        CloudflarePurger("z", "t", rate=0)


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda: VarnishPurger("http://varnish:abc/"), "is not a URL"),
        (lambda: VarnishPurger("varnish:6081"), "http:// or https://"),
        (lambda: FastlyPurger("svc", "t", base_url="api.fastly.com"), "http:// or https://"),
        (lambda: CloudflarePurger("z", "t", base_url="https://"), "with a host"),
    ],
)
def test_a_url_that_can_never_work_is_refused_at_construction(
    make: Callable[[], object], problem: str
) -> None:
    """Not a purge that raises out of ``purge()`` or retries for seconds what cannot work."""
    with pytest.raises(isr.ConfigError, match=problem):
        make()


def test_result_json() -> None:
    result = PurgeResult("fastly", True, ("a",), ("b",), "HTTP 500")
    assert result.to_json() == {
        "purger": "fastly",
        "ok": False,
        "soft": True,
        "purged": ["a"],
        "failed": ["b"],
        "error": "HTTP 500",
    }


# ------------------------------------------------------------------ credentials

TOKEN = "tok-3f9a1c77e2b54d0c9"  # what an attacker hopes to read back


class EchoServer(LoopbackServer):
    """A CDN (or the proxy in front of it) that answers 500 with the request's headers in
    its error page, as text lines and as JSON, as some debugging pages do."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[dict[str, str]] = []

    def respond(
        self, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        headers = dict(handler.headers.items())
        self.requests.append(headers)
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        page = f"<h1>Internal error</h1><pre>{lines}</pre>{json.dumps(headers)}"
        return 500, {"Content-Type": "text/html"}, page.encode()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda: FastlyPurger("svc", TOKEN + "\n"), "api_token"),
        (lambda: CloudflarePurger("zone", TOKEN + "\r\n"), "api_token"),
        (lambda: CloudflarePurger("zone", " " + TOKEN), "api_token"),
        (lambda: VarnishPurger("http://v/", headers={"X-Purge-Token": TOKEN + "\n"}), "header"),
        (lambda: VarnishPurger("http://v/", headers={"X-Purge-Token": f"a{TOKEN}\x00"}), "header"),
        (lambda: FastlyPurger("s", "t", headers={f"X-{TOKEN}\n": "v"}), "header name"),
        (lambda: VarnishPurger(f"http://purger:{TOKEN}\n@varnish:6081/"), "varnish"),
        (lambda: VarnishPurger(f"http://purger:{TOKEN}@varnish:abc/"), "not a URL"),
        (lambda: FastlyPurger("s", "t", base_url=f"https://u:{TOKEN}@api"), "credentials"),
    ],
)
def test_a_credential_that_cannot_travel_is_refused_without_being_shown(
    make: Callable[[], object], what: str
) -> None:
    """A token read from a file keeps its newline: httpx would refuse the header at every
    purge and quote it in the error. It is refused when the purger is built instead, and
    the message says what is wrong, not what the value is."""
    with pytest.raises(isr.ConfigError, match=what) as refused:
        make()
    assert TOKEN not in str(refused.value)
    assert TOKEN not in repr(refused.value)


async def test_a_cdn_echoing_the_request_gets_no_credential_into_results_or_logs(
    echo: EchoServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx's and httpcore's included
    varnish_url = echo.url.replace("http://", f"http://purger:{TOKEN}@") + "/"
    purgers = [
        FastlyPurger("s", TOKEN, base_url=echo.url, retries=1, backoff=0.01),
        CloudflarePurger("z", TOKEN, base_url=echo.url, rate=None, retries=1, backoff=0.01),
        VarnishPurger(varnish_url, headers={"X-Purge-Token": TOKEN}, retries=1, backoff=0.01),
    ]
    results = []
    for purger in purgers:
        async with purger:
            results.append(await purger.purge(["posts"]))
    # The CDN did see the credentials (so they could be echoed) ...
    assert [r.get("Fastly-Key") for r in echo.requests[:2]] == [TOKEN, TOKEN]
    assert echo.requests[2]["Authorization"] == f"Bearer {TOKEN}"
    assert echo.requests[4]["X-Purge-Token"] == TOKEN
    assert echo.requests[4]["Authorization"] == basic("purger", TOKEN)
    # ... and a 500 is retried, reported with its status and a short redacted excerpt.
    for result in results:
        assert not result.ok
        assert result.error is not None
        assert result.error.startswith("HTTP 500 Internal Server Error: <h1>Internal error</h1>")
        assert len(result.error) < 200
        assert TOKEN not in result.error
        assert "Basic " + base64.b64encode(f"purger:{TOKEN}".encode()).decode() not in str(result)
    assert "HTTP 500" in caplog.text  # the failures were logged ...
    assert "HTTP Request: PURGE" in caplog.text  # ... httpx logged its requests ...
    assert TOKEN not in caplog.text  # ... and no line carries the token
    assert base64.b64encode(f"purger:{TOKEN}".encode()).decode() not in caplog.text


async def test_varnish_url_credentials_travel_as_a_header_never_in_the_url(
    server: RecordingServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = server.url.replace("http://", f"http://purger:{TOKEN}@") + "/purge"
    async with VarnishPurger(url) as purger:
        assert purger.url == server.url + "/purge"
        assert TOKEN not in repr(purger)
        assert (await purger.purge(["posts"])).ok
    request = server.requests[0]
    assert (request.method, request.path) == ("PURGE", "/purge")
    assert request.headers["authorization"] == basic("purger", TOKEN)
    assert f"HTTP Request: PURGE {server.url}/purge" in caplog.text
    assert TOKEN not in caplog.text
    with pytest.raises(isr.ConfigError, match="give one"):
        VarnishPurger(url, headers={"Authorization": "Bearer x"})


async def test_a_client_with_a_bad_header_of_its_own_is_refused_too() -> None:
    async with httpx.AsyncClient(headers={"x-proxy-token": TOKEN + "\n"}) as client:
        with pytest.raises(isr.ConfigError, match="x-proxy-token") as refused:
            FastlyPurger("s", "t", client=client)
    assert TOKEN not in str(refused.value)


async def test_a_request_httpx_refuses_is_not_retried_nor_quoted(
    server: RecordingServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Should a request still be unsendable (here a client's hook adds a bad header after
    the checks), httpx refuses it and quotes the header in its error: that is no transient
    failure, and its text reaches neither the result nor isr's log."""

    async def smuggle(request: httpx.Request) -> None:
        request.headers["x-proxy-token"] = TOKEN + "\n"

    caplog.set_level(logging.DEBUG, logger="isr")
    async with httpx.AsyncClient(event_hooks={"request": [smuggle]}) as client:
        purger = FastlyPurger("s", "t", base_url=server.url, client=client, backoff=0.01)
        result = await purger.purge(["posts"])
    assert result.failed == ("posts",)
    assert result.error == (
        "LocalProtocolError: the request could not be sent (a malformed header or URL)"
    )
    assert result.requests == 1
    assert purger.stats() == {"purged": 0, "failed": 1, "retries": 0}
    assert server.requests == []
    assert "isr" in {record.name for record in caplog.records}
    assert TOKEN not in caplog.text


async def test_the_webhooks_502_carries_no_credential_from_an_echoing_cdn(
    echo: EchoServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    varnish_url = echo.url.replace("http://", f"http://purger:{TOKEN}@") + "/"
    purgers = [
        FastlyPurger("s", TOKEN, base_url=echo.url, retries=0),
        VarnishPurger(varnish_url, headers={"X-Purge-Token": TOKEN}, retries=0),
    ]
    async with isr.ISR() as rt:
        app = WebhookApp(runtime=rt, secret="hook-secret", purgers=purgers)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            response = await client.post(
                "/", json={"tags": ["posts"]}, headers={"authorization": "Bearer hook-secret"}
            )
        await app.aclose()
    assert response.status_code == 502
    assert [c["error"][:8] for c in response.json()["cdn"]] == ["HTTP 500"] * 2
    assert TOKEN not in response.text
    assert TOKEN not in caplog.text
