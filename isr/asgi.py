"""The HTTP edge: an ASGI middleware that serves whole pages through an `isr.ISR` runtime.

    from isr.asgi import ISRMiddleware, Rule

    rt = isr.ISR("redis://cache:6379/0", namespace="blog")
    app = ISRMiddleware(app, rt, [
        Rule("/posts/{slug}", ttl=60, tags=["posts", "post:{slug}"]),
        Rule("/", ttl=30, query=["page"], bypass_query=["search", "filter["]),
    ])
    ...
    await rt.invalidate_tag("post:hello")   # after a publish: the next request re-renders

Pure ASGI (no framework): it wraps any ASGI 3 app, Starlette, FastAPI, Litestar or Django's
``ASGIHandler``. Each rule's pages are rendered by a loader decorated with the runtime's
``with_revalidate``, so singleflight, stale-while-revalidate, stale-if-error, background
refresh and invalidation are the runtime's, as for any other cached function. Only the
library's public API is used.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from types import MethodType
from typing import Any
from urllib.parse import parse_qsl, quote

import anyio

import isr
from isr._entry import Entry
from isr._httpdate import http_date
from isr._loader import Loader

__all__ = [
    "ERROR_STATUSES",
    "SWR_UNBOUNDED",
    "ASGIApp",
    "ISRMiddleware",
    "Message",
    "OriginError",
    "Receive",
    "Rule",
    "Scope",
    "Send",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: Any ASGI 3 app. Its arguments are ``Any`` at this boundary (and in the middleware's own
#: ``__call__``) because frameworks type them their own way: Litestar's TypedDict scopes and
#: events fit no ``MutableMapping`` signature, and mypy would refuse its apps here.
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

#: ``stale-while-revalidate`` sent for ``swr=None`` (stale without bound): one year, the
#: conventional "forever" of HTTP caching.
SWR_UNBOUNDED = 31_536_000
#: Statuses that count as a failed render (RFC 5861's stale-if-error errors): the runtime
#: keeps serving the old page and backs off, as for a loader that raised.
ERROR_STATUSES = frozenset({500, 502, 503, 504})

_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",  # the body is buffered: recomputed
    }
)
#: Not kept with a cached page: hop-by-hop, and what the edge generates on every answer
#: (validators, freshness, cache status, tags). Servers add ``Date`` themselves.
_NOT_STORED = _HOP_BY_HOP | {
    b"date",
    b"age",
    b"etag",
    b"last-modified",
    b"cache-control",
    b"expires",
    b"pragma",
    b"vary",
    b"x-cache",
    b"x-cache-tags",
    b"surrogate-key",
    b"surrogate-control",
    b"cache-tag",
}
#: Request headers a render never sees: the page is rendered whole, for everyone.
_CONDITIONAL = frozenset(
    {b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since", b"if-range"}
) | {b"range"}
#: Kept as they are in a key's path; anything else (``#`` included) is percent-encoded, so
#: that no path can spell another page's key.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(:path)?\}")
#: Paths whose rule matching is remembered (per middleware); past this the memory starts over.
_PATHS_KEPT = 4096
#: Pages kept ready to send (per middleware, one per key: see `_Wire`), and the bytes of
#: their bodies at most; the oldest prepared goes first.
_WIRES_KEPT = 1024
_WIRE_BYTES = 32 * 1024 * 1024
_HIT, _STALE, _STALE_IF_ERROR = isr.Status.HIT, isr.Status.STALE, isr.Status.STALE_IF_ERROR
#: Request headers that take a request off the quick path (`ISRMiddleware.__call__`).
_NOT_QUICK = frozenset({b"authorization", b"cookie", b"if-none-match", b"if-modified-since"})
#: ``Age`` headers for the first minutes, built once (`_age_header` writes the others).
_AGES = {age: (b"age", str(age).encode("latin-1")) for age in range(600)}
#: A HEAD's body message, kept as a wire's ``end`` is (copied for any app outside).
_END_EMPTY: dict[str, Any] = {"type": "http.response.body", "body": b""}
#: The modules of the servers whose ``RequestResponseCycle.send`` only reads the messages
#: it is sent and keeps none of them: uvicorn's two HTTP/1.1 implementations (as read in
#: uvicorn 0.54; tests/test_asgi_uvicorn.py serves through both). The quick path sends them
#: the messages it keeps (`_server_sends`).
_SERVERS = ("uvicorn.protocols.http.httptools_impl", "uvicorn.protocols.http.h11_impl")


@dataclass(frozen=True)
class Rule:
    """How the pages under one path pattern are cached.

    ``path``: ``"/posts/{slug}"`` (a parameter matches one segment; ``{name:path}`` matches
    the rest of the path, slashes included). ``ttl``, ``swr`` (None: serve stale without
    bound until re-rendered), ``stale_if_error``: the windows, as for ``with_revalidate``.
    ``tags``: templates over the path parameters (``"post:{slug}"``). ``query``: the query
    parameters that select a different page (all others are ignored for the key);
    ``bypass_query``: parameters whose presence skips the cache (``"search"``). A name in
    either ending in ``*`` or ``[`` is a prefix: ``"utm_*"``, ``"filter["`` (``filter[a]=1``).
    ``private_ok``: requests with a ``Cookie`` may be served from the cache (the page is
    then rendered without the cookie). ``vary``: request headers that select a different
    page (``"accept-language"``).
    """

    path: str
    ttl: float
    swr: float | None = None
    stale_if_error: float = 86400
    tags: Sequence[str] = ()
    query: Sequence[str] = ()
    bypass_query: Sequence[str] = ()
    private_ok: bool = False
    vary: Sequence[str] = ()

    def __post_init__(self) -> None:
        for name in ("tags", "query", "bypass_query", "vary"):
            value = getattr(self, name)
            items = (value,) if isinstance(value, str) else tuple(value)
            if not all(isinstance(item, str) and item for item in items):
                raise ValueError(f"Rule({self.path!r}): {name} takes non-empty strings")
            if name == "vary":
                items = tuple(item.lower() for item in items)
            object.__setattr__(self, name, items)


class OriginError(Exception):
    """The wrapped app answered 500, 502, 503 or 504 while rendering a page for the cache.

    The runtime treats it as a failed fetch: the old page is served (``STALE-IF-ERROR``),
    the key backs off, ``on_error`` hooks hear of it. Without an old page, the app's own
    error response goes to the client. ``status`` is the app's status code.
    """

    def __init__(self, path: str, response: _Response) -> None:
        super().__init__(f"GET {path} answered {response.status}")
        self.status = response.status
        self._response = response


class _Response:
    """A buffered response that is not kept: served as the app sent it. ``shared``: it may
    go to the other requests that waited for the same render (False when it is private:
    Set-Cookie, ``Cache-Control: private/no-store``, a Vary the key does not cover)."""

    __slots__ = ("body", "headers", "shared", "status")

    def __init__(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, shared: bool
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.shared = shared


#: What a render returns: a page to keep (a JSON-encodable dict) or a `_Response` served
#: once (returned under ``isr.no_store()``, so never encoded).
_Page = dict[str, Any] | _Response
#: A wire's last Age (`_Wire.aged`): the entry it is for, the clock readings it holds from
#: and before, and the HIT's start message carrying that ``Age``.
_Aged = tuple[object, float, float, dict[str, Any]]


class _Request:
    """The loader's argument: what a render needs, captured when the request arrived. A
    background refresh re-renders from it."""

    __slots__ = ("key", "params", "rendered", "scope")

    def __init__(self, key: str, params: dict[str, str], scope: Scope) -> None:
        self.key = key
        self.params = params
        self.scope = scope
        self.rendered = False  # set once a render ran for this very request


def _name_matcher(names: Sequence[str]) -> Callable[[str], bool] | None:
    """A predicate on query parameter names: exact, or prefix for names ending ``*``/``[``."""
    if not names:
        return None
    exact = frozenset(n for n in names if not n.endswith(("*", "[")))
    prefixes = tuple(n.removesuffix("*") for n in names if n.endswith(("*", "[")))
    if not prefixes:
        return exact.__contains__
    return lambda name: name in exact or name.startswith(prefixes)


def _compile_path(path: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    if not path.startswith("/"):
        raise ValueError(f"Rule path {path!r} must start with '/'")
    regex, names, pos = "", [], 0
    for m in _PARAM.finditer(path):
        regex += _literal(path, path[pos : m.start()])
        name = m.group(1)
        if name in names:
            raise ValueError(f"Rule path {path!r} names {{{name}}} twice")
        names.append(name)
        regex += f"(?P<{name}>.+)" if m.group(2) else f"(?P<{name}>[^/]+)"
        pos = m.end()
    regex += _literal(path, path[pos:])
    return re.compile(regex), tuple(names)


def _literal(path: str, text: str) -> str:
    if "{" in text or "}" in text:
        raise ValueError(f"Rule path {path!r}: parameters are {{name}} or {{name:path}}")
    return re.escape(text)


def _check_tag(rule: Rule, template: str, params: tuple[str, ...]) -> None:
    try:
        template.format_map(dict.fromkeys(params, "x"))
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise ValueError(
            f"Rule({rule.path!r}): tag {template!r} does not fit the path parameters "
            f"{list(params)}: {exc!r}"
        ) from None


def _seconds(value: float) -> int:
    return max(0, int(value))


class _Route:
    """A rule made ready: its pattern, matchers, header values and loader."""

    __slots__ = (
        "answers",
        "bypass",
        "cache_control",
        "counter",
        "lookup",
        "pattern",
        "plain",
        "private_ok",
        "query",
        "quick",
        "reads_query",
        "rule",
        "stale_cache_control",
        "vary",
        "vary_header",
    )

    def __init__(
        self,
        rule: Rule,
        pattern: re.Pattern[str],
        loader: isr.AsyncCached[[_Request], _Page],
    ) -> None:
        self.rule = rule
        self.pattern = pattern
        self.query = _name_matcher(rule.query)
        self.bypass = _name_matcher(rule.bypass_query)
        self.vary = tuple(name.encode("latin-1") for name in rule.vary)
        self.vary_header = ", ".join(rule.vary).encode("latin-1")
        swr = SWR_UNBOUNDED if rule.swr is None else _seconds(rule.swr)
        windows = f"stale-while-revalidate={swr}, stale-if-error={_seconds(rule.stale_if_error)}"
        self.cache_control = f"public, s-maxage={_seconds(rule.ttl)}, {windows}".encode("latin-1")
        # A stale answer must not become fresh downstream: after a revalidate mark its Age
        # can be under the ttl, and a CDN refetching on a soft purge would keep the old page.
        self.stale_cache_control = f"public, s-maxage=0, {windows}".encode("latin-1")
        # Every status's headers, built once.
        self.answers = {status: self.answer(status) for status in isr.Status}
        # The query string is read only for a rule that lists or bypasses parameters, and
        # the key is the path's alone without listed parameters or varied headers.
        self.reads_query = self.query is not None or self.bypass is not None
        self.plain = self.query is None and not self.vary
        self.private_ok = rule.private_ok
        self.lookup = loader.lookup
        # Where the quick path counts its hits, so that stats() sees them.
        self.counter: Loader[Any] = loader.__isr_loader__  # type: ignore[attr-defined]
        # Its hits can skip the query and the request's headers but for a glance (__call__).
        self.quick = self.plain and not self.reads_query

    def answer(self, status: isr.Status) -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
        """The ``Cache-Control`` and ``X-Cache`` headers of a page's answer with ``status``."""
        stale = status in (_STALE, _STALE_IF_ERROR)
        cache_control = self.stale_cache_control if stale else self.cache_control
        return (b"cache-control", cache_control), (b"x-cache", status.value.encode("latin-1"))

    def bypassed(self, query: list[tuple[str, str]]) -> bool:
        """Whether ``query`` holds a parameter that skips the cache (``bypass_query``)."""
        bypass = self.bypass
        return bypass is not None and any(bypass(name) for name, _ in query)

    def key(self, page: str, query: list[tuple[str, str]], headers: dict[bytes, bytes]) -> str:
        """``page`` (``page:{path}``, the path percent-encoded, as in a URL), plus ``#`` and
        a hash of the listed query parameters and varied headers when the rule has any."""
        listed = sorted(pair for pair in query if self.query(pair[0])) if self.query else []
        if not listed and not self.vary:
            return page
        varied = [headers.get(name, b"").decode("latin-1").strip() for name in self.vary]
        canonical = json.dumps([listed, varied], separators=(",", ":"))
        return f"{page}#{hashlib.sha256(canonical.encode()).hexdigest()[:16]}"


class _Wire:
    """A kept page as it goes out, encoded once: the headers of its 200 before and after
    the ones that change with each answer (``Cache-Control``, ``X-Cache``, ``Age``), those
    of its 304, all those of a HIT but ``Age`` (``hit``), its body and the body's message
    (``end``), and the quick path's last ``Age`` with its HIT's start message (``aged``).
    The messages go as they are to a server's own send only, copied to anything else
    (`_server_sends`). Valid for the page whose ``etag`` and ``time`` it carries."""

    __slots__ = (
        "aged",
        "body",
        "end",
        "etag",
        "head",
        "hit",
        "page",
        "route",
        "tail",
        "time",
        "validators",
    )

    def __init__(
        self, route: _Route, page: dict[str, Any], surrogate_keys: bool, cache_tag_header: bool
    ) -> None:
        self.route = route
        self.page = page
        self.etag: str = page["etag"]
        self.time: float = page["time"]
        self.body: bytes = page["body"].encode("latin-1")
        self.validators = (
            (b"etag", self.etag.encode("latin-1")),
            (b"last-modified", formatdate(self.time, usegmt=True).encode("latin-1")),
        )
        self.head = (
            *[(k.encode("latin-1"), v.encode("latin-1")) for k, v in page["headers"]],
            (b"content-length", str(len(self.body)).encode("latin-1")),
            *self.validators,
        )
        tail: list[tuple[bytes, bytes]] = []
        if route.vary:
            tail.append((b"vary", route.vary_header))
        tags: list[str] = page["tags"]
        if tags:  # UTF-8: a tag holds whatever the path parameter held
            tail.append((b"x-cache-tags", ",".join(tags).encode()))
            if surrogate_keys:
                tail.append((b"surrogate-key", " ".join(tags).encode()))
            if cache_tag_header:
                tail.append((b"cache-tag", ",".join(tags).encode()))
        self.tail = tuple(tail)
        self.hit = (*self.head, *route.answers[_HIT], *self.tail)
        self.end = {"type": "http.response.body", "body": self.body}
        # The quick path's last Age: (entry, from, until, start), the HIT's start message
        # for that entry while the clock reads from `from` to before `until` (`_Aged`); one
        # tuple, read and replaced whole, so that threads sharing a wire never see halves.
        self.aged: _Aged = (None, 0.0, 0.0, {})

    def age(self, entry: Entry, now: float) -> _Aged:
        """``entry``'s ``Age`` at ``now`` and its HIT's start message, kept in `aged` for
        the second they hold."""
        age = int(now - entry.created)
        headers = [*self.hit, _age_header(age)]
        start = {"type": "http.response.start", "status": 200, "headers": headers}
        self.aged = aged = (entry, entry.created + age, entry.created + age + 1, start)
        return aged


class ISRMiddleware:
    """Serve the GET and HEAD pages that ``rules`` match from ``runtime``'s cache.

    The first rule whose path matches decides; a path no rule matches, and websocket and
    lifespan scopes, pass through untouched. A matched request is answered from the cache
    unless it is not a GET or HEAD, carries ``Authorization``, carries a ``Cookie`` (unless
    ``private_ok``), or has a ``bypass_query`` parameter: then the app answers it as if the
    cache were not there, with ``X-Cache: BYPASS``. HEAD is answered from the GET page.
    Client ``Cache-Control: no-cache`` is ignored: clients cannot force renders.

    The key is ``page:{path}`` (the path percent-encoded as in a URL, so
    ``rt.invalidate("page:/posts/hello")`` works), plus ``#`` and a hash of the rule's
    ``query`` parameters (sorted) and the values of its ``vary`` headers when it has any;
    tags are the way to reach every variant. A miss runs the app for a copy of the request
    (method GET, conditional and Range headers removed, an empty body) and buffers its
    response; a background refresh does the same later.

    Only a 200 is kept, and only without ``Set-Cookie``, ``Cache-Control: private`` or
    ``no-store``, and with a ``Vary`` naming only headers the rule's ``vary`` lists: a
    response varying on anything else (``*`` and ``Accept-Encoding`` included) is never
    cached, so put compression outside this middleware, or list the header. The rule's
    windows replace the app's own freshness headers (``max-age``, ``Expires``). What is not
    kept goes to the request that rendered it with ``X-Cache: MISS`` and the app's headers;
    a private one is never handed to the other requests that waited for the same render:
    they ask the app themselves. A 500, 502, 503 or 504 is a failed render (`OriginError`):
    the old page is served ``STALE-IF-ERROR`` while ``stale_if_error`` allows, else the
    app's error response goes out. The app can add tags known only from its data with an
    ``X-Cache-Tags`` response header.

    A page from the cache carries ``X-Cache`` (HIT, MISS, STALE, STALE-IF-ERROR), ``Age``
    (whole seconds since it was rendered), a strong ``ETag`` (the first 32 hex digits of
    the body's SHA-256: the same in every process), ``Last-Modified`` (when it was
    rendered, stored with it, so every answer from one render agrees), ``Cache-Control:
    public, s-maxage=ttl, stale-while-revalidate=swr, stale-if-error=sie`` (``swr=None`` is
    sent as one year, `SWR_UNBOUNDED`; a STALE or STALE-IF-ERROR answer says ``s-maxage=0``,
    so a CDN refetching it never keeps the old page as fresh), ``Vary`` (the rule's),
    ``X-Cache-Tags`` (comma-separated), and with ``surrogate_keys`` / ``cache_tag_header``
    the tags as ``Surrogate-Key`` (space-separated: Fastly, Varnish xkey) and ``Cache-Tag``
    (comma-separated: Cloudflare). A matching ``If-None-Match`` (or, without one,
    ``If-Modified-Since``) gets a 304 without a body.
    """

    def __init__(
        self,
        app: ASGIApp,
        runtime: isr.ISR,
        rules: Sequence[Rule],
        *,
        surrogate_keys: bool = False,
        cache_tag_header: bool = False,
    ) -> None:
        self.app = app
        self.runtime = runtime
        self._surrogate_keys = surrogate_keys
        self._cache_tag_header = cache_tag_header
        self._routes = [self._route(rule) for rule in rules]
        # path -> (route, path parameters, "page:{quoted path}"), or None: no rule matches.
        self._paths: dict[str, tuple[_Route, dict[str, str], str] | None] = {}
        # key -> its page ready to send (see `_Wire`), in the order they were prepared.
        self._wires: dict[str, _Wire] = {}
        self._wire_bytes = 0
        self._wire_lock = threading.Lock()
        # The store's hot path, for the quick path in __call__ (rules never use xfetch).
        self._store = runtime.adapter
        self._peek = runtime.adapter.peek
        self._clock = runtime.clock
        # Sends that get the quick path's messages as kept, not copies (`_server_sends`).
        self._server_sends = _server_sends()

    @property
    def surrogate_keys(self) -> bool:
        """Send a page's tags as ``Surrogate-Key`` too."""
        return self._surrogate_keys

    @surrogate_keys.setter
    def surrogate_keys(self, value: bool) -> None:
        self._surrogate_keys = value
        self._forget_wires()

    @property
    def cache_tag_header(self) -> bool:
        """Send a page's tags as ``Cache-Tag`` too."""
        return self._cache_tag_header

    @cache_tag_header.setter
    def cache_tag_header(self, value: bool) -> None:
        self._cache_tag_header = value
        self._forget_wires()

    def _route(self, rule: Rule) -> _Route:
        pattern, params = _compile_path(rule.path)
        for template in rule.tags:
            _check_tag(rule, template, params)
        route: _Route

        @self.runtime.with_revalidate(
            "{request.key}",
            ttl=rule.ttl,
            swr=rule.swr,
            stale_if_error=rule.stale_if_error,
        )  # tags: `_render` gives them, the rule's and the app's, once it has both
        async def render(request: _Request) -> _Page:
            return await self._render(route, request)

        route = _Route(rule, pattern, render)
        return route

    # ------------------------------------------------------------------ serving

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:  # see ASGIApp
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        try:
            target = self._paths[path]
        except KeyError:
            target = self._match(path)
        if target is None:
            await self.app(scope, receive, send)
            return
        route, params, key = target
        raw_headers = scope["headers"]
        method = scope["method"]
        # The quick path: a plain GET or HEAD (no Authorization, Cookie or validators) for
        # a page fresh in this process whose `_Wire` is ready, served by the hot-path rule of
        # adapters/base.py inline and answered here. Under a real server every step costs
        # several times what it costs in a tight loop (cold caches), and a call to Python
        # code more than this whole check: no request object, no header dict, no lookup
        # coroutine, no Result; the store's peek (a C dict lookup on the memory store) and
        # the clock. Anything else, a first answer in this process included, goes the full way.
        if route.quick and (method == "GET" or method == "HEAD"):
            for name, _ in raw_headers:
                if name in _NOT_QUICK:
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
                                aged = wire.age(entry, now)
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
        head = method == "HEAD"
        headers: dict[bytes, bytes] = dict(raw_headers)
        if len(headers) != len(raw_headers):  # a repeated field: its values comma-joined
            headers = {}
            for name, value in raw_headers:
                headers[name] = headers[name] + b"," + value if name in headers else value
        if (
            (method != "GET" and not head)
            or b"authorization" in headers
            or (b"cookie" in headers and not route.private_ok)
        ):
            await self.app(scope, receive, _with_x_cache(send, b"BYPASS"))
            return
        if not route.quick:
            raw_query: bytes = scope.get("query_string", b"")
            query = (
                parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True)
                if raw_query and route.reads_query
                else []
            )
            if route.bypassed(query):
                await self.app(scope, receive, _with_x_cache(send, b"BYPASS"))
                return
            if not route.plain:
                key = route.key(key, query, headers)
        request = _Request(key, params, scope)
        try:
            result = await route.lookup(request)
        except OriginError as exc:
            await self._send_once(exc._response, request, receive, send, head)
            return
        if isinstance(result.value, _Response):
            await self._send_once(result.value, request, receive, send, head)
            return
        page: dict[str, Any] = result.value
        status = result.status
        cache_control, x_cache = route.answers[status]
        age = int(result.age)
        # A kept page: sent from its `_Wire`, prepared on its first answer in this process
        # (the same page object on a memory store; an equal one decoded from a shared one,
        # which the wire takes up, as the quick path knows a wire's page by identity).
        wire = self._wires.get(key)
        if wire is None or wire.route is not route:
            wire = self._wire(route, key, page)
        elif wire.page is not page:
            if wire.time != page["time"] or wire.etag != page["etag"]:
                wire = self._wire(route, key, page)
            else:
                wire.page = page
        age_header = _age_header(age)
        if (b"if-none-match" in headers or b"if-modified-since" in headers) and _not_modified(
            headers, wire.etag, wire.time
        ):
            await send(
                {
                    "type": "http.response.start",
                    "status": 304,
                    "headers": [*wire.validators, cache_control, x_cache, *wire.tail, age_header],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*wire.head, cache_control, x_cache, *wire.tail, age_header],
            }
        )
        await send((_END_EMPTY if head else wire.end).copy())

    def _match(self, path: str) -> tuple[_Route, dict[str, str], str] | None:
        """The first rule matching ``path``, remembered: its route, the path's parameters
        and its key without query or vary part (``page:{path}``, percent-encoded)."""
        target: tuple[_Route, dict[str, str], str] | None = None
        for route in self._routes:
            match = route.pattern.fullmatch(path)
            if match is not None:
                # The parameters are shared by the path's requests: read, never written.
                target = (route, match.groupdict(), "page:" + quote(path, safe=_PATH_SAFE))
                break
        paths = self._paths
        if len(paths) >= _PATHS_KEPT:
            paths.clear()
        paths[path] = target
        return target

    def _wire(self, route: _Route, key: str, page: dict[str, Any]) -> _Wire:
        """``page`` ready to send, kept for the next answers under ``key`` while the memory
        for prepared pages allows (the oldest prepared make room)."""
        wire = _Wire(route, page, self._surrogate_keys, self._cache_tag_header)
        # The server answering is loaded by now (a wire is made while it serves a request).
        self._server_sends = _server_sends()
        size = len(wire.body)
        wires = self._wires
        with self._wire_lock:
            old = wires.pop(key, None)
            if old is not None:
                self._wire_bytes -= len(old.body)
            if size > _WIRE_BYTES:
                return wire
            while wires and (len(wires) >= _WIRES_KEPT or self._wire_bytes + size > _WIRE_BYTES):
                self._wire_bytes -= len(wires.pop(next(iter(wires))).body)
            wires[key] = wire
            self._wire_bytes += size
        return wire

    def _forget_wires(self) -> None:
        with self._wire_lock:
            self._wires.clear()
            self._wire_bytes = 0

    async def _send_once(
        self, response: _Response, request: _Request, receive: Receive, send: Send, head: bool
    ) -> None:
        """Serve a response that is not kept, if it is this request's to have; else (a
        private response rendered for another request) let the app answer this one."""
        if not (response.shared or request.rendered):
            await self.app(request.scope, receive, _with_x_cache(send, b"MISS"))
            return
        headers = [(k, v) for k, v in response.headers if k not in _HOP_BY_HOP and k != b"x-cache"]
        headers.append((b"content-length", str(len(response.body)).encode()))
        headers.append((b"x-cache", b"MISS"))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else response.body})

    # ------------------------------------------------------------------ rendering

    async def _render(self, route: _Route, request: _Request) -> _Page:
        """Run the app for a copy of the request; the page to keep, or what to serve once."""
        request.rendered = True
        scope = _render_scope(request.scope, drop_cookie=route.private_ok)
        status, headers, body = await _buffered(self.app, scope)
        private = _private(headers, route.rule.vary)
        if status in ERROR_STATUSES:
            raise OriginError(scope["path"], _Response(status, headers, body, not private))
        if status != 200 or private:
            isr.no_store()
            return _Response(status, headers, body, not private)
        tags = [template.format_map(request.params) for template in route.rule.tags]
        declared = [
            tag.strip()
            for name, value in headers
            if name == b"x-cache-tags"
            for tag in value.decode(errors="replace").split(",")
            if tag.strip()
        ]
        if declared:
            tags = list(dict.fromkeys(tags + declared))
        if tags:
            isr.cache_tag(*tags)
        return {
            "headers": [
                [k.decode("latin-1"), v.decode("latin-1")]
                for k, v in headers
                if k not in _NOT_STORED
            ],
            # Bytes as latin-1 text: one char per byte, copied both ways at memcpy speed
            # (base64 decoding costs more than the rest of a hit); in the store's UTF-8
            # JSON an ASCII page keeps its size.
            "body": body.decode("latin-1"),
            "etag": f'"{hashlib.sha256(body).hexdigest()[:32]}"',
            "time": time.time(),
            "tags": tags,
        }


