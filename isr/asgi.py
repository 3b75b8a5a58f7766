"""The HTTP edge: an ASGI middleware that serves whole pages through an `isr.ISR` runtime.

    from isr.asgi import ISRMiddleware, Rule

    rt = isr.ISR("redis://cache:6379/0", namespace="blog")
    app = ISRMiddleware(app, rt, [
        Rule("/posts/{slug}", ttl=60, tags=["posts", "post:{slug}"]),
        Rule("/", ttl=30, query=["page"], bypass_query=["search", "filter["]),
    ], origin="https://blog.example.com")
    ...
    await rt.invalidate_tag("post:hello")   # after a publish: the next request re-renders

Pure ASGI (no framework): it wraps any ASGI 3 app, Starlette, FastAPI, Litestar or Django's
``ASGIHandler``. Each rule's pages are rendered by a loader decorated with the runtime's
``with_revalidate``, so singleflight, stale-while-revalidate, stale-if-error, background
refresh and invalidation are the runtime's, as for any other cached function. The HTTP
policy (rules, keys, the canonical render, cacheability, headers, conditional requests) is
`isr._http`'s, shared with the WSGI middleware (`isr.wsgi`); this module only does ASGI's I/O.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from types import MethodType
from typing import Any
from urllib.parse import quote

import anyio

import isr
from isr._async.status import gather
from isr._entry import Entry
from isr._http import (
    BYPASS,
    ERROR_STATUSES,
    NOT_QUICK,
    SAFE_METHODS,
    SWR_UNBOUNDED,
    Canonical,
    Edge,
    IncompleteResponse,
    OriginError,
    Prepared,
    Response,
    Route,
    Rule,
    Target,
    age_header,
    canonical,
    incomplete_headers,
    join_fields,
    once_headers,
    path_tag,
    rendered,
    respond,
    unsafe_targets,
)
from isr._httpdate import http_date
from isr._statuspage import MAX_BODY as STATUS_MAX_BODY
from isr._statuspage import Render as StatusRender
from isr._statuspage import Request as StatusRequest
from isr._statuspage import StatusPage, joined_headers

__all__ = [
    "ERROR_STATUSES",
    "SWR_UNBOUNDED",
    "ASGIApp",
    "ISRMiddleware",
    "IncompleteResponse",
    "Message",
    "OriginError",
    "Receive",
    "Rule",
    "Scope",
    "Send",
    "StatusApp",
]

#: An ASGI connection scope (the ASGI 3 spec's ``scope`` dict).
Scope = MutableMapping[str, Any]
#: An ASGI event, sent or received.
Message = MutableMapping[str, Any]
#: The ASGI ``receive`` callable: awaits the next event.
Receive = Callable[[], Awaitable[Message]]
#: The ASGI ``send`` callable: sends one event.
Send = Callable[[Message], Awaitable[None]]
#: Any ASGI 3 app. Its arguments are ``Any`` at this boundary (and in the middleware's own
#: ``__call__``) because frameworks type them their own way: Litestar's TypedDict scopes and
#: events fit no ``MutableMapping`` signature, and mypy would refuse its apps here.
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

#: Pages kept ready to send (per middleware, one per key: see `_Wire`), and the bytes of
#: their bodies at most; the oldest prepared goes first.
_WIRES_KEPT = 1024
_WIRE_BYTES = 32 * 1024 * 1024
#: A HEAD's body message, kept as a wire's ``end`` is (copied for any app outside).
_END_EMPTY: dict[str, Any] = {"type": "http.response.body", "body": b""}
#: The modules of the servers whose ``RequestResponseCycle.send`` only reads the messages
#: it is sent and keeps none of them: uvicorn's two HTTP/1.1 implementations (as read in
#: uvicorn 0.54; tests/test_asgi_uvicorn.py serves through both). The quick path sends them
#: the messages it keeps (`_server_sends`).
_SERVERS = ("uvicorn.protocols.http.httptools_impl", "uvicorn.protocols.http.h11_impl")
#: What a render's scope takes from the scope the middleware was called with: the server's
#: deployment-level fields, and the plumbing a framework adds before its own middleware
#: run (Starlette's and Litestar's app and router, Litestar's resolved route: all of them
#: made from the app's configuration and the path, which is the key's). Nothing else
#: passes: not the client, not TLS details, not a session or user an outer middleware
#: decoded from the visitor's cookie, not a per-request state.
_DEPLOYMENT = (
    "asgi",
    "root_path",
    "server",
    "app",
    "router",
    "litestar_app",
    "route_handler",
    "path_params",
    "path_template",
)
#: A wire's last Age (`_Wire.aged`): the entry it is for, the clock readings it holds from
#: and before, and the HIT's start message carrying that ``Age``.
_Aged = tuple[object, float, float, dict[str, Any]]
#: What a render returns: a page to keep (a dict; JSON-encodable on a shared store) or a
#: `Response` served once (returned under ``isr.no_store()``, so never encoded).
_Page = dict[str, Any] | Response


class _Wire(Prepared):
    """A kept page ready for ASGI: `Prepared`'s headers, all those of a HIT but ``Age``
    (``hit``), its body's message (``end``), and the quick path's last ``Age`` with its
    HIT's start message (``aged``). The messages go as they are to a server's own send
    only, copied to anything else (`_server_sends`)."""

    __slots__ = ("aged", "end", "hit")

    def __init__(
        self, route: Route, page: dict[str, Any], surrogate_keys: bool, cache_tag_header: bool
    ) -> None:
        super().__init__(route, page, surrogate_keys, cache_tag_header)
        self.hit = (*self.head, *self.answers[isr.Status.HIT], *self.tail)
        self.end = {"type": "http.response.body", "body": self.body}
        # The quick path's last Age: (entry, from, until, start), the HIT's start message
        # for that entry while the clock reads from `from` to before `until` (`_Aged`); one
        # tuple, read and replaced whole, so that threads sharing a wire never see halves.
        self.aged: _Aged = (None, 0.0, 0.0, {})

    def age(self, entry: Entry, now: float, date: float | None) -> _Aged:
        """``entry``'s ``Age`` at ``now`` and its HIT's start message (its
        ``Last-Modified`` not after the server's ``date``), kept in `aged` for the second
        they hold."""
        age = int(now - entry.created)
        hit = self.hit
        if date is not None and int(date) < self.last_modified:
            hit = (*self.head[:-2], *self.with_date(date), *hit[len(self.head) :])
        headers = [*hit, age_header(age)]
        start = {"type": "http.response.start", "status": self.status, "headers": headers}
        self.aged = aged = (entry, entry.created + age, entry.created + age + 1, start)
        return aged


class ISRMiddleware(Edge[_Wire]):
    """Serve the GET and HEAD pages that ``rules`` match from ``runtime``'s cache.

    The first rule whose path matches decides; a path no rule matches, and websocket and
    lifespan scopes, pass through untouched. A matched request is answered from the cache
    unless it is not a GET or HEAD, carries ``Authorization``, carries a ``Cookie`` (unless
    ``private_ok``), has a ``bypass_query`` parameter, or (without ``origin``) names a host
    outside ``hosts``: then the app answers it as if the cache were not there, with
    ``X-Cache: BYPASS``. HEAD is answered from the GET page. Client ``Cache-Control:
    no-cache`` is ignored: clients cannot force renders.

    **Every render runs against a canonical request built from the page's key alone**
    (`isr._http.Canonical`), never from the visitor's: a miss, a background refresh and a
    revalidate all see the same request, whoever asked. The app receives this scope:

    ==================  ==========================================================
    ``type``            ``"http"``
    ``asgi``            the server's (deployment-level)
    ``http_version``    ``"1.1"``
    ``method``          ``"GET"``
    ``scheme``          ``origin``'s scheme, else the request's (part of the key)
    ``path``            the request's path (the key's)
    ``raw_path``        that path percent-encoded, as in the key
    ``query_string``    the rule's ``query`` parameters only, sorted, URL-encoded
    ``root_path``       the server's (deployment-level)
    ``headers``         ``host`` (``origin``'s host, else the request's, normalized),
                        ``user-agent: isr-runtime/<version>``, ``accept: */*``,
                        ``x-forwarded-host`` and ``x-forwarded-proto`` saying the same
                        origin, and the rule's ``vary`` headers with the keyed values
    ``client``          None
    ``server``          the server's (deployment-level)
    ``state``           a copy of the server's lifespan state (as its lifespan scope
                        passed through the middleware), else empty
    ``extensions``      none (no TLS details, no response extensions)
    framework plumbing  ``app``, ``router``, ``litestar_app``, ``route_handler``,
                        ``path_params``, ``path_template`` as the framework set them
                        (made from its configuration and the path, the key's), so
                        the middleware works inside Starlette's or Litestar's stack
    body                empty (one ``http.request`` message, then ``http.disconnect``
                        once the response is complete)
    ==================  ==========================================================

    Nothing else of the scope passes: not ``client``, not a ``session`` or ``user`` an
    outer middleware decoded from the visitor's cookie, not a per-request ``state``. So a
    query parameter, a cookie, ``Authorization``, ``X-Forwarded-*``,
    ``X-Original-URL``, ``User-Agent`` or ``Accept-Language`` (unless listed in ``vary``)
    can never shape a page that others are served, and a request crafted to make the app
    fail cannot make the page fail for everyone. ``origin="https://www.example.com"``
    (recommended) gives every render that scheme and host and keeps them out of the key;
    without it the request's scheme and normalized ``Host`` are part of the key, and
    ``hosts=[...]`` limits which hosts may fill the cache (a request for another host is
    the app's to answer, ``X-Cache: BYPASS``, as Django's ``ALLOWED_HOSTS`` would).

    The key is ``page:{path}`` with ``origin`` (``page:{scheme}://{host}{path}`` without;
    the path percent-encoded as in a URL, so ``rt.invalidate("page:/posts/hello")``
    works), plus ``#`` and a hash of the rule's ``query`` parameters (sorted) and the
    values of its ``vary`` headers when there are any; every variant of a path also
    carries the tag ``isr:path:{path}`` (`isr._http.path_tag`), which reaches them all.
    ``middleware.page_key(url, headers)`` computes a URL's key the same way (what ``isr
    explain --url`` and the status page's search use; `isr.ISR.explain` explains it).

    Only a complete 200 is kept, and only without ``Set-Cookie``, ``Cache-Control:
    private``, ``no-store`` or ``no-cache``, and with a ``Vary`` naming only headers the
    rule's ``vary`` lists: a response varying on anything else (``*`` and
    ``Accept-Encoding`` included) is never cached, so put compression outside this
    middleware, or list the header. The rule's windows replace the app's own freshness
    headers (``max-age``, ``Expires``). What is not kept goes to the request that rendered
    it with ``X-Cache: MISS`` and the app's headers; a private one is never handed to the
    other requests that waited for the same render: the app answers each of them itself.
    A 500, 502, 503 or 504 is a failed render (`OriginError`): the old page is served
    ``STALE-IF-ERROR`` while ``stale_if_error`` allows, else the app's error response goes
    out. A response the app leaves incomplete (it returns or raises after part of the body)
    is a failed render too (`IncompleteResponse`); without an old page the client gets
    what a plain server gives: the part sent, then the connection aborted. A 404 or 410 is
    the origin saying the page is gone: its key is purged (``stats().gone`` counts it) and
    the answer goes out; with the rule's ``negative_ttl`` it is kept that long instead. The
    app can add tags known only from its data with an ``X-Cache-Tags`` response header
    (comma-separated, each percent-encoded as in the page's own headers when it holds a
    comma, a space or a ``%``: `isr._http.declared_tags`).

    A page from the cache carries ``X-Cache`` (HIT, MISS, STALE, STALE-IF-ERROR), ``Age``
    (whole seconds since it was rendered), a strong ``ETag`` (the first 32 hex digits of
    the body's SHA-256: the same in every process), ``Last-Modified`` (when it was
    rendered, stored with it, so every answer from one render agrees, and never later
    than the ``Date`` uvicorn sends with it), ``Cache-Control: public, s-maxage=ttl,
    stale-while-revalidate=swr, stale-if-error=sie`` (``swr=None`` is sent as one year,
    ``SWR_UNBOUNDED``; a STALE or STALE-IF-ERROR answer says ``s-maxage=0``, so a CDN
    refetching it never keeps the old page as fresh), ``Vary`` (the rule's),
    ``X-Cache-Tags`` and, with ``surrogate_keys`` / ``cache_tag_header``, the tags as
    ``Surrogate-Key`` (space-separated: Fastly, Varnish xkey) and ``Cache-Tag``
    (comma-separated: Cloudflare), each tag encoded by `isr._tags.encode_tag` as the CDN
    purgers encode it. Conditional requests follow RFC 9110 section 13.2.2: a failing
    ``If-Match`` or ``If-Unmodified-Since`` gets a 412, a matching ``If-None-Match`` (or,
    without one, ``If-Modified-Since``) a 304 carrying the headers its 200 would.

    A request with any other method than GET, HEAD, OPTIONS or TRACE passes through; when
    the app answers it 2xx or 3xx, the pages at its path and at the ``Location`` and
    ``Content-Location`` it answers with (on the same origin) are invalidated (expired)
    before the answer goes out, every variant of them (RFC 9111 section 4.4).
    """

    def __init__(
        self,
        app: ASGIApp,
        runtime: isr.ISR,
        rules: Sequence[Rule],
        *,
        origin: str | None = None,
        hosts: Sequence[str] | None = None,
        surrogate_keys: bool = False,
        cache_tag_header: bool = False,
    ) -> None:
        self.app = app
        super().__init__(
            runtime,
            rules,
            origin,
            hosts,
            surrogate_keys,
            cache_tag_header,
            _WIRES_KEPT,
            _WIRE_BYTES,
        )
        # Sends that get the quick path's messages as kept, not copies (`_server_sends`).
        self._server_sends = _server_sends()
        self._date: tuple[object, float | None] = (None, None)
        # The server's lifespan state (seen as the lifespan scope passes), for renders.
        self._state: Any = None

    def _attach(self, route: Route) -> None:
        """Give ``route`` its loader: a render of the canonical request, by the runtime."""
        rule = route.rule

        @self.runtime.with_revalidate(
            "{request.key}",
            ttl=rule.ttl,
            swr=rule.swr,
            stale_if_error=rule.stale_if_error,
        )  # tags: `_render` gives them, the rule's and the app's, once it has both
        async def render(request: Canonical) -> _Page:
            return await self._render(route, request)

        route.lookup = render.lookup
        # Where the quick path counts its hits, so that stats() sees them; metrics name
        # the route's calls after its path.
        route.counter = render.__isr_loader__  # type: ignore[attr-defined]
        route.counter.label = rule.path

    # ------------------------------------------------------------------ serving

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:  # see ASGIApp
        if scope["type"] != "http":
            if scope["type"] == "lifespan":  # the lifespan state renders get a copy of
                self._state = scope.get("state")
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        raw_headers = scope["headers"]
        method = scope["method"]
        if self._origin is not None:
            try:
                target = self._paths[path]
            except KeyError:
                target = self.site.match(path)
        else:
            host = None
            for name, value in raw_headers:
                if name == b"host":
                    host = value.decode("latin-1")
                    break
            scheme = scope.get("scheme", "http")
            try:
                target = self._paths[(scheme, host, path)]
            except KeyError:
                target = self.site.match(path, scheme, host)
        if method != "GET" and method != "HEAD":
            self.passed(target)
            if method in SAFE_METHODS:
                send = send if target is None else _with_x_cache(send, b"BYPASS")
            else:  # an unsafe method: what it changed is invalidated once the app says so
                send = self._invalidating(scope, send, target)
            await self.app(scope, receive, send)
            return
        if target is None:
            await self.app(scope, receive, send)
            return
        if target is BYPASS:
            await self.app(scope, receive, _with_x_cache(send, b"BYPASS"))
            return
        route = target.route
        key = target.base
        # The quick path: a plain GET or HEAD (no Authorization, Cookie or validators) for
        # a page fresh in this process whose `_Wire` is ready, served by the hot-path rule of
        # adapters/base.py inline and answered here. Under a real server every step costs
        # several times what it costs in a tight loop (cold caches), and a call to Python
        # code more than this whole check: no request object, no header dict, no lookup
        # coroutine, no Result; the store's peek (a C dict lookup on the memory store) and
        # the clock. Anything else, a first answer in this process included, goes the full way.
        if route.quick:
            for name, _ in raw_headers:
                if name in NOT_QUICK:
                    break
            else:
                entry = self._peek(key)
                if entry is not None and entry.gen is self._store.gen:
                    now = self._clock()
                    if now < entry.fresh_until:
                        wire = self._wires.get(key)
                        # The page object is the entry's own: its wire is this key's, up to date.
                        if wire is not None and wire.page is entry.value:
                            entry.used = True
                            route.counter.edge_hits += 1
                            aged = wire.aged
                            if aged[0] is not entry or not aged[1] <= now < aged[2]:
                                aged = wire.age(entry, now, self._server_date(send))
                            start = aged[3]
                            end = wire.end if method == "GET" else _END_EMPTY
                            # The server's own send, which only reads what it is sent
                            # (`_server_sends`), gets the messages as kept; anything else
                            # (an app outside) gets copies it may edit.
                            if type(send) is not MethodType or (
                                send.__func__ not in self._server_sends
                            ):
                                start = start.copy()
                                start["headers"] = list(start["headers"])
                                end = end.copy()
                            await send(start)
                            await send(end)
                            return
        await self._full(scope, receive, send, target, method == "HEAD")

    async def _full(
        self, scope: Any, receive: Receive, send: Send, target: Target, head: bool
    ) -> None:
        """Answer a GET or HEAD for ``target`` through the runtime: bypass, lookup (which
        renders the canonical request on a miss), then the page, a 304, a 412 or what the
        render gave to serve once."""
        if self.bypassing(target):  # the cache is off: the app answers, as it came
            await self.app(scope, receive, _with_x_cache(send, b"BYPASS"))
            return
        route = target.route
        raw_headers = scope["headers"]
        headers: dict[bytes, bytes] = dict(raw_headers)
        if len(headers) != len(raw_headers):  # a repeated field: its values comma-joined
            headers = join_fields(raw_headers)
        deployment = {name: scope[name] for name in _DEPLOYMENT if name in scope}
        deployment["state"] = self._state
        raw_query: bytes = scope.get("query_string", b"")
        request = canonical(target, headers, raw_query.decode("latin-1"), deployment)
        if request is None:
            self.passed(target)
            await self.app(scope, receive, _with_x_cache(send, b"BYPASS"))
            return
        try:
            result = await route.lookup(request)
        except OriginError as exc:
            await self._send_once(exc.response, request, scope, receive, send, head)
            return
        except IncompleteResponse as exc:
            await _send_incomplete(exc, send, head)
            return
        if isinstance(result.value, Response):
            await self._send_once(result.value, request, scope, receive, send, head)
            return
        # A kept page: sent from its `_Wire`, prepared on its first answer in this process.
        wire = self._kept.ready(route, request.key, result.value)
        code, sent, body = respond(
            wire, result.status, int(result.age), headers, head, self._server_date(send)
        )
        await send({"type": "http.response.start", "status": code, "headers": sent})
        await send(wire.end.copy() if body else _END_EMPTY.copy())

    def _server_date(self, send: Any) -> float | None:
        """The ``Date`` the server answering through ``send`` will write, when it is uvicorn
        (whose date is the one of its last tick, up to a second behind the clock); None for
        other servers, which write the time they send at. Parsed once per new value."""
        if type(send) is not MethodType or send.__func__ not in self._server_sends:
            return None
        for name, value in getattr(send.__self__, "default_headers", ()):
            if name == b"date":
                kept = self._date
                if kept[0] is value:
                    return kept[1]
                date = http_date(value.decode("latin-1"))
                self._date = (value, date)
                return date
        return None

    def _make_wire(self, route: Route, page: dict[str, Any]) -> _Wire:
        # The server answering is loaded by now (a wire is made while it serves a request).
        self._server_sends = _server_sends()
        return _Wire(route, page, self._surrogate_keys, self._cache_tag_header)

    async def _send_once(
        self,
        response: Response,
        request: Canonical,
        scope: Any,
        receive: Receive,
        send: Send,
        head: bool,
    ) -> None:
        """Serve a response that is not kept, if it is this request's to have; else (a
        private response rendered for another request) let the app answer this one."""
        if not (response.shared or request.rendered):
            await self.app(scope, receive, _with_x_cache(send, b"MISS"))
            return
        headers = once_headers(response)
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else response.body})

    def _invalidating(self, scope: Any, send: Send, target: Any) -> Send:
        """``send`` for an unsafe request: a 2xx or 3xx start message first invalidates
        the pages it changed (`isr._http.unsafe_targets`), then goes out; so the client
        can never read the old page after seeing the answer."""
        path: str = scope["path"]
        scheme: str = scope.get("scheme", "http")
        host = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
                break
        send = send if target is None else _with_x_cache(send, b"BYPASS")

        async def invalidating(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", ())]
                for changed in unsafe_targets(status, headers, path, scheme, host, self._origin):
                    if any(route.pattern.fullmatch(changed) for route in self.site.routes):
                        await self.runtime.invalidate_tag(path_tag(changed))
            await send(message)

        return invalidating

    # ------------------------------------------------------------------ rendering

    async def _render(self, route: Route, request: Canonical) -> _Page:
        """Run the app for the canonical request; the page to keep, or what to serve once."""
        request.rendered = True
        status, headers, body = await _buffered(self.app, _render_scope(request))
        value, gone = rendered(route, request, status, headers, body, self._raw_bodies, time.time())
        if gone:
            await self.runtime.invalidate(request.key, mode="purge")
        return value


def _render_scope(request: Canonical) -> Scope:
    """The ASGI scope of a render: `Canonical`'s request, and the deployment's values (see
    `ISRMiddleware`'s table)."""
    deployment = request.deployment
    scope: dict[str, Any] = {
        **deployment,
        "type": "http",
        "asgi": deployment.get("asgi") or {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": request.scheme,
        "path": request.path,
        "raw_path": request.raw_path.encode("ascii"),
        "query_string": request.query_string.encode("ascii"),
        "root_path": deployment.get("root_path", ""),
        "headers": list(request.headers),
        "client": None,
        "server": deployment.get("server"),
        "extensions": {},
    }
    state = deployment.get("state")
    scope["state"] = dict(state) if isinstance(state, dict) else {}
    return scope


async def _buffered(app: ASGIApp, scope: Scope) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Run ``app`` for ``scope`` with an empty request body; its status, headers, body.
    Raises `IncompleteResponse` when the app started an answer and left it unfinished."""
    start: Message | None = None
    chunks: list[bytes] = []
    finished = anyio.Event()
    asked = False

    async def receive() -> Message:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        # Nobody disconnects from a render while it runs; once the response is complete
        # the "client" is gone, as a server says (Litestar's Stream waits for that).
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                finished.set()

    def incomplete(cause: BaseException | None) -> IncompleteResponse:
        assert start is not None
        return IncompleteResponse(
            scope["path"], int(start["status"]), _headers(start), b"".join(chunks), cause
        )

    try:
        await app(scope, receive, send)
    except Exception as exc:
        if start is None or finished.is_set():
            raise
        raise incomplete(exc) from exc
    finally:
        done = finished.is_set()
        finished.set()
    if start is None:
        raise RuntimeError(f"the app returned without a response for GET {scope['path']}")
    headers = _headers(start)
    body = b"".join(chunks)
    if not done or _short(headers, body):
        raise incomplete(None)
    return int(start["status"]), headers, body


def _headers(start: Message) -> list[tuple[bytes, bytes]]:
    return [(bytes(k).lower(), bytes(v)) for k, v in start.get("headers", ())]


def _short(headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
    """Did the app send less (or more) than the ``Content-Length`` it declared?"""
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value) != len(body)
            except ValueError:
                return True
    return False


async def _send_incomplete(exc: IncompleteResponse, send: Send, head: bool) -> None:
    """What a plain server gives for an app that left its response incomplete: the part
    it sent, without a length, then no end (the server aborts the connection); re-raise
    the app's exception, as the server would have seen it."""
    headers = incomplete_headers(exc)
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    if head:
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.body", "body": exc.body, "more_body": True})
    if exc.cause is not None:
        raise exc.cause


def _server_sends() -> frozenset[object]:
    """The ``send`` functions of the servers of `_SERVERS` loaded in this process (looked
    up, never imported). Such a server's send, given as a bound method, is the one the
    server handed the app: nothing outside the middleware can edit what it is sent, and the
    server only reads it, so the quick path saves two copies an answer (about 2% of a
    cached page's requests per second under uvicorn, `benchmarks.http_load`)."""
    sends = set()
    for name in _SERVERS:
        send = getattr(getattr(sys.modules.get(name), "RequestResponseCycle", None), "send", None)
        if send is not None:
            sends.add(send)
    return frozenset(sends)


def _with_x_cache(send: Send, status: bytes) -> Send:
    """``send`` that adds ``X-Cache: status`` to the response the app sends."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-cache"]
            headers.append((b"x-cache", status))
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


class StatusApp(StatusPage):
    """The status page as an ASGI app: live instances, recent invalidations with their
    confirmations, answers by function and page rule, and a search that explains a key or
    a path (`isr.ISR.explain`). Mount it where you like (any path it is called on shows the
    page); ``secret`` guards it, 16 characters at least: a browser signs in with a form
    that sets a session cookie (HttpOnly, SameSite=Strict, signed, ``session`` seconds,
    ``Secure`` on https or with ``secure_cookie=True``), a script sends ``Authorization:
    Bearer <secret>``. Server-rendered, escaped, no script, a strict
    ``Content-Security-Policy``, ``Cache-Control: no-store``; ``log_limit`` invalidations
    shown. See ``isr._statuspage`` for the choices; `isr.wsgi.StatusApp` is its twin."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        body, seen, more = b"", 0, True
        while more and seen <= 16 * STATUS_MAX_BODY:  # a larger one is left unread
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if len(body) <= STATUS_MAX_BODY:
                body += chunk
            more = message.get("more_body", False)
        headers = joined_headers(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]
        )
        raw = scope.get("raw_path")
        raw_path = (
            raw.decode("latin-1") if raw else quote(scope.get("root_path", "") + scope["path"])
        )
        request = StatusRequest(
            scope["method"],
            raw_path.partition("?")[0],
            scope.get("query_string", b"").decode("latin-1"),
            headers,
            body,
            scope.get("scheme") == "https",
        )
        step = self.decide(request, time.time())
        if isinstance(step, StatusRender):
            step = self.render(await gather(self, step.query))
        await send(
            {
                "type": "http.response.start",
                "status": step.status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in step.headers]
                + [(b"content-length", str(len(step.body)).encode())],
            }
        )
        await send(
            {"type": "http.response.body", "body": b"" if request.method == "HEAD" else step.body}
        )
