"""One replica for the fault suite (tests/test_faults.py), run under uvicorn three times.

Like ``examples/replicas/app.py`` (whose `Response` it uses), with what the faults need: every
value carries the origin's version, so the tests judge what readers receive by its number;
two kinds of pages (bounded windows, and ``swr=None``); the loaders have a ``timeout``; every
invalidation strength is reachable over HTTP, invalidate-all included; the library's own
webhook is mounted. Configured from the environment:

- ``ISR_CACHE_URL``, ``ISR_NAMESPACE``: the shared Redis; every replica keeps an L1.
- ``INSTANCE``: this replica's name. ``ORIGIN``: a JSON file ``{slug: version}`` (a slug it
  does not list is at version 1), read on every fetch. ``WEBHOOK_SECRET``: the webhook's.

Routes (JSON answers, each naming the ``instance``):

- ``GET /page/{slug}`` (ttl 60 s, swr 60 s) and ``GET /classic/{slug}`` (ttl 60 s,
  ``swr=None``): ``{"slug", "version", "status"}``. Both carry the tags ``pages`` and
  ``slug:{slug}``; their keys are ``page:{slug}`` and ``classic:{slug}``; their loaders time
  out after 1 s.
- ``POST /invalidate?key=K`` or ``?tag=T`` or ``?all=1``, ``&mode=expire|revalidate|purge``:
  the runtime's ``invalidate``, ``invalidate_tag``, ``invalidate_all``. 200
  ``{"ok": true}``; 503 ``{"ok": false, "error"}`` with ``Retry-After`` when the runtime
  raises `isr.StoreUnavailable` (any other exception is uvicorn's 500).
- ``POST /webhook``: `isr.webhook.WebhookApp` (``Authorization: Bearer <secret>``).
- ``GET /stats``: `isr.ISR.stats`. ``GET /ready``: 200 once ``wait_ready`` says so, else 503.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any
from urllib.parse import parse_qs

import anyio

import isr
from examples.replicas.app import MODES, Message, Receive, Response, Scope, Send
from isr.webhook import WebhookApp

__all__ = ["app"]

#: The loaders' timeout (seconds): a read waits for the origin at most about this long.
LOADER_TIMEOUT = 1.0


class Replica:
    """What one replica serves, over its runtime ``rt``."""

    def __init__(self, rt: isr.ISR, origin: str, instance: str, secret: str) -> None:
        self.rt = rt
        self.instance = instance
        self.webhook = WebhookApp(runtime=rt, secret=secret)

        async def version(slug: str) -> dict[str, Any]:
            versions = json.loads(await anyio.Path(origin).read_text(encoding="utf-8"))
            return {"slug": slug, "version": int(versions.get(slug, 1))}

        tags = ["pages", "slug:{slug}"]

        @rt.with_revalidate("page:{slug}", ttl=60, swr=60, tags=tags, timeout=LOADER_TIMEOUT)
        async def page(slug: str) -> dict[str, Any]:
            return await version(slug)

        @rt.with_revalidate("classic:{slug}", ttl=60, swr=None, tags=tags, timeout=LOADER_TIMEOUT)
        async def classic(slug: str) -> dict[str, Any]:
            return await version(slug)

        self.loaders = {"page": page, "classic": classic}

    async def read(self, kind: str, slug: str) -> Response:
        result = await self.loaders[kind].lookup(slug)
        return self.reply(200, {**result.value, "status": result.status.value})

    async def invalidate(self, query: str) -> Response:
        params = {name: values[-1] for name, values in parse_qs(query).items()}
        mode = MODES[params.get("mode", "expire")]
        try:
            if "key" in params:
                await self.rt.invalidate(params["key"], mode)
            elif "tag" in params:
                await self.rt.invalidate_tag(params["tag"], mode)
            elif params.get("all") == "1":
                await self.rt.invalidate_all(mode)
            else:
                return self.reply(400, {"ok": False, "error": "give key=, tag= or all=1"})
        except isr.StoreUnavailable as exc:
            body = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            return self.reply(503, body, {"retry-after": "1"})
        return self.reply(200, {"ok": True})

    async def ready(self) -> Response:
        ready = await self.rt.wait_ready(0.5)
        return self.reply(200 if ready else 503, {"ready": ready})

    def stats(self) -> Response:
        return self.reply(200, dataclasses.asdict(self.rt.stats()))

    def reply(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> Response:
        headers = {"content-type": "application/json", **(headers or {})}
        return Response(status, json.dumps({"instance": self.instance, **body}), headers)


class App:
    """The ASGI application: the lifespan holds the runtime, requests use it."""

    def __init__(self) -> None:
        self.replica: Replica | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        replica = self.replica
        if scope["type"] != "http" or replica is None:
            return
        method, path = scope["method"], scope["path"]
        if method == "POST" and path == "/webhook":
            await replica.webhook(scope, receive, send)
            return
        kind, _, slug = path[1:].partition("/")
        if method == "GET" and kind in replica.loaders and slug:
            response = await replica.read(kind, slug)
        elif method == "POST" and path == "/invalidate":
            response = await replica.invalidate(scope["query_string"].decode("latin-1"))
        elif method == "GET" and path == "/ready":
            response = await replica.ready()
        elif method == "GET" and path == "/stats":
            response = replica.stats()
        else:
            response = replica.reply(404, {"error": f"no route {method} {path}"})
        await response.send(send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        message: Message = await receive()
        assert message["type"] == "lifespan.startup"
        env = os.environ
        async with isr.ISR.from_env(l1=True) as rt:
            if not await rt.wait_ready(10):
                await send({"type": "lifespan.startup.failed", "message": "Redis not ready"})
                return
            self.replica = Replica(rt, env["ORIGIN"], env["INSTANCE"], env["WEBHOOK_SECRET"])
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            assert message["type"] == "lifespan.shutdown"
            self.replica = None
        await send({"type": "lifespan.shutdown.complete"})


app = App()
