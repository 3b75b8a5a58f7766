"""The blog walked through: cached pages, a publish, a CMS outage, an unpublish.

The CMS (``cms.py``) and the blog (``app.py``) run under uvicorn in this process, each on a
free loopback port, and talk over real HTTP: the blog reads the CMS, the CMS calls the
blog's webhook. The cache is ``isr.ISR.from_env()`` (memory unless ``ISR_CACHE_URL`` says
otherwise), in a namespace of its own so every run starts cold; its clock can be moved
forward, so the 60 s ttl passes in an instant. Everything else is real.

    python -m examples.blog.walkthrough

Exit status 0 when every step showed what it narrates, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import os
import re
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import uvicorn

import isr
from isr.asgi import ASGIApp

from . import DEMO_SECRET
from .app import create_app as create_blog
from .cms import CMS
from .cms import create_app as create_cms


class DemoClock:
    """Wall-clock time plus however far the walkthrough has moved it forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def forward(self, seconds: float) -> None:
        self.offset += seconds
        print(f"\n   ... {seconds:g} s later (the walkthrough moves the cache's clock) ...")


class LogLines(logging.Handler):
    """What the runtime logs (a failed render, with its traceback), kept as one line each
    until the walkthrough prints them: a background render fails while the reader's line
    is on its way, and the output must read the same on every run."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"   [log isr] {record.getMessage()}")

    def flush_lines(self) -> None:
        for line in self.lines:
            print(line)
        self.lines.clear()


class _Server(uvicorn.Server):
    """uvicorn in a task: Ctrl-C is the walkthrough's, not the server's."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"


@asynccontextmanager
async def _serving(app: ASGIApp, sock: socket.socket) -> AsyncIterator[None]:
    """Serve ``app`` on ``sock`` (lifespan included) for the duration of the block."""
    config = uvicorn.Config(app, lifespan="on", log_config=None, access_log=False)
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # startup failed: raise why
                raise RuntimeError("uvicorn stopped during startup")
            await asyncio.sleep(0.005)
        yield
    finally:
        server.should_exit = True
        await task
        sock.close()


