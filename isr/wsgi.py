"""The HTTP edge for WSGI: a middleware that serves whole pages through an `isr.ISR` runtime.

    from isr.wsgi import ISRMiddleware, Rule

    rt = isr.ISR("redis://cache:6379/0", namespace="blog")
    app.wsgi_app = ISRMiddleware(app.wsgi_app, runtime=rt, rules=[      # Flask
        Rule("/posts/{slug}", ttl=60, tags=["posts", "post:{slug}"]),
    ], origin="https://blog.example.com")
    application = ISRMiddleware(get_wsgi_application(), runtime=rt, rules=[...])  # Django

The same rules, keys, headers, statuses, conditional requests, privacy rules and canonical
renders as `isr.asgi.ISRMiddleware` (one policy: `isr._http`); this module only does
WSGI's I/O. Pages are rendered by sync loaders (``runtime.with_revalidate`` on a plain
function): a miss renders in the request's thread, a background refresh in the runtime's
refresh pool, each with a canonical environ, so Flask's application context and Django's
request handling work there as in any request. ``isr.wsgi.WebhookApp`` is the CMS webhook
as a WSGI app (`isr.webhook.WebhookWSGIApp`), to mount beside it.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from http import HTTPStatus
from types import TracebackType
from typing import Any
from urllib.parse import quote

import isr
from isr._entry import Entry
from isr._http import (
    BYPASS,
    SAFE_METHODS,
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
    once_headers,
    path_tag,
    rendered,
    respond,
    unsafe_targets,
)
from isr._statuspage import MAX_BODY as STATUS_MAX_BODY
from isr._statuspage import Render as StatusRender
from isr._statuspage import Request as StatusRequest
from isr._statuspage import StatusPage, joined_headers
from isr._sync.status import gather
from isr.webhook import WebhookWSGIApp as WebhookApp

__all__ = [
    "Environ",
    "ISRMiddleware",
    "IncompleteResponse",
    "OriginError",
    "Rule",
    "StartResponse",
    "StatusApp",
    "WSGIApp",
    "WebhookApp",
]

#: A WSGI environ (PEP 3333).
Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
#: The WSGI ``start_response`` callable (PEP 3333).
StartResponse = Callable[..., Callable[[bytes], object]]
#: Any WSGI app (PEP 3333).
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

#: Pages kept ready to send (per middleware), and the bytes of their bodies at most.
_WIRES_KEPT = 1024
_WIRE_BYTES = 32 * 1024 * 1024
#: The environ keys of the request headers that take a request off the quick path.
_NOT_QUICK = (
    "HTTP_AUTHORIZATION",
    "HTTP_COOKIE",
    "HTTP_IF_NONE_MATCH",
    "HTTP_IF_MODIFIED_SINCE",
    "HTTP_IF_MATCH",
    "HTTP_IF_UNMODIFIED_SINCE",
)
#: What a render's environ takes from the environ the middleware was called with: the
#: server's deployment-level values, which no visitor controls. Nothing else passes: not
#: ``REMOTE_ADDR``, not the server's own extras (``gunicorn.socket`` is the visitor's
#: connection), not ``SERVER_NAME`` (gunicorn takes it from the ``Host`` header).
_DEPLOYMENT = ("SCRIPT_NAME", "wsgi.errors", "wsgi.multithread", "wsgi.multiprocess")
_Page = dict[str, Any] | Response
#: A wire's last Age: the entry it is for, the clock readings it holds from and before,
#: and the HIT's headers carrying that ``Age``.
_Aged = tuple[object, float, float, list[tuple[str, str]]]


def _status_line(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return f"{code} Unknown"


def _native(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Headers as WSGI wants them: native strings holding latin-1."""
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]


class _Wire(Prepared):
    """A kept page ready for WSGI: `Prepared`'s headers as native strings, its status
    line, and the quick path's last ``Age`` with its HIT's headers (``aged``)."""

    __slots__ = ("aged", "hit", "status_line")

    def __init__(
        self, route: Route, page: dict[str, Any], surrogate_keys: bool, cache_tag_header: bool
    ) -> None:
        super().__init__(route, page, surrogate_keys, cache_tag_header)
        self.status_line = _status_line(self.status)
        self.hit = _native((*self.head, *self.answers[isr.Status.HIT], *self.tail))
        self.aged: _Aged = (None, 0.0, 0.0, [])

    def age(self, entry: Entry, now: float) -> _Aged:
        """``entry``'s ``Age`` at ``now`` and its HIT's headers, kept for the second."""
        age = int(now - entry.created)
        headers = [*self.hit, ("age", age_header(age)[1].decode("latin-1"))]
        self.aged = aged = (entry, entry.created + age, entry.created + age + 1, headers)
        return aged


