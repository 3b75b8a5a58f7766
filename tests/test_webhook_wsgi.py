"""The webhook for WSGI: `WebhookWSGIApp` called in-process on every store (the runtime's
sync invalidation API), then under a real gunicorn (sync and gthread workers) with a real
Redis or disk store and a real Varnish purged; its answers and limits are the ASGI app's,
and it makes no loop, thread or client per request."""

from __future__ import annotations

import http.client
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import example, given

import isr
from isr import Status
from isr.cdn import VarnishPurger
from isr.webhook import WebhookApp, WebhookWSGIApp, sign

from ._started import stop_process
from ._strapi5 import Delivery, deliveries, replay_asgi, replay_wsgi, wsgi_environ
from .recording_server import RecordingServer
from .redis_server import RedisServer, free_port
from .test_varnish import Origin
from .test_webhook import FUZZ
from .test_webhook import HKEY as FUZZ_HMAC
from .test_webhook import NOW as FUZZ_NOW
from .test_webhook import SECRET as FUZZ_SECRET
from .test_webhook import requests as fuzzed_requests
from .varnish_server import VarnishServer

ROOT = Path(__file__).resolve().parent.parent
SECRET = "wsgi-test-secret"
DOCUMENT = "x4m1o86wd67fakx053pumr4h"  # the captured article's documentId


class Articles:
    """Two articles cached through a sync runtime, tagged as the default tag table names
    them; the origin can go down."""

    def __init__(self, rt: isr.ISR) -> None:
        self.down = False

        @rt.with_revalidate(
            "article:{slug}", ttl=600, tags=["article", "article:{slug}", "article:{doc}"]
        )
        def article(slug: str, doc: str) -> str:
            if self.down:
                raise OSError("origin down")
            return f"article {slug}"

        self.article = article

    def warm(self) -> None:
        self.article("first-post", DOCUMENT)
        self.article("second-post", "other-document")

    def status(self, slug: str) -> Status:
        doc = DOCUMENT if slug == "first-post" else "other-document"
        return self.article.lookup(slug, doc).status