def _render_scope(scope: Scope, *, drop_cookie: bool) -> Scope:
    """A copy of the request to render the page for everyone: GET, no conditional headers
    (the app must answer in full), no cookie when the rule lets cookies in, and no
    response extensions the buffering cannot take (pathsend, zerocopysend, trailers)."""
    copy = dict(scope)
    copy["method"] = "GET"
    copy["headers"] = [
        (name, value)
        for name, value in scope["headers"]
        if name not in _CONDITIONAL and not (drop_cookie and name == b"cookie")
    ]
    extensions = scope.get("extensions")
    if extensions:
        copy["extensions"] = {
            name: value
            for name, value in extensions.items()
            if not name.startswith("http.response.")
        }
    state = scope.get("state")
    if isinstance(state, dict):
        copy["state"] = dict(state)
    return copy


async def _buffered(app: ASGIApp, scope: Scope) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Run ``app`` for ``scope`` with an empty request body; its status, headers, body."""
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

    try:
        await app(scope, receive, send)
    finally:
        finished.set()
    if start is None:
        raise RuntimeError(f"the app returned without a response for GET {scope['path']}")
    headers = [(bytes(k).lower(), bytes(v)) for k, v in start.get("headers", ())]
    return int(start["status"]), headers, b"".join(chunks)


def _private(headers: Iterable[tuple[bytes, bytes]], vary: Sequence[str]) -> bool:
    """Is this response for its own request only: cookies, private/no-store, or a Vary the
    key does not cover?"""
    for name, value in headers:
        if name == b"set-cookie":
            return True
        if name == b"cache-control":
            for directive in value.decode("latin-1").split(","):
                if directive.split("=", 1)[0].strip().lower() in ("private", "no-store"):
                    return True
        elif name == b"vary":
            for field in value.decode("latin-1").split(","):
                field = field.strip().lower()
                if field and field not in vary:
                    return True
    return False


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


def _age_header(age: int) -> tuple[bytes, bytes]:
    """The ``Age`` header for ``age`` seconds: ready-made from `_AGES`, else written out (a
    negative one, from a store shared with a clock slightly ahead, is sent as 0)."""
    return _AGES.get(age) or (b"age", b"%d" % max(0, age))


def _not_modified(headers: dict[bytes, bytes], etag: str, rendered: float) -> bool:
    """RFC 9110 section 13.2.2: If-None-Match (weak comparison) wins over If-Modified-Since."""
    inm = headers.get(b"if-none-match")
    if inm is not None:
        text = inm.decode("latin-1").strip()
        if text == "*":
            return True
        return any(tag.strip().removeprefix("W/") == etag for tag in text.split(","))
    ims = headers.get(b"if-modified-since")
    if ims is not None:
        since = http_date(ims.decode("latin-1"))
        return since is not None and int(rendered) <= since
    return False


def _with_x_cache(send: Send, status: bytes) -> Send:
    """``send`` that adds ``X-Cache: status`` to the response the app sends."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-cache"]
            headers.append((b"x-cache", status))
            message = {**message, "headers": headers}
        await send(message)

    return wrapped
