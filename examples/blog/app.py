"""The blog: pages rendered from the CMS by Starlette, cached whole by isr-runtime.

- ``GET /``: the list of posts (ttl 60 s, tag ``posts``)
- ``GET /posts/{slug}``: one post (ttl 60 s, stale served without bound until re-rendered,
  tags ``posts`` and ``post:{slug}``)
- ``POST /hooks/isr``: the CMS webhook (`isr.webhook.WebhookApp`): a Strapi ``post`` event
  invalidates ``posts`` and ``post:{slug}`` (publish: expire, unpublish: purge); a generic
  ``{"tags": [...], "keys": [...], "mode": ...}`` body does what it says

`isr.asgi.ISRMiddleware` sits in front of the pages: a render is one request to the CMS, a
CMS failure (502 from the blog) serves the last good page as ``STALE-IF-ERROR``. The
environment configures it: ``ISR_CACHE_URL`` (the cache: memory by default,
``redis://host:6379/0`` moves it to Redis), ``ISR_NAMESPACE``, ``BLOG_CMS_URL`` (default
``http://127.0.0.1:1337``), ``BLOG_ORIGIN`` (the blog's canonical origin, which every render
sees whatever host a reader asked for; default ``http://localhost:8000``) and
``ISR_WEBHOOK_SECRET`` (a public demo value by default).

    python -m uvicorn --factory examples.blog.app:create_app --port 8000
"""

from __future__ import annotations

import html
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

import isr
from isr.asgi import ISRMiddleware, Rule
from isr.webhook import TagRule, WebhookApp

from . import webhook_secret

__all__ = ["DEFAULT_CMS_URL", "DEFAULT_ORIGIN", "RULES", "TAG_MAP", "create_app"]

#: Where the CMS listens unless ``BLOG_CMS_URL`` says otherwise (Strapi's default port).
DEFAULT_CMS_URL = "http://127.0.0.1:1337"

#: The blog's canonical origin unless ``BLOG_ORIGIN`` says otherwise: pages are rendered
#: for it (their links are relative, so any host serves them right).
DEFAULT_ORIGIN = "http://localhost:8000"

#: What the cache keeps, and under which tags. ``swr=None``: after its ttl a page is served
#: stale at once while one background render runs, however long ago it was rendered.
RULES = (
    Rule("/posts/{slug}", ttl=60, swr=None, tags=["posts", "post:{slug}"]),
    Rule("/", ttl=60, tags=["posts"]),
)

#: A CMS event about a post reaches the list (``posts``) and the post's own page.
TAG_MAP: Mapping[str, TagRule] = {"post": ("posts", "post:{slug}")}


class CMSError(Exception):
    """The CMS could not be reached, or answered with an error."""


def _page(title: str, content: str, status: int = 200) -> HTMLResponse:
    body = (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>\n'
        f"<body>\n{content}\n</body></html>\n"
    )
    return HTMLResponse(body, status_code=status)


def _failed(exc: CMSError) -> HTMLResponse:
    # A 5xx: the cache in front serves the last good page instead (STALE-IF-ERROR).
    return _page("CMS unavailable", f"<h1>The CMS is unavailable</h1>\n<p>{exc}</p>", 502)


def create_app(
    *,
    runtime: isr.ISR | None = None,
    cms_url: str | None = None,
    secret: str | None = None,
    cms_transport: httpx.AsyncBaseTransport | None = None,
    rules: Sequence[Rule] = RULES,
    origin: str | None = None,
) -> Starlette:
    """The blog as an ASGI app; what is not given comes from the environment.

    The app owns ``runtime`` (default ``isr.ISR.from_env()``): its lifespan enters it, so
    background renders run in its task group, and closes it on shutdown. ``cms_transport``
    lets a test serve the CMS in-process (``httpx.ASGITransport``).
    """
    rt = isr.ISR.from_env() if runtime is None else runtime
    cms = httpx.AsyncClient(
        base_url=cms_url or os.environ.get("BLOG_CMS_URL", DEFAULT_CMS_URL),
        transport=cms_transport,
        timeout=5.0,
    )
    webhook = WebhookApp(
        runtime=rt, secret=secret if secret is not None else webhook_secret(), tag_map=TAG_MAP
    )

    async def fetch(path: str) -> Any:
        """The ``data`` of a CMS answer; None for a 404."""
        try:
            response = await cms.get(path)
        except httpx.HTTPError as exc:
            raise CMSError(f"{type(exc).__name__} from the CMS") from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise CMSError(f"the CMS answered {response.status_code}")
        return response.json()["data"]

    async def home(request: Request) -> HTMLResponse:
        try:
            posts = await fetch("/api/posts")
        except CMSError as exc:
            return _failed(exc)
        items = "\n".join(
            f'<li><a href="/posts/{html.escape(p["slug"])}">{html.escape(p["title"])}</a></li>'
            for p in posts
        )
        return _page("The blog", f"<h1>The blog</h1>\n<ul>\n{items}\n</ul>")

    async def post(request: Request) -> HTMLResponse:
        slug: str = request.path_params["slug"]
        try:
            data = await fetch(f"/api/posts/{quote(slug, safe='')}")
        except CMSError as exc:
            return _failed(exc)
        if data is None:
            return _page("Not found", f"<h1>No post {html.escape(slug)}</h1>", 404)
        title, body = html.escape(data["title"]), html.escape(data["body"])
        return _page(data["title"], f"<h1>{title}</h1>\n<p>{body}</p>")

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with rt, cms:
            try:
                yield
            finally:
                await webhook.aclose()

    return Starlette(
        routes=[
            Route("/", home),
            Route("/posts/{slug}", post),
            Route("/hooks/isr", webhook),
        ],
        middleware=[
            Middleware(
                ISRMiddleware,
                runtime=rt,
                rules=rules,
                origin=origin or os.environ.get("BLOG_ORIGIN", DEFAULT_ORIGIN),
            )
        ],
        lifespan=lifespan,
    )