class Walkthrough:
    """The reader's and the editor's requests, printed as they go, and what went wrong."""

    def __init__(
        self, blog: httpx.AsyncClient, cms: httpx.AsyncClient, secret: str, log: LogLines
    ) -> None:
        self.blog = blog
        self.cms = cms
        self.secret = secret
        self.log = log
        self.problems: list[str] = []
        self.reads = 0
        self.server_errors = 0

    def expect(self, ok: bool, what: str) -> None:
        if not ok:
            self.problems.append(what)
            print(f"   !! expected {what}")

    async def read(
        self,
        path: str,
        *,
        status: int = 200,
        cache: str,
        note: str = "",
        if_none_match: str | None = None,
    ) -> httpx.Response:
        """GET a blog page as a reader would, print one line, check status and X-Cache."""
        headers = {} if if_none_match is None else {"if-none-match": if_none_match}
        r = await self.blog.get(path, headers=headers)
        self.reads += 1
        self.server_errors += r.status_code >= 500
        x_cache = r.headers.get("x-cache", "-")
        age = r.headers.get("age", "-")
        label = f"GET {path}" + (" (If-None-Match)" if if_none_match is not None else "")
        print(f"   {label:<32} {r.status_code}  {x_cache:<14} Age {age:>3}  {_what(r)}{note}")
        self.log.flush_lines()
        self.expect(r.status_code == status, f"{label}: status {status}, got {r.status_code}")
        self.expect(x_cache == cache, f"{label}: X-Cache {cache}, got {x_cache}")
        return r

    async def edit(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """An editor's request to the CMS; prints the webhook call it caused."""
        shown = "" if body is None else " " + _compact(body)
        print(f"   editor: {method} cms{path}{shown}")
        r = await self.cms.request(method, path, json=body)
        self.expect(r.status_code == 200, f"{method} {path}: 200, got {r.status_code}")
        answer = r.json()
        webhook = answer.get("webhook") if isinstance(answer, dict) else None
        if webhook is not None:
            data = answer["data"]
            event = "entry.unpublish" if data["publishedAt"] is None else "entry.publish"
            print(
                f'   CMS -> POST blog/hooks/isr {{"event": "{event}", "model": "post", '
                f'"entry": {{"slug": "{data["slug"]}", ...}}}}'
            )
            _print_webhook(webhook)
            self.expect(webhook.get("status") == 200, f"the webhook to answer 200: {webhook}")
        return answer


def _compact(body: Any) -> str:
    return json.dumps(body, ensure_ascii=False)


def _print_webhook(webhook: dict[str, Any]) -> None:
    body = webhook.get("body")
    if webhook.get("status") == 200 and isinstance(body, dict):
        tags = ", ".join(body.get("tags", {}))
        print(f"   webhook answered 200: mode {body.get('mode')}, tags {tags}")
    else:
        print(f"   webhook answered {webhook.get('status')}: {webhook}")


_H1 = re.compile(r"<h1>(.*?)</h1>")
_LINK = re.compile(r"<li><a [^>]*>(.*?)</a></li>")


def _what(r: httpx.Response) -> str:
    """What a reader sees: the post's title, or the list's titles."""
    if r.status_code == 304:
        return "(no body: the reader's copy is current)"
    links = _LINK.findall(r.text)
    if links:
        return "lists: " + "; ".join(html.unescape(link) for link in links)
    m = _H1.search(r.text)
    return html.unescape(m.group(1)) if m else r.text[:60]


async def walk(w: Walkthrough, runtime: isr.ISR, clock: DemoClock) -> None:
    print("\n1. A reader opens a post: rendered once from the CMS (MISS), then from the cache")
    first = await w.read("/posts/hello", cache="MISS")
    await w.read("/posts/hello", cache="HIT")
    etag = first.headers.get("etag", "")
    for name in ("etag", "last-modified", "cache-control", "x-cache-tags"):
        print(f"       {name}: {first.headers.get(name)}")
    await w.read("/posts/hello", status=304, cache="HIT", if_none_match=etag)
    await w.read("/", cache="MISS")

    print("\n2. An editor publishes a new version; the CMS calls the blog's webhook")
    await w.edit("PUT", "/admin/posts/hello", {"title": "Hello, world (v2)"})

    print("\n3. The next read renders the new version; the list follows")
    await w.read("/posts/hello", cache="MISS")
    await w.read("/posts/hello", cache="HIT")
    await w.read("/", cache="MISS")

    print("\n4. The CMS goes down (its API answers 503): readers never see an error")
    await w.edit("PUT", "/admin/outage", {"down": True})
    await w.read("/posts/hello", cache="HIT", note="   (the CMS is not asked)")
    clock.forward(61)
    await w.read("/posts/hello", cache="STALE", note="   (served at once; one background render)")
    await runtime.drain()
    w.log.flush_lines()
    await w.read("/posts/hello", cache="STALE", note="   (the render failed: the old page is kept)")
    print('   an operator expires the section: POST blog/hooks/isr {"tags": ["posts"]}')
    print("   (what `isr invalidate --webhook URL --secret S --tag posts` sends)")
    r = await w.blog.post(
        "/hooks/isr",
        json={"tags": ["posts"], "mode": "expire"},
        headers={"authorization": f"Bearer {w.secret}"},
    )
    _print_webhook({"status": r.status_code, "body": r.json()})
    w.expect(r.status_code == 200, f"the webhook to answer 200, got {r.status_code}")
    note = "   (the render failed: the last good page)"
    await w.read("/posts/hello", cache="STALE-IF-ERROR", note=note)
    await w.read("/", cache="STALE-IF-ERROR", note=note)

    print("\n5. The CMS is back; the editor unpublishes the post: the webhook purges it")
    await w.edit("PUT", "/admin/outage", {"down": False})
    await w.edit("POST", "/admin/posts/hello/unpublish")
    await w.read("/posts/hello", status=404, cache="MISS", note="   (never served again)")
    await w.read("/", cache="MISS")


async def main() -> int:
    log = LogLines()
    isr_logger = logging.getLogger("isr")
    isr_logger.addHandler(log)
    isr_logger.propagate = False

    secret = os.environ.get("ISR_WEBHOOK_SECRET") or DEMO_SECRET
    clock = DemoClock()
    namespace = f"blog-walkthrough-{uuid.uuid4().hex[:8]}"
    runtime = isr.ISR.from_env(clock=clock, namespace=namespace)
    store = os.environ.get("ISR_CACHE_URL") or "memory://"
    blog_sock, cms_sock = _bind(), _bind()
    blog_url, cms_url = _url(blog_sock), _url(cms_sock)
    cms = CMS(webhook_url=f"{blog_url}/hooks/isr", secret=secret)
    blog = create_blog(runtime=runtime, cms_url=cms_url, secret=secret)

    print("isr-runtime blog walkthrough: a CMS and a blog on loopback, pages cached by isr")
    print(f"   CMS   {cms_url}   public API /api/posts, editor API /admin, calls the webhook")
    print(f"   blog  {blog_url}   / and /posts/{{slug}} (ttl 60 s), webhook POST /hooks/isr")
    print(f"   cache {store.split('@')[-1]} (namespace {namespace})")
    if secret == DEMO_SECRET:
        print("   webhook secret: the public demo value (set ISR_WEBHOOK_SECRET for real use)")

    async with (
        _serving(create_cms(cms), cms_sock),
        _serving(blog, blog_sock),
        httpx.AsyncClient(base_url=blog_url, timeout=10.0) as blog_client,
        httpx.AsyncClient(base_url=cms_url, timeout=10.0) as cms_client,
    ):
        w = Walkthrough(blog_client, cms_client, secret, log)
        await walk(w, runtime, clock)
        s = runtime.stats()

    print(
        f"\nstats: hits={s.hits} stale={s.stale} misses={s.misses} "
        f"stale_if_error={s.stale_if_error} loader_calls={s.loader_calls} "
        f"refresh_failures={s.refresh_failures}"
    )
    print(f"reader requests: {w.reads}, answered 5xx: {w.server_errors}")
    if w.problems:
        print(f"FAILED: {len(w.problems)} step(s) did not show what they narrate")
        return 1
    print("every step showed what it narrates")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
