"""A tiny headless CMS, the blog's origin: posts as JSON, an editor's API, Strapi webhooks.

Public API (what the blog reads; answers 503 while the CMS is "down"):

- ``GET /api/posts``: the published posts, newest first, ``{"data": [{"slug", "title"}]}``
- ``GET /api/posts/{slug}``: one published post, ``{"data": {"slug", "title", "body"}}``;
  404 if there is none (or it is unpublished)

Editor API (no authentication: run it on loopback only):

- ``PUT /admin/posts/{slug}`` with ``{"title": ..., "body": ...}`` (either may be left out
  when the post exists): create or change the post and publish it
- ``POST /admin/posts/{slug}/unpublish``: take the post off the site
- ``PUT /admin/outage`` with ``{"down": true}`` or ``{"down": false}``: switch the public API
  to answering 503, or back

After a publish or an unpublish the CMS calls the blog's webhook as Strapi does: it POSTs
``{"event": "entry.publish" | "entry.unpublish", "model": "post", "uid": "api::post.post",
"entry": {...}}`` with ``Authorization: Bearer <secret>``. Strapi sends its webhooks after it
has answered the editor; this CMS waits for the webhook's answer and includes it in its own,
so that a script (the walkthrough) sees the invalidation done when the call returns.

    BLOG_WEBHOOK_URL=http://127.0.0.1:8000/hooks/isr ISR_WEBHOOK_SECRET=... \\
        python -m uvicorn --factory examples.blog.cms:create_app --port 1337
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from . import webhook_secret

__all__ = ["CMS", "SAMPLE_POSTS", "Post", "create_app"]

#: Where the blog's webhook listens unless ``BLOG_WEBHOOK_URL`` says otherwise.
DEFAULT_WEBHOOK_URL = "http://127.0.0.1:8000/hooks/isr"


@dataclasses.dataclass
class Post:
    id: int
    slug: str
    title: str
    body: str
    published_at: str | None

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "slug": self.slug, "title": self.title}

    def to_json(self) -> dict[str, Any]:
        return {**self.summary(), "body": self.body, "publishedAt": self.published_at}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


SAMPLE_POSTS = (
    Post(1, "hello", "Hello, world", "The first post of this blog.", "2024-01-01T00:00:00.000Z"),
    Post(
        2,
        "isr",
        "What ISR does",
        "Fresh, stale or fetched: never down.",
        "2024-01-02T00:00:00.000Z",
    ),
)


class CMS:
    """The content, the outage switch, and the webhook the CMS calls after a change."""

    def __init__(
        self,
        posts: Iterable[Post] = SAMPLE_POSTS,
        *,
        webhook_url: str | None = None,
        secret: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.posts = {post.slug: dataclasses.replace(post) for post in posts}
        self.down = False
        self.webhook_url = webhook_url
        self.secret = secret
        self.client = httpx.AsyncClient(transport=transport, timeout=10.0)

    def published(self) -> list[Post]:
        posts = [p for p in self.posts.values() if p.published_at is not None]
        return sorted(posts, key=lambda p: (p.published_at or "", p.id), reverse=True)

    async def notify(self, event: str, post: Post) -> dict[str, Any] | None:
        """POST a Strapi v4-shaped webhook for ``post``; what the blog answered (None when no
        webhook is configured)."""
        if self.webhook_url is None:
            return None
        payload = {
            "event": event,
            "createdAt": _now(),
            "model": "post",
            "uid": "api::post.post",
            "entry": post.to_json(),
        }
        headers = {"authorization": f"Bearer {self.secret}"} if self.secret else {}
        try:
            response = await self.client.post(self.webhook_url, json=payload, headers=headers)
        except httpx.HTTPError as exc:
            return {"status": None, "error": f"{type(exc).__name__}: {exc}"}
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        return {"status": response.status_code, "body": body}


def create_app(cms: CMS | None = None) -> Starlette:
    """The CMS as an ASGI app. Without ``cms``: the sample posts, the webhook from
    ``BLOG_WEBHOOK_URL`` and the secret from ``ISR_WEBHOOK_SECRET``."""
    if cms is None:
        cms = CMS(
            webhook_url=os.environ.get("BLOG_WEBHOOK_URL", DEFAULT_WEBHOOK_URL),
            secret=webhook_secret(),
        )
    state = cms

    def unavailable() -> JSONResponse:
        return JSONResponse({"error": "the CMS is down for maintenance"}, status_code=503)

    async def list_posts(request: Request) -> JSONResponse:
        if state.down:
            return unavailable()
        return JSONResponse({"data": [post.summary() for post in state.published()]})

    async def get_post(request: Request) -> JSONResponse:
        if state.down:
            return unavailable()
        post = state.posts.get(request.path_params["slug"])
        if post is None or post.published_at is None:
            return JSONResponse({"error": "no such post"}, status_code=404)
        return JSONResponse({"data": post.to_json()})

    async def publish(request: Request) -> JSONResponse:
        slug = request.path_params["slug"]
        try:
            fields = json.loads(await request.body())
        except ValueError:
            fields = None
        if not isinstance(fields, dict) or not set(fields) <= {"title", "body"}:
            return JSONResponse({"error": "send {title, body}"}, status_code=400)
        if not all(isinstance(v, str) and v for v in fields.values()):
            return JSONResponse({"error": "title and body are non-empty strings"}, 400)
        post = state.posts.get(slug)
        if post is None:
            if "title" not in fields:
                return JSONResponse({"error": "a new post needs a title"}, status_code=400)
            post = Post(
                max((p.id for p in state.posts.values()), default=0) + 1, slug, "", "", None
            )
            state.posts[slug] = post
        post.title = fields.get("title", post.title)
        post.body = fields.get("body", post.body)
        post.published_at = _now()
        webhook = await state.notify("entry.publish", post)
        return JSONResponse({"data": post.to_json(), "webhook": webhook})

    async def unpublish(request: Request) -> JSONResponse:
        post = state.posts.get(request.path_params["slug"])
        if post is None:
            return JSONResponse({"error": "no such post"}, status_code=404)
        post.published_at = None
        webhook = await state.notify("entry.unpublish", post)
        return JSONResponse({"data": post.to_json(), "webhook": webhook})

    async def outage(request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("down"), bool):
            return JSONResponse({"error": 'send {"down": true} or {"down": false}'}, 400)
        state.down = body["down"]
        return JSONResponse({"down": state.down})

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with state.client:
            yield

    routes = [
        Route("/api/posts", list_posts),
        Route("/api/posts/{slug}", get_post),
        Route("/admin/posts/{slug}", publish, methods=["PUT"]),
        Route("/admin/posts/{slug}/unpublish", unpublish, methods=["POST"]),
        Route("/admin/outage", outage, methods=["PUT"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
