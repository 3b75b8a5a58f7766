"""One replica of a small site whose pages are cached by isr-runtime: run three behind nginx.

A pure ASGI app (no framework). Its configuration comes from the environment:

- ``ISR_CACHE_URL`` (``redis://host:port/db``) and ``ISR_NAMESPACE``: the shared store;
  every replica keeps a memory L1 in front of it, kept coherent over Redis pub/sub.
- ``INSTANCE``: this replica's name, sent back as ``X-Instance``.
- ``ORIGIN``: a JSON file ``{slug: text}`` playing the CMS; it is read on every fetch.

Routes:

- ``GET /page/{slug}``: the page, with ``X-Cache`` (HIT, MISS, STALE, STALE-IF-ERROR),
  ``Age`` and ``X-Instance``; 404 if the origin has no such page (not cached).
- ``POST /revalidate?key=page:{slug}`` or ``?tag=pages``, ``&mode=expire|revalidate|purge``
  (expire by default): what a CMS webhook calls. It reaches one replica; the bus tells the
  others.
- ``GET /stats``: this replica's counters (`isr.ISR.stats`), as JSON.

    ISR_CACHE_URL=redis://127.0.0.1:6379/0 INSTANCE=a ORIGIN=pages.json \\
        python -m uvicorn examples.replicas.app:app --port 8001
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import anyio

import isr

__all__ = ["app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

logger = logging.getLogger("replicas")

MODES = {"expire": isr.Mode.EXPIRE, "revalidate": isr.Mode.REVALIDATE, "purge": isr.Mode.PURGE}
#: How long startup waits for the invalidation bus to subscribe before serving anyway.
BUS_WAIT = 5.0


class Site:
    """What one replica serves: pages read from the origin file, cached by ``rt``."""

    def __init__(self, rt: isr.ISR, origin: str, instance: str) -> None:
        self.rt = rt
        self.instance = instance

        @rt.with_revalidate("page:{slug}", ttl=300, tags=["pages"])
        async def page(slug: str) -> str | None:
            pages = json.loads(await anyio.Path(origin).read_text(encoding="utf-8"))
            text = pages.get(slug)
            if text is None:
                isr.no_store()  # a 404 is not cached: the page may be published any moment
            return None if text is None else str(text)

        self.page = page

    async def get_page(self, slug: str) -> Response:
        result = await self.page.lookup(slug)
        headers = {
            "x-cache": result.status.value,
            "age": str(int(result.age)),
            "x-instance": self.instance,
        }
        if result.value is None:
            return Response(404, f"<h1>No page {html.escape(slug)}</h1>\n", headers)
        return Response(200, f"<h1>{html.escape(result.value)}</h1>\n", headers)

    async def revalidate(self, query: str) -> Response:
        params = parse_qs(query, keep_blank_values=True)
        if any(len(values) > 1 for values in params.values()):
            return self.error(400, "give each parameter once")
        args = {name: values[0] for name, values in params.items()}
        mode = args.pop("mode", "expire")
        key, tag = args.pop("key", None), args.pop("tag", None)
        if args:
            return self.error(400, f"unknown parameter(s): {', '.join(sorted(args))}")
        if mode not in MODES:
            return self.error(400, f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if key and tag is None:
            count = int(await self.rt.invalidate(key, mode=MODES[mode]))
            target = {"key": key}
        elif tag and key is None:
            count = await self.rt.invalidate_tag(tag, mode=MODES[mode])
            target = {"tag": tag}
        else:
            return self.error(400, "give exactly one non-empty key= or tag=")
        body = {"instance": self.instance, **target, "mode": mode, "invalidated": count}
        return self.reply(200, body)

    def stats(self) -> Response:
        return self.reply(200, {"instance": self.instance, **dataclasses.asdict(self.rt.stats())})

    def reply(self, status: int, body: dict[str, Any]) -> Response:
        return Response(
            status,
            json.dumps(body) + "\n",
            {"content-type": "application/json", "x-instance": self.instance},
        )

    def error(self, status: int, message: str) -> Response:
        return self.reply(status, {"instance": self.instance, "error": message})


@dataclasses.dataclass
class Response:
    status: int
    body: str
    headers: dict[str, str]

    async def send(self, send: Send) -> None:
        body = self.body.encode()
        headers = {"content-type": "text/html; charset=utf-8", **self.headers}
        raw = [(k.encode(), v.encode()) for k, v in headers.items()]
        raw.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        await send({"type": "http.response.body", "body": body})


class App:
    """The ASGI application: the lifespan holds the runtime, requests use it."""

    def __init__(self) -> None:
        self.site: Site | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["type"] == "http":
            await (await self.route(scope)).send(send)

    async def route(self, scope: Scope) -> Response:
        site = self.site
        if site is None:
            return Response(503, "not started (run with --lifespan on)\n", {})
        method, path = scope["method"], scope["path"]
        if path.startswith("/page/") and len(path) > len("/page/"):
            if method != "GET":
                return site.error(405, "GET a page")
            return await site.get_page(path.removeprefix("/page/"))
        if path == "/revalidate":
            if method != "POST":
                return site.error(405, "POST to revalidate")
            return await site.revalidate(scope["query_string"].decode("latin-1"))
        if path == "/stats" and method == "GET":
            return site.stats()
        return site.error(404, f"no route {method} {path}")

    async def lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        try:
            env = os.environ
            instance, origin = env.get("INSTANCE", "replica"), env["ORIGIN"]
            runtime = isr.ISR.from_env(l1=True)
        except Exception as exc:
            await send({"type": "lifespan.startup.failed", "message": f"{exc!r}"})
            return
        async with runtime as rt:
            # Serve once the invalidation bus listens, so no publish from now on is missed.
            if not await rt.wait_ready(BUS_WAIT):
                logger.warning("the invalidation bus is not subscribed after %s s", BUS_WAIT)
            self.site = Site(rt, origin, instance)
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            assert message["type"] == "lifespan.shutdown"
            self.site = None
        await send({"type": "lifespan.shutdown.complete"})


app = App()
