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
- ``POST /webhook``: `isr.webhook.WebhookApp` (``Authorization: Bearer <secret>``); a
  Strapi entry's event invalidates the tag ``slug:{slug}``.
- ``GET /stats``: `isr.ISR.stats`. ``GET /ready``: 200 once ``wait_ready`` says so, else 503.
- ``GET /instances``: ``{"me": its instance id, "instances": [...]}`` (`isr.ISR.instances`);
  ``POST /confirm?timeout=S``: `isr.ISR.confirm`, every id listed; ``GET /log?limit=N``:
  `isr.ISR.invalidation_log`. ``POST /slow?delay=S``: from now on, the replica's bus
  thread waits ``S`` seconds before it applies another instance's invalidation (a replica
  whose bus lags: a GC pause, a starved thread, a slow link); 0 ends it.

Optional: ``HEARTBEAT`` (seconds, the runtime's ``heartbeat``), ``CONFIRM_TIMEOUT`` (the
webhook's), ``PURGE_URL`` (a Varnish-style purge endpoint the webhook purges).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any
from urllib.parse import parse_qs

import anyio

import isr
from examples.replicas.app import MODES, Message, Receive, Response, Scope, Send
from isr.cdn import VarnishPurger
from isr.webhook import WebhookApp

__all__ = ["app"]

#: The loaders' timeout (seconds): a read waits for the origin at most about this long.
LOADER_TIMEOUT = 1.0


class Replica:
    """What one replica serves, over its runtime ``rt``."""

    def __init__(self, rt: isr.ISR, origin: str, instance: str, secret: str) -> None:
        self.rt = rt
        self.instance = instance
        env = os.environ
        purgers = [VarnishPurger(env["PURGE_URL"], retries=0)] if env.get("PURGE_URL") else []
        self.webhook = WebhookApp(
            runtime=rt,
            secret=secret,
            purgers=purgers,
            confirm_timeout=float(env.get("CONFIRM_TIMEOUT", "1.0")),
            tag_map={"*": ["slug:{slug}"]},  # a Strapi entry's page: the slug's tag
        )

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
        self.apply_delay = 0.0
        bus = rt.adapter.bus  # type: ignore[attr-defined]
        apply = bus._on_message

        def lagging(message: Any) -> None:
            if self.apply_delay:
                time.sleep(self.apply_delay)
            apply(message)

        bus._on_message = lagging

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

    async def instances(self) -> Response:
        found = [dataclasses.asdict(i) for i in await self.rt.instances()]
        return self.reply(200, {"me": self.rt.instance_id, "instances": found})

    async def confirm(self, query: str) -> Response:
        params = {name: values[-1] for name, values in parse_qs(query).items()}
        done = await self.rt.confirm(float(params.get("timeout", "1.0")))
        return self.reply(200, dataclasses.asdict(done))

    def slow(self, query: str) -> Response:
        params = {name: values[-1] for name, values in parse_qs(query).items()}
        self.apply_delay = float(params.get("delay", "0"))
        return self.reply(200, {"delay": self.apply_delay})

    async def log(self, query: str) -> Response:
        params = {name: values[-1] for name, values in parse_qs(query).items()}
        found = await self.rt.invalidation_log(int(params.get("limit", "50")))
        logged = [e.as_json() for e in found]
        return self.reply(200, {"log": logged})

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
        elif method == "GET" and path == "/instances":
            response = await replica.instances()
        elif method == "POST" and path == "/confirm":
            response = await replica.confirm(scope["query_string"].decode("latin-1"))
        elif method == "POST" and path == "/slow":
            response = replica.slow(scope["query_string"].decode("latin-1"))
        elif method == "GET" and path == "/log":
            response = await replica.log(scope["query_string"].decode("latin-1"))
        else:
            response = replica.reply(404, {"error": f"no route {method} {path}"})
        await response.send(send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        message: Message = await receive()
        assert message["type"] == "lifespan.startup"
        env = os.environ
        heartbeat = float(env.get("HEARTBEAT", "1.0"))
        async with isr.ISR.from_env(l1=True, heartbeat=heartbeat) as rt:
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