def call(app: WebhookWSGIApp, environ: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        started.append((status, headers))

    body = b"".join(app(environ, start_response))
    status, headers = started[0]
    return int(status.split()[0]), dict(headers), json.loads(body)


def request(
    body: bytes = b'{"tags": ["article"]}',
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> Delivery:
    """A request to the webhook: the test's secret, JSON, its length; ``headers`` change
    them (an empty value leaves one out)."""
    sent = {
        "Authorization": f"Bearer {SECRET}",
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        **(headers or {}),
    }
    return Delivery("test", method, "/hooks/cms", tuple((k, v) for k, v in sent.items() if v), body)


def environ(
    body: bytes = b'{"tags": ["article"]}',
    *,
    headers: dict[str, str] | None = None,
    stream: Any = None,
) -> dict[str, Any]:
    made = wsgi_environ(request(body, headers=headers))
    if stream is not None:
        made["wsgi.input"] = stream
    return made


@pytest.fixture
def memory() -> Iterator[isr.ISR]:
    rt = isr.ISR()
    try:
        yield rt
    finally:
        rt.close()


# ------------------------------------------------------------------ in-process, every store


def test_strapi_deliveries_through_the_sync_api_on_every_store(srt: isr.ISR) -> None:
    site = Articles(srt)
    site.warm()
    with WebhookWSGIApp(runtime=srt, secret=SECRET) as app:
        (publish,) = deliveries("entry.publish", secret=SECRET)
        status, answer = replay_wsgi(app, publish)
        assert (status, answer["tags"]) == (
            200,
            {"article": 2, "article:first-post": 1, f"article:{DOCUMENT}": 1},
        )
        assert site.status("first-post") == Status.MISS  # read again: fresh
        (unpublish,) = deliveries("entry.unpublish", secret=SECRET)
        status, answer = replay_wsgi(app, unpublish)
        assert status == 200
        assert answer["modes"]["article"] == "expire"
    site.down = True
    assert site.status("second-post") == Status.STALE_IF_ERROR
    with pytest.raises(OSError, match="origin down"):
        site.status("first-post")  # purged: never served again


def test_purges_share_one_loop_and_one_client_for_the_apps_lifetime(memory: isr.ISR) -> None:
    """Eight threads, as gunicorn's gthread worker runs them, forty deliveries: one loop
    thread is started, one HTTP client serves every purge; ``close`` stops both."""
    rt = memory
    with RecordingServer() as cdn:
        purger = VarnishPurger(cdn.url + "/", retries=0)
        app = WebhookWSGIApp(runtime=rt, secret=SECRET, purgers=[purger])
        before = {t.ident for t in threading.enumerate()}
        clients: set[int] = set()

        def deliver(i: int) -> int:
            status, _, answer = call(app, environ(json.dumps({"tags": [f"t{i}"]}).encode()))
            assert answer["cdn"][0]["ok"], answer
            assert purger._client is not None
            clients.add(id(purger._client))
            return status

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(deliver, range(40))) == {200}
        started = [
            t  # the CDN's own threads (one per keep-alive connection) aside
            for t in threading.enumerate()
            if t.ident not in before and "process_request" not in t.name
        ]
        assert [t.name for t in started] == ["isr-webhook-purges"]
        assert len(clients) == 1
        assert len(cdn.requests) == 40
        app.close()
        assert not started[0].is_alive()
        assert purger._client is None  # closed on its own loop
        app.close()  # twice is harmless


def test_a_webhook_without_purgers_starts_no_thread(memory: isr.ISR) -> None:
    with WebhookWSGIApp(runtime=memory, secret=SECRET) as app:
        before = threading.active_count()
        for _ in range(5):
            assert call(app, environ())[0] == 200
        assert threading.active_count() == before


class Endless(io.RawIOBase):
    """A chunked body that never ends; counts the bytes read from it."""

    def __init__(self) -> None:
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        n = 65536 if size is None or size < 0 else size
        self.read_bytes += n
        return b" " * n


class Short(io.BytesIO):
    """A body that ends before its Content-Length: the client hung up."""


def test_the_body_is_read_incrementally_and_never_past_the_limit(memory: isr.ISR) -> None:
    rt = memory
    with WebhookWSGIApp(runtime=rt, secret=SECRET, max_body=100_000) as app:
        endless = Endless()
        chunked = environ(headers={"Content-Length": ""}, stream=endless)
        chunked["wsgi.input_terminated"] = True  # gunicorn's mark for a chunked body
        status, _, answer = call(app, chunked)
        assert (status, answer["error"]) == (413, "body larger than 100000 bytes")
        assert endless.read_bytes <= 100_001 + 65536  # one read past the limit at most

        untouched = Endless()
        declared = environ(headers={"Content-Length": "100001"}, stream=untouched)
        assert call(app, declared)[0] == 413
        assert untouched.read_bytes == 0  # refused on its Content-Length alone

        short = environ(b'{"tags": ["article"]}', stream=Short(b'{"tags": ["art'))
        status, _, answer = call(app, short)
        assert (status, answer["error"]) == (400, "the body ended before its Content-Length")

        # No Content-Length and no end mark: PEP 3333 says there is no body to read.
        bare = environ(headers={"Content-Length": ""}, stream=Endless())
        status, _, answer = call(app, bare)
        assert (status, answer["error"][:28]) == (400, "body is not valid UTF-8 JSON")
        assert rt.stats().invalidations == 0


def test_chunked_bodies_are_read_to_their_end(memory: isr.ISR) -> None:
    rt = memory
    with WebhookWSGIApp(runtime=rt, secret=SECRET) as app:
        chunked = environ(
            headers={"Content-Length": ""}, stream=io.BytesIO(b'{"tags": ["article"]}')
        )
        chunked["wsgi.input_terminated"] = True
        assert call(app, chunked)[:1] == (200,)
        assert rt.stats().invalidations == 1


REQUESTS: list[tuple[str, dict[str, str], bytes]] = [
    ("POST", {}, b'{"tags": ["a"], "keys": ["k"], "mode": "revalidate"}'),
    ("GET", {}, b""),
    ("POST", {"Authorization": "Bearer wrong"}, b'{"tags": ["a"]}'),
    ("POST", {"Authorization": ""}, b'{"tags": ["a"]}'),
    ("POST", {"Content-Type": "text/plain"}, b'{"tags": ["a"]}'),
    ("POST", {}, b"{not json"),
    ("POST", {}, b'{"tags": [3]}'),
    ("POST", {}, b" " * 2000),
    ("POST", {"X-Strapi-Event": "entry.publish"}, b'{"tags": ["a"]}'),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "headers", "body"), REQUESTS)
async def test_the_same_answers_as_the_asgi_app(
    method: str, headers: dict[str, str], body: bytes
) -> None:
    sent = request(body, method=method, headers=headers)
    async with isr.ISR() as rt:
        options: dict[str, Any] = {"runtime": rt, "secret": SECRET, "max_body": 1000}
        with WebhookWSGIApp(**options) as wsgi:
            status, wsgi_headers, wsgi_answer = call(wsgi, wsgi_environ(sent))
        asgi_status, asgi_answer = await replay_asgi(WebhookApp(**options), sent)
    assert (status, timeless(wsgi_answer)) == (asgi_status, timeless(asgi_answer))
    assert wsgi_headers["cache-control"] == "no-store"
    if status == 405:
        assert wsgi_headers["allow"] == "POST"