class ISRMiddleware(Edge[_Wire]):
    """Serve the GET and HEAD pages that ``rules`` match from ``runtime``'s cache (WSGI).

    Everything `isr.asgi.ISRMiddleware` says holds here (matching, bypass, keys, the
    canonical render, what is kept, headers, conditional requests, 404/410, unsafe methods);
    ``origin``, ``hosts``, ``surrogate_keys`` and ``cache_tag_header`` mean the same. The
    path is ``PATH_INFO`` (the app's own, below ``SCRIPT_NAME``). A render gets this
    environ, built from the page's key alone:

    ========================  ====================================================
    ``REQUEST_METHOD``        ``"GET"``
    ``SCRIPT_NAME``           the server's (deployment-level)
    ``PATH_INFO``             the request's path (the key's)
    ``QUERY_STRING``          the rule's ``query`` parameters only, sorted, URL-encoded
    ``RAW_URI``, ``REQUEST_URI``  that path, percent-encoded as in the key, and query
    ``SERVER_NAME``, ``SERVER_PORT``  the canonical host's name and port
    ``SERVER_PROTOCOL``       ``"HTTP/1.1"``
    ``REMOTE_ADDR``           ``""`` (no client)
    ``HTTP_HOST``             ``origin``'s host, else the request's, normalized
    ``HTTP_USER_AGENT``       ``isr-runtime/<version>``
    ``HTTP_ACCEPT``           ``*/*``
    ``HTTP_X_FORWARDED_HOST``, ``HTTP_X_FORWARDED_PROTO``  the same origin
    ``HTTP_<VARY>``           the rule's ``vary`` headers, the keyed values
    ``wsgi.url_scheme``       ``origin``'s scheme, else the request's
    ``wsgi.input``            an empty stream (``wsgi.input_terminated``: True)
    ``wsgi.errors``, ``wsgi.multithread``, ``wsgi.multiprocess``  the server's
    ``wsgi.run_once``         False
    ========================  ====================================================

    No cookie, no ``Authorization``, no ``CONTENT_*``, no ``wsgi.file_wrapper`` and none of
    the server's own keys. The app's iterable is always closed: after a render (also when
    it raised), and for what passes through, by the server as usual. A streamed response
    is buffered into the page. A response left incomplete (the iterable raised after the
    headers) is never kept; without an old page to serve instead, the client gets the
    part sent, then the iterable raises as the app's did, and the server aborts the
    connection. ``wsgi.file_wrapper`` is not offered to renders, so a file response is
    iterated and kept like any other.
    """

    def __init__(
        self,
        app: WSGIApp,
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

    def _attach(self, route: Route) -> None:
        """Give ``route`` its sync loader: a render of the canonical request."""
        rule = route.rule

        @self.runtime.with_revalidate(
            "{request.key}", ttl=rule.ttl, swr=rule.swr, stale_if_error=rule.stale_if_error
        )
        def render(request: Canonical) -> _Page:
            return self._render(route, request)

        route.lookup = render.lookup
        route.counter = render.__isr_loader__  # type: ignore[attr-defined]
        route.counter.label = rule.path  # metrics name the route's calls after its path

    # ------------------------------------------------------------------ serving

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method: str = environ["REQUEST_METHOD"]
        path = _path(environ)
        if self._origin is not None:
            try:
                target = self._paths[path]
            except KeyError:
                target = self.site.match(path)
        else:
            host: str | None = environ.get("HTTP_HOST")
            scheme: str = environ.get("wsgi.url_scheme", "http")
            try:
                target = self._paths[(scheme, host, path)]
            except KeyError:
                target = self.site.match(path, scheme, host)
        if method != "GET" and method != "HEAD":
            self.passed(target)
            if method in SAFE_METHODS:
                if target is not None:
                    start_response = _with_x_cache(start_response, "BYPASS")
            else:
                start_response = self._invalidating(environ, start_response, target, path)
            return self.app(environ, start_response)
        if target is None:
            return self.app(environ, start_response)
        if target is BYPASS:
            return self.app(environ, _with_x_cache(start_response, "BYPASS"))
        route = target.route
        if route.quick:
            # The quick path (see isr.asgi): a plain GET or HEAD for a page fresh in this
            # process whose `_Wire` is ready, by the hot-path rule of adapters/base.py.
            for name in _NOT_QUICK:
                if name in environ:
                    break
            else:
                key = target.base
                entry = self._peek(key)
                if entry is not None and entry.gen is self._store.gen:
                    now = self._clock()
                    if now < entry.fresh_until:
                        wire = self._wires.get(key)
                        if wire is not None and wire.page is entry.value:
                            entry.used = True
                            route.counter.edge_hits += 1
                            aged = wire.aged
                            if aged[0] is not entry or not aged[1] <= now < aged[2]:
                                aged = wire.age(entry, now)
                            start_response(wire.status_line, aged[3].copy())
                            return [wire.body] if method == "GET" else []
        return self._full(environ, start_response, target, method == "HEAD")

    def _full(
        self, environ: Environ, start_response: StartResponse, target: Target, head: bool
    ) -> Iterable[bytes]:
        """Answer a GET or HEAD for ``target`` through the runtime (see isr.asgi)."""
        if self.bypassing(target):  # the cache is off: the app answers, as it came
            return self.app(environ, _with_x_cache(start_response, "BYPASS"))
        route = target.route
        headers = _headers(environ)
        deployment = {name: environ[name] for name in _DEPLOYMENT if name in environ}
        request = canonical(target, headers, environ.get("QUERY_STRING", ""), deployment)
        if request is None:
            self.passed(target)
            return self.app(environ, _with_x_cache(start_response, "BYPASS"))
        try:
            result = route.lookup(request)
        except OriginError as exc:
            return self._send_once(exc.response, request, environ, start_response, head)
        except IncompleteResponse as exc:
            return _send_incomplete(exc, start_response, head)
        if isinstance(result.value, Response):
            return self._send_once(result.value, request, environ, start_response, head)
        wire = self._kept.ready(route, request.key, result.value)
        # The server writes its own Date when it sends (gunicorn), never before the render.
        code, sent, body = respond(wire, result.status, int(result.age), headers, head, None)
        start_response(_status_line(code), _native(sent))
        return [wire.body] if body else []

    def _make_wire(self, route: Route, page: dict[str, Any]) -> _Wire:
        return _Wire(route, page, self._surrogate_keys, self._cache_tag_header)

    def _send_once(
        self,
        response: Response,
        request: Canonical,
        environ: Environ,
        start_response: StartResponse,
        head: bool,
    ) -> Iterable[bytes]:
        """Serve a response that is not kept, if it is this request's to have; else (a
        private response rendered for another request) let the app answer this one."""
        if not (response.shared or request.rendered):
            return self.app(environ, _with_x_cache(start_response, "MISS"))
        start_response(_status_line(response.status), _native(once_headers(response)))
        return [] if head else [response.body]

    def _invalidating(
        self, environ: Environ, start_response: StartResponse, target: Any, path: str
    ) -> StartResponse:
        """``start_response`` for an unsafe request: a 2xx or 3xx answer first invalidates
        the pages it changed (`isr._http.unsafe_targets`), then goes to the server."""
        scheme: str = environ.get("wsgi.url_scheme", "http")
        host: str | None = environ.get("HTTP_HOST")
        if target is not None:
            start_response = _with_x_cache(start_response, "BYPASS")
        routes = self.site.routes
        invalidate = self.runtime.invalidate_tag_sync

        def invalidating(
            status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
            code = int(status.split(None, 1)[0])
            for changed in unsafe_targets(code, raw, path, scheme, host, self._origin):
                if any(route.pattern.fullmatch(changed) for route in routes):
                    invalidate(path_tag(changed))
            return start_response(status, headers, exc_info)

        return invalidating

    # ------------------------------------------------------------------ rendering

    def _render(self, route: Route, request: Canonical) -> _Page:
        """Run the app for the canonical request; the page to keep, or what to serve once."""
        request.rendered = True
        status, headers, body = _buffered(self.app, _render_environ(request))
        value, gone = rendered(route, request, status, headers, body, self._raw_bodies, time.time())
        if gone:
            self.runtime.invalidate_sync(request.key, mode="purge")
        return value


def _path(environ: Environ) -> str:
    """``PATH_INFO`` as text: PEP 3333 gives the URL-decoded bytes as latin-1."""
    raw: str = environ.get("PATH_INFO", "") or "/"
    try:
        return raw.encode("latin-1").decode("utf-8", errors="replace")
    except UnicodeEncodeError:  # a server that gave text already
        return raw


def _headers(environ: Environ) -> dict[bytes, bytes]:
    """The request's header fields by lower-case name (the server joined repeated ones)."""
    headers: dict[bytes, bytes] = {}
    for name, value in environ.items():
        if name.startswith("HTTP_"):
            field = name[5:].replace("_", "-").lower().encode("latin-1")
            headers[field] = str(value).encode("latin-1", errors="replace")
    return headers


def _render_environ(request: Canonical) -> Environ:
    """The WSGI environ of a render (see `ISRMiddleware`'s table)."""
    deployment = request.deployment
    raw = request.raw_path + ("?" + request.query_string if request.query_string else "")
    environ: Environ = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": deployment.get("SCRIPT_NAME", ""),
        "PATH_INFO": request.path.encode("utf-8").decode("latin-1"),
        "QUERY_STRING": request.query_string,
        "RAW_URI": raw,
        "REQUEST_URI": raw,
        "SERVER_NAME": request.hostname,
        "SERVER_PORT": request.port,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": request.scheme,
        "wsgi.input": io.BytesIO(b""),
        "wsgi.input_terminated": True,
        "wsgi.errors": deployment.get("wsgi.errors", sys.stderr),
        "wsgi.multithread": deployment.get("wsgi.multithread", True),
        "wsgi.multiprocess": deployment.get("wsgi.multiprocess", False),
        "wsgi.run_once": False,
    }
    for name, value in request.headers:
        environ["HTTP_" + name.decode("latin-1").upper().replace("-", "_")] = value.decode(
            "latin-1"
        )
    return environ


def _buffered(app: WSGIApp, environ: Environ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Run ``app`` for ``environ`` and read its whole answer; always close its iterable.
    Raises `IncompleteResponse` when the iterable raised once the headers were given."""
    started: list[tuple[str, list[tuple[str, str]]]] = []
    chunks: list[bytes] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], object]:
        # Nothing is sent before the body is complete, so a later call (with exc_info,
        # after an error) simply replaces the status and headers, as PEP 3333 allows.
        started[:] = [(status, list(headers))]
        return chunks.append

    def answer() -> tuple[int, list[tuple[bytes, bytes]]]:
        status, headers = started[0]
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        return int(status.split(None, 1)[0]), raw

    result = app(environ, start_response)
    try:
        chunks.extend(map(bytes, result))  # what was read stays when the iterable raises
    except Exception as exc:
        if not started:
            raise
        code, headers = answer()
        raise IncompleteResponse(
            environ["PATH_INFO"], code, headers, b"".join(chunks), exc
        ) from exc
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    if not started:
        raise RuntimeError(f"the app returned without a response for GET {environ['PATH_INFO']}")
    code, headers = answer()
    body = b"".join(chunks)
    for name, value in headers:
        if name == b"content-length" and value.strip() != str(len(body)).encode():
            raise IncompleteResponse(environ["PATH_INFO"], code, headers, body, None)
    return code, headers, body


def _send_incomplete(
    exc: IncompleteResponse, start_response: StartResponse, head: bool
) -> Iterable[bytes]:
    """What a plain server gives for an app whose iterable raised mid-body: the part it
    sent, without a length, then the error (the server aborts the connection)."""
    start_response(_status_line(exc.status), _native(incomplete_headers(exc)))
    if head:
        return []
    return _aborted(exc)


def _aborted(exc: IncompleteResponse) -> Iterator[bytes]:
    yield exc.body
    raise exc.cause if exc.cause is not None else exc


def _with_x_cache(start_response: StartResponse, status: str) -> StartResponse:
    """``start_response`` that adds ``X-Cache: status`` to the app's headers."""

    def wrapped(
        code: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], object]:
        headers = [(k, v) for k, v in headers if k.lower() != "x-cache"]
        headers.append(("X-Cache", status))
        return start_response(code, headers, exc_info)

    return wrapped


class StatusApp(StatusPage):
    """`isr.asgi.StatusApp` as a WSGI app (the same page, access rules and options)."""

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        body = b""
        length = environ.get("CONTENT_LENGTH") or ""
        if method == "POST" and length.isdigit():
            body = environ["wsgi.input"].read(min(int(length), STATUS_MAX_BODY + 1))
        headers = joined_headers(
            (name[5:].replace("_", "-"), value)
            for name, value in environ.items()
            if name.startswith("HTTP_") and isinstance(value, str)
        )
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        # PEP 3333: the path's bytes, each as one latin-1 character.
        raw_path = quote(path.encode("latin-1", "replace"), safe="/%-._~!$&'()*+,;=:@")
        request = StatusRequest(
            method,
            raw_path,
            environ.get("QUERY_STRING", ""),
            headers,
            body,
            environ.get("wsgi.url_scheme") == "https",
        )
        step = self.decide(request, time.time())
        if isinstance(step, StatusRender):
            step = self.render(gather(self, step.query))
        phrase = HTTPStatus(step.status).phrase
        start_response(
            f"{step.status} {phrase}", [*step.headers, ("content-length", str(len(step.body)))]
        )
        return [b"" if method == "HEAD" else step.body]
