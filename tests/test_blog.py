"""The example blog: its walkthrough tells the truth, and its webhook reaches its pages.

The walkthrough runs as the README runs it (a subprocess, real uvicorn servers on loopback);
its reader lines are parsed and checked in order. The other tests drive the blog and the CMS
in-process through ``httpx.ASGITransport``, lifespans included, on asyncio and trio.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import isr
from examples.blog.app import create_app as create_blog
from examples.blog.cms import CMS
from examples.blog.cms import create_app as create_cms
from isr.asgi import ASGIApp, Message

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret"

#: A reader's line: ``GET /path [(If-None-Match)]  status  X-Cache  Age n  what``.
READ = re.compile(
    r"^\s+GET (?P<path>\S+)(?: \(If-None-Match\))?\s+(?P<status>\d{3})\s+(?P<cache>\S+)"
    r"\s+Age\s+(?P<age>\S+)\s+(?P<what>.*)$"
)

#: The walkthrough's reads, in order: path, status, X-Cache, and text the line must hold.
EXPECTED_READS = [
    # 1. rendered once, then from the cache; a conditional request gets a 304
    ("/posts/hello", "200", "MISS", "Hello, world"),
    ("/posts/hello", "200", "HIT", "Hello, world"),
    ("/posts/hello", "304", "HIT", "no body"),
    ("/", "200", "MISS", "lists: What ISR does; Hello, world"),
    # 3. after the publish and its webhook: the new version, the list follows
    ("/posts/hello", "200", "MISS", "Hello, world (v2)"),
    ("/posts/hello", "200", "HIT", "Hello, world (v2)"),
    ("/", "200", "MISS", "lists: Hello, world (v2); What ISR does"),
    # 4. the CMS is down: HIT, then STALE past the ttl, then STALE-IF-ERROR after an expire
    ("/posts/hello", "200", "HIT", "Hello, world (v2)"),
    ("/posts/hello", "200", "STALE", "Hello, world (v2)"),
    ("/posts/hello", "200", "STALE", "Hello, world (v2)"),
    ("/posts/hello", "200", "STALE-IF-ERROR", "Hello, world (v2)"),
    ("/", "200", "STALE-IF-ERROR", "lists: Hello, world (v2); What ISR does"),
    # 5. unpublished and purged: gone
    ("/posts/hello", "404", "MISS", "No post hello"),
    ("/", "200", "MISS", "lists: What ISR does"),
]


def test_walkthrough_narrates_publish_outage_and_unpublish() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISR_")}  # memory store
    done = subprocess.run(
        [sys.executable, "-m", "examples.blog.walkthrough"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    lines = out.splitlines()
    reads = [m for m in map(READ.match, lines) if m is not None]
    assert [(m["path"], m["status"], m["cache"]) for m in reads] == [
        (path, status, cache) for path, status, cache, _ in EXPECTED_READS
    ], out
    for m, (*_, what) in zip(reads, EXPECTED_READS, strict=True):
        assert what in m["what"], m.group(0)
    # Ages: seconds since the page was rendered, moved 61 s on by the walkthrough's clock.
    assert [m["age"] for m in reads[8:12]] == ["61"] * 4, out
    assert reads[-2]["what"].strip().startswith("No post hello")
    assert "Hello" not in reads[-1]["what"]

    def after(prefix: str) -> str:
        return next(x for x in lines if x.strip().startswith(prefix))

    assert re.fullmatch(r'\s+etag: "[0-9a-f]{32}"', after("etag:"))
    assert after("cache-control:").endswith(
        "public, s-maxage=60, stale-while-revalidate=31536000, stale-if-error=86400"
    )
    assert after("x-cache-tags:").endswith("posts,post:hello")
    webhooks = [x.strip() for x in lines if x.strip().startswith("webhook answered")]
    assert webhooks == [
        "webhook answered 200: mode expire, tags posts, post:hello",
        "webhook answered 200: mode expire, tags posts",
        "webhook answered 200: mode purge, tags posts, post:hello",
    ]
    assert "background refresh of 'page:/posts/hello' failed" in out
    assert "reader requests: 14, answered 5xx: 0" in out
    assert "every step showed what it narrates" in out


# ---------------------------------------------------------------- in-process


@asynccontextmanager
async def running(app: ASGIApp) -> AsyncIterator[None]:
    """Run ``app``'s lifespan around the block, as a server would."""
    to_app, app_inbox = anyio.create_memory_object_stream[Message](2)
    app_outbox, from_app = anyio.create_memory_object_stream[Message](2)

    async def lifespan() -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        await app(scope, app_inbox.receive, app_outbox.send)

    async def expect(kind: str) -> None:
        message = await from_app.receive()
        assert message["type"] == kind, message

    async with anyio.create_task_group() as tg, to_app, from_app, app_inbox, app_outbox:
        tg.start_soon(lifespan)
        await to_app.send({"type": "lifespan.startup"})
        await expect("lifespan.startup.complete")
        try:
            yield
        finally:
            await to_app.send({"type": "lifespan.shutdown"})
            await expect("lifespan.shutdown.complete")