def timeless(answer: Any) -> Any:
    """A webhook's answer without how long its confirmation took (which varies)."""
    if isinstance(answer, dict) and isinstance(answer.get("instances"), dict):
        assert answer["instances"].pop("ms") >= 0
    return answer


def test_signed_deliveries_from_several_threads_are_each_accepted_once() -> None:
    """The replay guard is shared by the app's threads: of eight copies of one signed
    delivery sent at once, one is accepted."""
    body = b'{"tags": ["article"]}'
    headers = {"Authorization": "", **sign(body, "hmac-key")}
    rt = isr.ISR()
    with WebhookWSGIApp(runtime=rt, hmac_secret="hmac-key") as app:
        barrier = threading.Barrier(8)

        def deliver(_: int) -> int:
            barrier.wait()
            return call(app, environ(body, headers=headers))[0]

        with ThreadPoolExecutor(8) as pool:
            statuses = sorted(pool.map(deliver, range(8)))
    rt.close()
    assert statuses == [200] + [401] * 7


# ------------------------------------------------------------------ under gunicorn


@dataclass
class Gunicorn:
    url: str
    proc: Any
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def replay_http(url: str, delivery: Delivery) -> tuple[int, Any]:
    """``delivery`` over a socket, every header line as Strapi sent it."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.putrequest(
            delivery.method, delivery.path, skip_host=True, skip_accept_encoding=True
        )
        for name, value in delivery.headers:
            connection.putheader(name, value)
        connection.endheaders(delivery.body)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.fixture(scope="module")
def varnish() -> Iterator[VarnishServer]:
    """A real Varnish in front of tests/test_varnish.py's tagged origin."""
    with Origin() as origin, VarnishServer(origin.port) as server:
        yield server


def gunicorn(worker: str, env: dict[str, str], tmp: Path, stack: ExitStack) -> Gunicorn:
    port = free_port()
    log = tmp / f"gunicorn-{worker}.log"
    args = [sys.executable, "-m", "gunicorn", "-k", worker, "-w", "2", "--threads", "4"]
    args += ["-b", f"127.0.0.1:{port}", "--graceful-timeout", "5", "tests._wsgi_webhook:app"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )
    stack.callback(stop_process, proc, 10)
    server = Gunicorn(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{server.output()}")
            try:
                if client.get(f"{server.url}/_threads").status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not answer:\n{server.output()}")
            time.sleep(0.05)


def worker_state(pid: int) -> tuple[int, int]:
    """(threads, open file descriptors) of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    threads = int(
        next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:"))
    )
    return threads, len(os.listdir(f"/proc/{pid}/fd"))


def thread_names(url: str, pids: set[int]) -> dict[int, list[str]]:
    """Each worker's Python threads, by name (asked until every worker in ``pids`` answered)."""
    found: dict[int, list[str]] = {}
    with httpx.Client(trust_env=False) as client:
        for _ in range(200):
            answer = client.get(f"{url}/_threads", headers={"connection": "close"}).json()
            found[answer["pid"]] = answer["threads"]
            if set(found) >= pids:
                return found
    raise AssertionError(f"not every worker answered: {sorted(found)} of {sorted(pids)}")


def workers(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return sorted(int(pid) for pid in children)


@pytest.mark.parametrize("worker", ["sync", "gthread"])
@pytest.mark.parametrize("store", ["redis", "disk"])
def test_under_gunicorn_a_strapi_unpublish_reaches_the_store_and_varnish(
    worker: str,
    store: str,
    redis_server: RedisServer,
    varnish: VarnishServer,
    tmp_path: Path,
) -> None:
    namespace = f"wsgi-{worker}-{store}"
    url = redis_server.url if store == "redis" else f"disk://{tmp_path / 'cache'}"
    env = {
        "ISR_CACHE_URL": url,
        "ISR_NAMESPACE": namespace,
        "ISR_WEBHOOK_SECRET": SECRET,
        "ISR_TEST_VARNISH": varnish.url + "/",
    }
    pages = [f"/articles/first-post-{namespace}", f"/articles/second-post-{namespace}"]
    with ExitStack() as cleanup:
        rt = isr.ISR(url, namespace=namespace)
        cleanup.callback(rt.close)
        server = gunicorn(worker, env, tmp_path, cleanup)
        site = Articles(rt)
        site.warm()
        with httpx.Client(base_url=varnish.url, trust_env=False) as web:
            for page in pages:
                web.get(page)
                assert web.get(page).headers["x-cache"] == "HIT"

            (unpublish,) = deliveries("entry.unpublish", secret=SECRET)
            body = unpublish.json()
            body["entry"]["slug"] = f"first-post-{namespace}"
            status, answer = replay_http(server.url, unpublish.with_body(json.dumps(body).encode()))
            assert status == 200, answer
            assert answer["cdn"][0]["ok"] is True
            assert answer["cdn"][0]["purged"] == list(answer["modes"])
            # Varnish: every article page was tagged "article": all purged (hard, expire).
            for page in pages:
                assert web.get(page).headers["x-cache"] == "MISS"

        site.down = True
        assert site.status("second-post") == Status.STALE_IF_ERROR  # expired, kept
        with pytest.raises(OSError, match="origin down"):
            site.status("first-post")  # purged through its documentId tag
        site.down = False

        # Many deliveries at once, the large one among them: no thread, loop or client
        # per request in any worker.
        (large,) = deliveries("entry.publish.large_body", secret=SECRET)
        generic = [
            Delivery(
                "generic",
                "POST",
                "/hooks/cms",
                (
                    ("Authorization", f"Bearer {SECRET}"),
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(b := json.dumps({"tags": [f"t{i}"]}).encode()))),
                ),
                b,
            )
            for i in range(80)
        ]

        def burst(batch: list[Delivery]) -> list[int]:
            with ThreadPoolExecutor(16) as pool:
                return [
                    status for status, _ in pool.map(lambda d: replay_http(server.url, d), batch)
                ]

        # Enough at once for every worker to start all it keeps (its pool's threads, the
        # store's connection per thread, pooled connections to Varnish), then as many again.
        assert set(burst([large, *generic, large])) == {200}
        master = server.proc.pid
        before = {pid: worker_state(pid) for pid in workers(master)}
        assert set(burst([large, *generic, large])) == {200}
        after = {pid: worker_state(pid) for pid in workers(master)}
        assert set(after) == set(before), server.output()  # no worker died
        # Per worker, whatever the number of requests: its main thread, gthread's pool of 4,
        # one purge loop and that loop's bounded executor for name lookups (asyncio's default:
        # at most 6 threads on 2 cores), the runtime's heartbeat. Sockets: the server's, the
        # store's, a few pooled connections to Varnish; none left per request.
        most = 1 + (4 if worker == "gthread" else 0) + 2 + min(32, (os.cpu_count() or 1) + 4)
        for pid, (threads, fds) in after.items():
            assert threads <= most, (worker, before, after)
            assert fds <= before[pid][1] + 4, (worker, before, after)
        allowed = (
            "MainThread",
            "isr-webhook-purges",
            "isr-heartbeat",
            "ThreadPoolExecutor",
            "asyncio_",
        )
        for pid, names in thread_names(server.url, set(after)).items():
            assert names.count("isr-webhook-purges") == 1, (pid, names)
            assert names.count("isr-heartbeat") <= 1, (pid, names)
            assert all(name.startswith(allowed) for name in names), (pid, names)


# ------------------------------------------------------------------ fuzz: the same answers


@FUZZ
@given(request=fuzzed_requests())
# Found by the fuzzer: a repeated Content-Type, joined by a WSGI server with a bare comma.
@example(
    request=(
        "POST",
        [
            (b"authorization", f"Bearer {FUZZ_SECRET}".encode()),
            (b"content-type", b"application/json"),
            (b"content-type", b""),
        ],
        b"{}",
    )
)
@pytest.mark.anyio
async def test_fuzz_the_wsgi_app_answers_as_the_asgi_app(
    request: tuple[str, list[tuple[bytes, bytes]], bytes],
) -> None:
    """Any request (test_webhook.py's fuzzer: a signed envelope, half the time broken, around
    a random body) gets the same status, answer and invalidations from both apps. The
    body's framing is the server's business, so Content-Length is made true here."""
    method, headers, body = request
    headers = [(k, v) for k, v in headers if k != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode()))
    sent = Delivery(
        "fuzz",
        method,
        "/hooks/cms",
        tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in headers),
        body,
    )
    answers = []
    for kind in ("asgi", "wsgi"):
        async with isr.ISR() as rt:
            options: dict[str, Any] = {
                "runtime": rt,
                "secret": FUZZ_SECRET,
                "hmac_secret": FUZZ_HMAC,
                "clock": lambda: float(FUZZ_NOW),
                "max_body": 4096,
            }
            if kind == "asgi":
                status, answer = await replay_asgi(WebhookApp(**options), sent)
            else:
                with WebhookWSGIApp(**options) as app:
                    status, _, answer = call(app, wsgi_environ(sent))
            answers.append((status, timeless(answer), rt.stats().invalidations))
    assert answers[0] == answers[1]