class LateTransport(httpx.AsyncBaseTransport):
    """An ASGI transport to an app made after the client (the CMS and the blog know each
    other's addresses)."""

    def __init__(self, app: Callable[[], ASGIApp]) -> None:
        self.app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await httpx.ASGITransport(self.app()).handle_async_request(request)


@pytest.fixture
async def site() -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, CMS]]:
    """(reader's client to the blog, editor's client to the CMS, the CMS's state)."""
    apps: dict[str, ASGIApp] = {}
    cms = CMS(
        webhook_url="http://blog/hooks/isr",
        secret=SECRET,
        transport=LateTransport(lambda: apps["blog"]),
    )
    apps["cms"] = create_cms(cms)
    apps["blog"] = create_blog(
        runtime=isr.ISR("memory://"),
        cms_url="http://cms",
        secret=SECRET,
        cms_transport=httpx.ASGITransport(apps["cms"]),
    )
    async with (
        running(apps["cms"]),
        running(apps["blog"]),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(apps["blog"]), base_url="http://blog"
        ) as reader,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(apps["cms"]), base_url="http://cms"
        ) as editor,
    ):
        yield reader, editor, cms


Site = tuple[httpx.AsyncClient, httpx.AsyncClient, CMS]


def strapi(event: str, slug: str) -> dict[str, Any]:
    return {"event": event, "model": "post", "uid": "api::post.post", "entry": {"slug": slug}}


async def page(reader: httpx.AsyncClient, path: str) -> tuple[int, str, str]:
    r = await reader.get(path)
    m = re.search(r"<h1>(.*?)</h1>", r.text)
    return r.status_code, r.headers.get("x-cache", ""), m.group(1) if m else ""


@pytest.mark.anyio
async def test_a_strapi_webhook_posted_to_the_blog_refreshes_its_pages(site: Site) -> None:
    reader, _, cms = site
    assert await page(reader, "/posts/hello") == (200, "MISS", "Hello, world")
    assert await page(reader, "/posts/hello") == (200, "HIT", "Hello, world")
    cms.posts["hello"].title = "Changed behind the cache"
    assert await page(reader, "/posts/hello") == (200, "HIT", "Hello, world")

    refused = await reader.post(
        "/hooks/isr",
        json=strapi("entry.publish", "hello"),
        headers={"authorization": "Bearer wrong"},
    )
    assert refused.status_code == 401
    assert await page(reader, "/posts/hello") == (200, "HIT", "Hello, world")

    done = await reader.post(
        "/hooks/isr",
        json=strapi("entry.publish", "hello"),
        headers={"authorization": f"Bearer {SECRET}"},
    )
    assert done.status_code == 200, done.text
    assert done.json()["tags"] == {"posts": 1, "post:hello": 1}
    assert await page(reader, "/posts/hello") == (200, "MISS", "Changed behind the cache")
    assert await page(reader, "/posts/hello") == (200, "HIT", "Changed behind the cache")


@pytest.mark.anyio
async def test_the_cms_calls_the_webhook_on_publish_and_unpublish(site: Site) -> None:
    reader, editor, _ = site
    assert (await reader.get("/")).headers["x-cache"] == "MISS"
    assert await page(reader, "/posts/isr") == (200, "MISS", "What ISR does")

    published = (await editor.put("/admin/posts/isr", json={"title": "ISR, again"})).json()
    assert published["webhook"]["status"] == 200
    assert published["webhook"]["body"]["mode"] == "expire"
    assert await page(reader, "/posts/isr") == (200, "MISS", "ISR, again")
    home = await reader.get("/")
    assert home.headers["x-cache"] == "MISS"
    assert "ISR, again" in home.text

    unpublished = (await editor.post("/admin/posts/isr/unpublish")).json()
    assert unpublished["webhook"]["body"]["mode"] == "purge"
    assert (await page(reader, "/posts/isr"))[:2] == (404, "MISS")
    assert "ISR, again" not in (await reader.get("/")).text


@pytest.mark.anyio
async def test_a_cms_outage_serves_the_last_good_page(site: Site) -> None:
    reader, editor, _ = site
    assert await page(reader, "/posts/hello") == (200, "MISS", "Hello, world")
    await editor.put("/admin/outage", json={"down": True})
    expired = await reader.post(
        "/hooks/isr",
        json={"tags": ["post:hello"]},
        headers={"authorization": f"Bearer {SECRET}"},
    )
    assert expired.status_code == 200
    assert await page(reader, "/posts/hello") == (200, "STALE-IF-ERROR", "Hello, world")
    # Never cached, nothing to fall back on: the blog's own error page.
    assert (await page(reader, "/posts/isr"))[:2] == (502, "MISS")
