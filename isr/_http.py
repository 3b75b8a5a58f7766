"""The page cache's HTTP policy, shared by the ASGI and WSGI middleware (sans-I/O).

Everything the two servers' drivers (`isr.asgi`, `isr.wsgi`) would otherwise each decide
lives here, as plain functions and small classes over bytes and str: the rules and their
path patterns, matching a request to a rule, the key of a page, the canonical request a
page is rendered from, whether a rendered response may be kept, the stored page record,
the headers a page goes out with, conditional requests (RFC 9110 section 13.2.2) and what a
successful unsafe request invalidates (RFC 9111 section 4.4). No I/O, no threads, no event
loop: the drivers only read requests, run the app and write answers.

**The canonical render.** A page's key is made of its path, the rule's ``query``
parameters, the rule's ``vary`` headers and, unless the middleware is given a canonical
``origin``, the request's scheme and host. A render (miss, background refresh, revalidate)
runs against a request built from those alone (`Canonical`): whatever else a visitor's
request carries (other query parameters, cookies, ``Authorization``, ``X-Forwarded-*``,
``User-Agent``...) never reaches a render whose result is shared.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from importlib import metadata
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from ._context import cache_life, cache_tag, no_store
from ._entry import Seconds, optional_seconds, seconds
from ._errors import ConfigError
from ._httpdate import http_date
from ._status import Status
from ._switch import CLOSED, register
from ._tags import encode_tag

if TYPE_CHECKING:
    from ._runtime import ISR

__all__ = [
    "BYPASS",
    "ERROR_STATUSES",
    "GONE_STATUSES",
    "HOP_BY_HOP",
    "NOT_QUICK",
    "SAFE_METHODS",
    "SWR_UNBOUNDED",
    "USER_AGENT",
    "Canonical",
    "Edge",
    "IncompleteResponse",
    "Kept",
    "OriginError",
    "Prepared",
    "Response",
    "Route",
    "Rule",
    "Site",
    "Target",
    "age_header",
    "assess",
    "canonical",
    "rendered",
    "respond",
    "cache_directives",
    "canonical_headers",
    "declared_tags",
    "header_tags",
    "incomplete_headers",
    "once_headers",
    "http_date_header",
    "join_fields",
    "normalize_host",
    "page_record",
    "parse_origin",
    "path_tag",
    "precondition",
    "private",
    "safe_header_value",
    "unsafe_targets",
]

#: ``stale-while-revalidate`` sent for ``swr=None`` (stale without bound): one year, the
#: conventional "forever" of HTTP caching.
SWR_UNBOUNDED = 31_536_000
#: Statuses that count as a failed render (RFC 5861's stale-if-error errors): the runtime
#: keeps serving the old page and backs off, as for a loader that raised.
ERROR_STATUSES = frozenset({500, 502, 503, 504})
#: Statuses by which the origin says a page is gone: its key is purged.
GONE_STATUSES = frozenset({404, 410})
#: Methods that change nothing (RFC 9110 section 9.2.1); any other method answered 2xx or
#: 3xx invalidates (RFC 9111 section 4.4 counts unknown methods as unsafe).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
#: The ``User-Agent`` of every render.
try:
    USER_AGENT = f"isr-runtime/{metadata.version('isr-runtime')}"
except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
    USER_AGENT = "isr-runtime"

HOP_BY_HOP = frozenset(
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
NOT_STORED = HOP_BY_HOP | {
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
#: Request headers that take a request off a driver's quick path.
NOT_QUICK = frozenset(
    {
        b"authorization",
        b"cookie",
        b"if-none-match",
        b"if-modified-since",
        b"if-match",
        b"if-unmodified-since",
    }
)
#: Kept as they are in a key's path; anything else (``#`` included) is percent-encoded, so
#: that no path can spell another page's key.
PATH_SAFE = "/:@!$&'()*+,;=-._~"
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(:path)?\}")
#: A host as it may stand in a ``Host`` header: a name or an IPv4 address, or an IPv6
#: address in brackets, and an optional port (already lower-cased).
_HOST = re.compile(
    r"(?:[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*\.?|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?"
)
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}
#: Paths whose rule matching is remembered (per site); past this the memory starts over.
PATHS_KEPT = 4096
_HIT, _STALE, _STALE_IF_ERROR = Status.HIT, Status.STALE, Status.STALE_IF_ERROR
#: ``Age`` headers for the first minutes, built once (`age_header` writes the others).
_AGES = {age: (b"age", str(age).encode("latin-1")) for age in range(600)}
#: Characters that may not stand in a header value (RFC 9110 section 5.5): controls but
#: horizontal tab, and DEL.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
#: Returned by `Site.match` for a request on a rule's path that the cache must not touch (a
#: host outside the allowed ones): the app answers it, with ``X-Cache: BYPASS``.
BYPASS: Any = object()


@dataclass(frozen=True)
class Rule:
    """How the pages under one path pattern are cached.

    ``path``: ``"/posts/{slug}"`` (a parameter matches one segment; ``{name:path}`` matches
    the rest of the path, slashes included). ``ttl``, ``swr`` (None: serve stale without
    bound until re-rendered), ``stale_if_error`` (None: the old page is the fallback until
    purged; sent as one year, `SWR_UNBOUNDED`): the windows, as for ``with_revalidate``,
    in seconds or as `datetime.timedelta` (kept as seconds).
    ``tags``: templates over the path parameters (``"post:{slug}"``). ``query``: the query
    parameters that select a different page (all others are ignored for the key, and never
    reach a render); ``bypass_query``: parameters whose presence skips the cache
    (``"search"``). A name in either ending in ``*`` or ``[`` is a prefix: ``"utm_*"``,
    ``"filter["`` (``filter[a]=1``). ``private_ok``: requests with a ``Cookie`` may be
    served from the cache (the page is rendered without any cookie, as every page is).
    ``vary``: request headers that select a different page (``"accept-language"``); their
    values reach the render. ``negative_ttl``: keep a 404 or 410 answer for that many
    seconds (then ask the app again), so that a flood of requests for a missing page is
    not a flood of renders; None (the default) keeps none.
    """

    path: str
    ttl: Seconds
    swr: Seconds | None = None
    stale_if_error: Seconds | None = 86400
    tags: Sequence[str] = ()
    query: Sequence[str] = ()
    bypass_query: Sequence[str] = ()
    private_ok: bool = False
    vary: Sequence[str] = ()
    negative_ttl: Seconds | None = None

    def __post_init__(self) -> None:
        where = f"Rule({self.path!r}"
        object.__setattr__(self, "ttl", seconds(self.ttl, f"{where}, ttl=...)"))
        for name in ("swr", "stale_if_error"):
            value = optional_seconds(getattr(self, name), f"{where}, {name}=...)")
            object.__setattr__(self, name, value)
        if self.negative_ttl is not None:
            negative = seconds(self.negative_ttl, f"{where}, negative_ttl=...)")
            if negative <= 0:
                raise ConfigError(
                    f"Rule({self.path!r}): negative_ttl takes seconds > 0 or None, not "
                    f"{self.negative_ttl!r}"
                )
            object.__setattr__(self, "negative_ttl", negative)
        for name in ("tags", "query", "bypass_query", "vary"):
            value = getattr(self, name)
            items = (value,) if isinstance(value, str) else tuple(value)
            if not all(isinstance(item, str) and item for item in items):
                raise ValueError(f"Rule({self.path!r}): {name} takes non-empty strings")
            if name == "vary":
                items = tuple(item.lower() for item in items)
                bad = [
                    item for item in items if not re.fullmatch(r"[a-z0-9!#$%&'*+.^_`|~-]+", item)
                ]
                if bad:
                    raise ValueError(f"Rule({self.path!r}): vary names no header: {bad[0]!r}")
            object.__setattr__(self, name, items)


class Response:
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


class OriginError(Exception):
    """The wrapped app answered 500, 502, 503 or 504 while rendering a page for the cache.

    The runtime treats it as a failed fetch: the old page is served (``STALE-IF-ERROR``),
    the key backs off, ``on_error`` hooks hear of it. Without an old page, the app's own
    error response goes to the client. ``status`` is the app's status code.
    """

    def __init__(self, path: str, response: Response) -> None:
        super().__init__(f"GET {path} answered {response.status}")
        self.status = response.status
        self.response = response


class IncompleteResponse(Exception):
    """The app left a render's response incomplete: it returned or raised after part of
    the body (or sent less than its ``Content-Length``). Never kept; a failed render for the
    runtime (the old page is served ``STALE-IF-ERROR`` where there is one). Without an old
    page, the client gets what a plain server gives: the part sent, then the connection
    aborted. ``cause`` is the app's exception, if it raised."""

    def __init__(
        self,
        path: str,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        cause: BaseException | None,
    ) -> None:
        super().__init__(f"GET {path}: the app left its response incomplete")
        self.status = status
        self.headers = headers
        self.body = body
        self.cause = cause


def _seconds(value: Seconds) -> int:
    """A window (a `Rule`'s, kept as seconds) in whole seconds, for a header."""
    return int(seconds(value, "a window"))


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


class Route:
    """A rule made ready: its pattern, matchers and header values. A driver sets ``lookup``
    (its loader's) and ``counter`` (the loader the quick path counts its hits on)."""

    __slots__ = (
        "answers",
        "bypass",
        "cache_control",
        "counter",
        "lookup",
        "negative_answers",
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

    def __init__(self, rule: Rule) -> None:
        pattern, params = _compile_path(rule.path)
        for template in rule.tags:
            _check_tag(rule, template, params)
        self.rule = rule
        self.pattern = pattern
        self.query = _name_matcher(rule.query)
        self.bypass = _name_matcher(rule.bypass_query)
        self.vary = tuple(name.encode("latin-1") for name in rule.vary)
        self.vary_header = ", ".join(rule.vary).encode("latin-1")
        swr = SWR_UNBOUNDED if rule.swr is None else _seconds(rule.swr)
        sie = SWR_UNBOUNDED if rule.stale_if_error is None else _seconds(rule.stale_if_error)
        windows = f"stale-while-revalidate={swr}, stale-if-error={sie}"
        self.cache_control = f"public, s-maxage={_seconds(rule.ttl)}, {windows}".encode("latin-1")
        # A stale answer must not become fresh downstream: after a revalidate mark its Age
        # can be under the ttl, and a CDN refetching on a soft purge would keep the old page.
        self.stale_cache_control = f"public, s-maxage=0, {windows}".encode("latin-1")
        # Every status's headers, built once; a kept 404/410 has no stale windows.
        self.answers = {status: self.answer(status) for status in Status}
        negative = b"public, s-maxage=%d" % _seconds(rule.negative_ttl or 0)
        self.negative_answers = {
            status: ((b"cache-control", negative), self.answers[status][1]) for status in Status
        }
        # The query string is read only for a rule that lists or bypasses parameters, and
        # the key is the path's alone without listed parameters or varied headers.
        self.reads_query = self.query is not None or self.bypass is not None
        self.plain = self.query is None and not self.vary
        self.private_ok = rule.private_ok
        # Its hits can skip the query and the request's headers but for a glance.
        self.quick = self.plain and not self.reads_query
        self.lookup: Any = None
        self.counter: Any = None

    def answer(self, status: Status) -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
        """The ``Cache-Control`` and ``X-Cache`` headers of a page's answer with ``status``."""
        stale = status in (_STALE, _STALE_IF_ERROR)
        cache_control = self.stale_cache_control if stale else self.cache_control
        return (b"cache-control", cache_control), (b"x-cache", status.value.encode("latin-1"))

    def bypassed(self, query: list[tuple[str, str]]) -> bool:
        """Whether ``query`` holds a parameter that skips the cache (``bypass_query``)."""
        bypass = self.bypass
        return bypass is not None and any(bypass(name) for name, _ in query)

    def listed(self, query: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The rule's ``query`` parameters among ``query``, in canonical (sorted) order."""
        matcher = self.query
        return sorted(pair for pair in query if matcher(pair[0])) if matcher else []

    def varied(self, headers: Mapping[bytes, bytes]) -> list[str]:
        """The values of the rule's ``vary`` headers in ``headers`` ('' when absent)."""
        return [headers.get(name, b"").decode("latin-1").strip() for name in self.vary]


class Target:
    """What a request path (and, without a canonical origin, scheme and host) maps to: the
    route, the path's parameters, and the key without query or vary part."""

    __slots__ = ("base", "host", "params", "path", "route", "scheme")

    def __init__(
        self, route: Route, params: dict[str, str], path: str, scheme: str, host: str, base: str
    ) -> None:
        self.route = route
        self.params = params  # shared by the path's requests: read, never written
        self.path = path
        self.scheme = scheme
        self.host = host
        self.base = base


class Canonical:
    """A render's request, built from a page's key alone (the loader's argument).

    ``path`` (decoded) and ``raw_path`` (percent-encoded as in the key), ``query`` (the
    rule's listed parameters, sorted) and ``query_string`` (them, encoded), ``headers``
    (`canonical_headers`: the fixed set and the keyed ``vary`` values), ``scheme`` and
    ``host`` (the canonical origin's, or the request's when they are keyed). ``deployment``
    carries the driver's deployment-level values (ASGI ``root_path``, WSGI ``SCRIPT_NAME``,
    ...), which no visitor controls. ``rendered`` is set once a render ran for this very
    request (then a private answer may go to it)."""

    __slots__ = (
        "deployment",
        "headers",
        "host",
        "key",
        "params",
        "path",
        "query",
        "query_string",
        "raw_path",
        "rendered",
        "route",
        "scheme",
    )

    def __init__(
        self,
        key: str,
        target: Target,
        query: list[tuple[str, str]],
        varied: list[str],
        deployment: Mapping[str, Any],
    ) -> None:
        route = target.route
        self.key = key
        self.route = route
        self.params = target.params
        self.path = target.path
        self.raw_path = quote(target.path, safe=PATH_SAFE)
        self.query = query
        self.query_string = urlencode(query)
        self.scheme = target.scheme
        self.host = target.host
        self.headers = canonical_headers(target.scheme, target.host, route.vary, varied)
        self.deployment = deployment
        self.rendered = False

    @property
    def port(self) -> str:
        """The canonical host's port (the scheme's default when it names none)."""
        host = self.host
        if host.startswith("["):
            _, _, rest = host.partition("]")
            return rest[1:] if rest.startswith(":") else _DEFAULT_PORTS[self.scheme][1:]
        return host.rpartition(":")[2] if ":" in host else _DEFAULT_PORTS[self.scheme][1:]

    @property
    def hostname(self) -> str:
        """The canonical host without its port."""
        host = self.host
        if host.startswith("["):
            return host.partition("]")[0] + "]"
        return host.partition(":")[0]


def canonical_headers(
    scheme: str, host: str, vary: Sequence[bytes], varied: Sequence[str]
) -> tuple[tuple[bytes, bytes], ...]:
    """The request headers of every render: ``host``, a fixed ``user-agent`` and ``accept:
    */*``, ``x-forwarded-host`` and ``x-forwarded-proto`` saying the canonical origin (so an
    app that trusts a proxy sees the same origin as one that does not), and the rule's
    ``vary`` headers with the keyed values (absent when empty)."""
    fixed = [
        (b"host", host.encode("latin-1")),
        (b"user-agent", USER_AGENT.encode("latin-1")),
        (b"accept", b"*/*"),
        (b"x-forwarded-host", host.encode("latin-1")),
        (b"x-forwarded-proto", scheme.encode("latin-1")),
    ]
    for name, value in zip(vary, varied, strict=True):
        if value and name not in (b"host", b"x-forwarded-host", b"x-forwarded-proto"):
            fixed = [(n, v) for n, v in fixed if n != name]
            fixed.append((name, value.encode("latin-1")))
    return tuple(fixed)


def parse_origin(origin: str) -> tuple[str, str]:
    """``"https://www.example.com"`` as (scheme, normalized host); `isr.ConfigError` for
    anything but an http(s) origin without path, query, fragment or credentials."""
    parts = urlsplit(origin)
    host = normalize_host(parts.netloc, parts.scheme) if parts.scheme in _DEFAULT_PORTS else None
    if host is None or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(
            f"origin={origin!r}: give the site's scheme and host, as 'https://www.example.com'"
        )
    return parts.scheme, host


def normalize_host(value: str, scheme: str) -> str | None:
    """A ``Host`` value lower-cased, without a trailing dot or the scheme's default port;
    None when it is no host (userinfo, spaces, controls, a path...)."""
    host = value.strip().lower()
    if not _HOST.fullmatch(host):
        return None
    default = _DEFAULT_PORTS.get(scheme)
    if default is not None and host.endswith(default):
        host = host[: -len(default)]
    if host.endswith("."):
        host = host[:-1]
    elif ".:" in host:
        host = host.replace(".:", ":")
    return host or None


class Site:
    """The rules of one middleware, and how a request finds its page.

    ``origin``: the site's canonical origin (``"https://www.example.com"``): every render
    gets its scheme and host, and they are not part of the key. Without it, the request's
    scheme and ``Host`` are part of the key (each host its own pages, rendered with that
    host), and ``hosts`` (when given) lists the hosts that may be cached: a request for
    another host is the app's to answer (``X-Cache: BYPASS``) and never fills the cache.
    """

    def __init__(
        self, rules: Sequence[Rule], origin: str | None = None, hosts: Iterable[str] | None = None
    ) -> None:
        self.routes = [Route(rule) for rule in rules]
        self.origin = None if origin is None else parse_origin(origin)
        if origin is not None and hosts is not None:
            raise ConfigError("give origin= (one canonical origin) or hosts= (keyed), not both")
        if isinstance(hosts, str):
            raise ConfigError("hosts= takes a list of host names, not one string")
        self.hosts: frozenset[str] | None = None
        if hosts is not None:
            allowed = set()
            for host in hosts:
                for scheme in _DEFAULT_PORTS:
                    normal = normalize_host(host, scheme) if isinstance(host, str) else None
                    if normal is None:
                        raise ConfigError(f"hosts=: {host!r} is not a host name")
                    allowed.add(normal)
            self.hosts = frozenset(allowed)
        # path (or (scheme, host, path) without an origin) -> its target, None (no rule
        # matches: untouched) or BYPASS (a host not allowed).
        self.paths: dict[Any, Any] = {}

    def match(self, path: str, scheme: str = "http", host: str | None = None) -> Any:
        """The `Target` of a request for ``path`` (with ``scheme`` and raw ``host`` when no
        origin is configured), None when no rule matches, `BYPASS` when its host may not be
        cached. Remembered: call it again only on a miss of `paths`."""
        origin = self.origin
        memo: Any = path if origin is not None else (scheme, host, path)
        target: Any = None
        for route in self.routes:
            match = route.pattern.fullmatch(path)
            if match is not None:
                if origin is not None:
                    scheme, normal = origin
                else:
                    normal = None
                    if scheme in _DEFAULT_PORTS and host is not None:
                        normal = normalize_host(host, scheme)
                    if normal is None or (self.hosts is not None and normal not in self.hosts):
                        target = BYPASS
                        break
                assert normal is not None
                quoted = quote(path, safe=PATH_SAFE)
                base = "page:" + (quoted if origin is not None else f"{scheme}://{normal}{quoted}")
                target = Target(route, match.groupdict(), path, scheme, normal, base)
                break
        paths = self.paths
        if len(paths) >= PATHS_KEPT:
            paths.clear()
        paths[memo] = target
        return target

    @staticmethod
    def key(target: Target, listed: list[tuple[str, str]], varied: list[str]) -> str:
        """The page's key: ``target.base`` (``page:{path}``, the path percent-encoded as in
        a URL, with ``{scheme}://{host}`` before it when they are keyed), plus ``#`` and a
        hash of the listed query parameters and varied headers when there are any."""
        if not listed and not any(varied):
            return target.base
        canonical = json.dumps([listed, varied], separators=(",", ":"))
        return f"{target.base}#{hashlib.sha256(canonical.encode()).hexdigest()[:16]}"


def canonical(
    target: Target,
    headers: Mapping[bytes, bytes],
    raw_query: str,
    deployment: Mapping[str, Any],
) -> Canonical | None:
    """The canonical request of a GET or HEAD for ``target`` with request ``headers`` (by
    lower-case name, repeated fields joined) and ``raw_query``; None when the cache must
    stay out of it: ``Authorization``, a ``Cookie`` (unless ``private_ok``), a
    ``bypass_query`` parameter. The app answers those itself (``X-Cache: BYPASS``)."""
    route = target.route
    if b"authorization" in headers or (b"cookie" in headers and not route.private_ok):
        return None
    listed: list[tuple[str, str]] = []
    varied = route.varied(headers)
    if route.reads_query and raw_query:
        query = parse_qsl(raw_query, keep_blank_values=True)
        if route.bypassed(query):
            return None
        listed = route.listed(query)
    return Canonical(Site.key(target, listed, varied), target, listed, varied, deployment)


def path_tag(path: str) -> str:
    """The tag every variant of the page at ``path`` carries (every query, vary and host
    variant): what an unsafe request to that path invalidates. Never sent in headers."""
    return "isr:path:" + quote(path, safe=PATH_SAFE)


def join_fields(raw: Iterable[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """Request header fields by name, the values of a repeated field comma-joined."""
    headers: dict[bytes, bytes] = {}
    for name, value in raw:
        headers[name] = headers[name] + b"," + value if name in headers else value
    return headers


# ---------------------------------------------------------------- the rendered response


def cache_directives(headers: Iterable[tuple[bytes, bytes]]) -> set[str]:
    """The directive names of a response's ``Cache-Control`` fields, lower-cased."""
    names = set()
    for name, value in headers:
        if name == b"cache-control":
            for directive in value.decode("latin-1").split(","):
                names.add(directive.split("=", 1)[0].strip().lower())
    return names


def private(headers: Iterable[tuple[bytes, bytes]], vary: Sequence[str]) -> bool:
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


#: What `assess` says of a rendered response.
KEEP, NEGATIVE, GONE, ERROR, ONCE, PRIVATE = (
    "keep",
    "negative",
    "gone",
    "error",
    "once",
    "private",
)


def assess(status: int, headers: list[tuple[bytes, bytes]], rule: Rule) -> str:
    """What to do with a complete rendered response: ``"keep"`` it (a 200 for everyone);
    ``"negative"`` (a 404/410 the rule keeps for ``negative_ttl``); ``"gone"`` (a 404/410:
    purge the page, serve this once); ``"error"`` (a failed render: 500, 502, 503, 504);
    ``"private"`` (Set-Cookie, private, no-store, a Vary the key does not cover: only for
    the request that rendered it); ``"once"`` (anything else, and a 200 marked
    ``no-cache``, which may not be served again without asking the app)."""
    if status in ERROR_STATUSES:
        return ERROR
    if private(headers, rule.vary):
        return PRIVATE
    no_cache = "no-cache" in cache_directives(headers)
    if status in GONE_STATUSES:
        return NEGATIVE if rule.negative_ttl is not None and not no_cache else GONE
    if status != 200 or no_cache:
        return ONCE
    return KEEP


def declared_tags(headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
    """The tags an app declares in its response's ``X-Cache-Tags``: comma-separated, each
    percent-decoded (UTF-8) as `isr._tags.encode_tag` encodes them, so that a tag holding a
    comma or a space is declared ``item:a%2Cb``; plain text is taken as it is."""
    tags = []
    for name, value in headers:
        if name == b"x-cache-tags":
            for item in value.decode("utf-8", errors="replace").split(","):
                tag = unquote(item.strip(), errors="replace")
                if tag:
                    tags.append(tag)
    return tags


def page_record(
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    tags: list[str],
    rendered: float,
    raw_body: bool,
) -> dict[str, Any]:
    """The page kept in the store: the app's headers but those the edge makes, the body,
    a strong ETag (the body's SHA-256, the same in every process), the render's wall-clock
    time (Last-Modified) and the tags sent in headers. ``raw_body``: keep the body as bytes
    (a store holding objects as they are: the memory store; the prepared answer then shares
    them); else as latin-1 text, one char per byte, which JSON stores can hold and which is
    copied both ways at memcpy speed."""
    return {
        "status": status,
        "headers": [
            [k.decode("latin-1"), v.decode("latin-1")] for k, v in headers if k not in NOT_STORED
        ],
        "body": body if raw_body else body.decode("latin-1"),
        "etag": f'"{hashlib.sha256(body).hexdigest()[:32]}"',
        "time": rendered,
        "tags": tags,
    }


def safe_header_value(value: bytes) -> bytes:
    """``value`` with every control character (CR and LF included) percent-encoded: what
    reaches a header never splits it, whatever the server does with it."""
    if _CONTROL.search(value) is None:
        return value
    return _CONTROL.sub(lambda m: b"%%%02X" % m.group()[0], value)


def header_tags(tags: Sequence[str]) -> list[str]:
    """``tags`` as they go into headers (`isr._tags.encode_tag`); a tag that is not valid
    Unicode names no page and is left out."""
    return [encode_tag(tag) for tag in tags if _unicode(tag)]


def _unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def http_date_header(seconds: float) -> bytes:
    """An HTTP date (IMF-fixdate) for ``seconds`` since the epoch, whole seconds."""
    return formatdate(int(seconds), usegmt=True).encode("latin-1")


def age_header(age: int) -> tuple[bytes, bytes]:
    """The ``Age`` header for ``age`` seconds: ready-made for the first minutes, else
    written out (a negative one, from a store shared with a clock slightly ahead, is 0)."""
    return _AGES.get(age) or (b"age", b"%d" % max(0, age))


class Prepared:
    """A kept page as it goes out, encoded once: the headers of its answer before and
    after those that change with each answer (``Cache-Control``, ``X-Cache``, ``Age``),
    those of its 304 (RFC 9110 section 15.4.5: the ``Content-Location``, ``ETag``, ``Vary``
    and ``Cache-Control`` its 200 would carry), its status and body. Valid for the page
    whose ``etag`` and ``time`` it carries; ``last_modified`` is its render time in whole
    seconds (`with_date` keeps it at or before the answer's ``Date``)."""

    __slots__ = (
        "answers",
        "body",
        "etag",
        "head",
        "last_modified",
        "not_modified",
        "page",
        "route",
        "status",
        "tail",
        "time",
        "validators",
    )

    def __init__(
        self, route: Route, page: dict[str, Any], surrogate_keys: bool, cache_tag_header: bool
    ) -> None:
        self.route = route
        self.page = page
        self.status: int = page.get("status", 200)
        self.etag: str = page["etag"]
        self.time: float = page["time"]
        self.last_modified = int(self.time)
        body = page["body"]
        self.body: bytes = body if isinstance(body, bytes) else body.encode("latin-1")
        self.validators = (
            (b"etag", self.etag.encode("latin-1")),
            (b"last-modified", http_date_header(self.last_modified)),
        )
        stored = [
            (k.encode("latin-1"), safe_header_value(v.encode("latin-1")))
            for k, v in page["headers"]
        ]
        self.head = (
            *stored,
            (b"content-length", str(len(self.body)).encode("latin-1")),
            *self.validators,
        )
        tail: list[tuple[bytes, bytes]] = []
        if route.vary:
            tail.append((b"vary", route.vary_header))
        tags = header_tags(page["tags"])
        if tags:
            tail.append((b"x-cache-tags", ",".join(tags).encode("ascii")))
            if surrogate_keys:
                tail.append((b"surrogate-key", " ".join(tags).encode("ascii")))
            if cache_tag_header:
                tail.append((b"cache-tag", ",".join(tags).encode("ascii")))
        self.tail = tuple(tail)
        self.not_modified = (
            *self.validators,
            *[(k, v) for k, v in stored if k == b"content-location"],
        )
        self.answers = route.answers if self.status == 200 else route.negative_answers

    def with_date(self, date: float | None) -> tuple[tuple[bytes, bytes], ...]:
        """The validators for an answer whose ``Date`` says ``date`` (None: unknown, or
        not before the render): ``Last-Modified`` never later than ``Date``."""
        if date is None or int(date) >= self.last_modified:
            return self.validators
        return (self.validators[0], (b"last-modified", http_date_header(date)))


def respond(
    page: Prepared,
    status: Status,
    age: int,
    headers: Mapping[bytes, bytes],
    head: bool,
    date: float | None,
) -> tuple[int, list[tuple[bytes, bytes]], bool]:
    """The answer to a GET (or HEAD: ``head``) with request ``headers`` from a kept
    ``page`` served with ``status`` at ``age`` seconds, the server's ``Date`` being
    ``date`` (None: unknown): its status code, headers, and whether the body goes too."""
    cache_control, x_cache = page.answers[status]
    validators = page.with_date(date)
    code = None
    if (
        b"if-none-match" in headers
        or b"if-modified-since" in headers
        or b"if-match" in headers
        or b"if-unmodified-since" in headers
    ):
        code = precondition("HEAD" if head else "GET", headers, page.etag, page.last_modified)
    if code == 304:
        extra = page.not_modified[len(page.validators) :]
        sent = [*validators, *extra, cache_control, x_cache, *page.tail, age_header(age)]
        return 304, sent, False
    if code == 412:
        return 412, [*validators, x_cache, (b"content-length", b"0")], False
    if validators is not page.validators:
        sent = [*page.head[: -len(validators)], *validators]
    else:
        sent = list(page.head)
    sent += [cache_control, x_cache, *page.tail, age_header(age)]
    return page.status, sent, not head


def rendered(
    route: Route,
    request: Canonical,
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    raw_body: bool,
    now: float,
) -> tuple[dict[str, Any] | Response, bool]:
    """What a render's loader returns for the app's complete response, and whether the
    page's key must be purged first (a 404 or 410 not kept: the origin says it is gone).
    Raises `OriginError` for a failed render. Says the entry's tags, windows or "do not
    keep" to the runtime (`isr.cache_tag`, `isr.cache_life`, `isr.no_store`), and counts
    a 404 or 410 on the route's loader (``Stats.gone``)."""
    verdict = assess(status, headers, route.rule)
    if verdict == ERROR:
        raise OriginError(request.path, Response(status, headers, body, True))
    if verdict in (GONE, NEGATIVE):
        route.counter.gone += 1
    if verdict not in (KEEP, NEGATIVE):
        no_store()
        return Response(status, headers, body, verdict != PRIVATE), verdict == GONE
    if verdict == NEGATIVE:
        cache_life(ttl=route.rule.negative_ttl, swr=0, stale_if_error=0)
    tags = [template.format_map(request.params) for template in route.rule.tags]
    declared = declared_tags(headers)
    if declared:
        tags = list(dict.fromkeys(tags + declared))
    cache_tag(*tags, path_tag(request.path))
    return page_record(status, headers, body, tags, now, raw_body), False


P = TypeVar("P", bound=Prepared)


class Kept(Generic[P]):
    """The pages a middleware keeps ready to send (`Prepared`, or a driver's subclass made
    by ``make``), one per key, within ``count`` pages and ``budget`` bytes of bodies; the
    oldest prepared make room. A quick path reads `pages` directly (a plain dict)."""

    def __init__(
        self,
        make: Callable[[Route, dict[str, Any]], P],
        budget: int = 32 * 1024 * 1024,
        count: int = 1024,
    ) -> None:
        self.make = make
        self.budget = budget
        self.count = count
        self.pages: dict[str, P] = {}
        self.bytes = 0
        self._lock = threading.Lock()

    def ready(self, route: Route, key: str, page: dict[str, Any]) -> P:
        """``page`` (the store's, under ``key``) ready to send: the one kept if it is for
        the same render (taking up ``page`` itself: a quick path knows a kept page by its
        identity), else a new one, kept while the budget allows."""
        kept = self.pages.get(key)
        if kept is not None and kept.route is route:
            if kept.page is page:
                return kept
            if kept.time == page["time"] and kept.etag == page["etag"]:
                kept.page = page
                return kept
        made = self.make(route, page)
        size = len(made.body)
        pages = self.pages
        with self._lock:
            old = pages.pop(key, None)
            if old is not None:
                self.bytes -= len(old.body)
            if size > self.budget:
                return made
            while pages and (len(pages) >= self.count or self.bytes + size > self.budget):
                self.bytes -= len(pages.pop(next(iter(pages))).body)
            pages[key] = made
            self.bytes += size
        return made

    def forget(self) -> None:
        """Drop every kept page (their headers changed)."""
        with self._lock:
            self.pages.clear()
            self.bytes = 0


class Edge(Generic[P]):
    """What both middleware hold beside their I/O: the site (rules, matching), the
    runtime and its store's hot path (`isr.adapters.base`), and the pages kept ready to send
    (`Kept`, made by the driver's ``_make_wire``), within ``budget`` bytes (and a bounded
    memory store's ``max_bytes``: the kept pages share its bodies). A driver gives each
    route its loader in ``_attach``."""

    def __init__(
        self,
        runtime: ISR,
        rules: Sequence[Rule],
        origin: str | None,
        hosts: Iterable[str] | None,
        surrogate_keys: bool,
        cache_tag_header: bool,
        count: int,
        budget: int,
    ) -> None:
        self.runtime = runtime
        self.site = Site(rules, origin, hosts)
        runtime._edges.add(self)  # what `isr.ISR.explain` finds page rules in
        self._surrogate_keys = surrogate_keys
        self._cache_tag_header = cache_tag_header
        self._origin = self.site.origin
        for route in self.site.routes:
            self._attach(route)
        self._paths = self.site.paths
        adapter = runtime.adapter
        budget = min(budget, getattr(adapter, "max_bytes", None) or budget)
        self._kept = Kept(self._make_wire, budget, count)
        # key -> its page ready to send, in the order they were prepared (`Kept.pages`).
        self._wires = self._kept.pages
        # A store keeping values as they are holds each body once, as bytes, shared with
        # its prepared answer; a shared store needs JSON-encodable records.
        self._raw_bodies = not adapter.shared and getattr(adapter, "codec", None) is None
        # The store's hot path, for a driver's quick path (rules never use xfetch); its
        # generations are compared with the store's, or with CLOSED's while the cache is
        # off (isr._switch).
        self._store: Any = adapter
        self._peek = adapter.peek
        self._clock = runtime.clock
        register(self)

    def shut_hot_paths(self, shut: bool) -> None:
        """The quick path's store: `isr.CLOSED` while the cache is off somewhere in
        the process (``shut``) or for a disabled runtime, so that every request takes the
        full path, which asks the switch (`bypassing`)."""
        runtime = self.runtime
        self._store = runtime.adapter if runtime.enabled and not shut else CLOSED

    def bypassing(self, target: Target | None) -> bool:
        """Whether the cache is off for this request (`isr.disabled`, a disabled runtime):
        the app then answers it with ``X-Cache: BYPASS``, counted for ``target``'s route."""
        if not self.runtime._state.bypassing():
            return False
        self.passed(target)
        return True

    def passed(self, target: Target | None) -> None:
        """Count a request for ``target``'s route that the app answers with ``X-Cache:
        BYPASS`` (metrics: ``isr.calls`` under the route's path)."""
        if target is not None and target is not BYPASS:
            target.route.counter.bypassed += 1

    def page_key(self, url: str, headers: Mapping[str, str] | None = None) -> str | None:
        """The key under which this middleware caches the page a GET of ``url`` gets: a
        path with its query (``"/posts/hello?page=2"``), or a full URL, whose scheme and
        host count for a site without ``origin``. ``headers``: the request's, of which
        only the rule's ``vary`` headers shape the key. None when the cache keeps no page
        for it: no rule matches, a host not allowed, a ``bypass_query`` parameter,
        ``Authorization`` or ``Cookie`` (unless ``private_ok``) in ``headers``. What
        ``isr explain --url`` and the status page's search find the key with."""
        parts = urlsplit(url)
        given = {name.lower(): value for name, value in (headers or {}).items()}
        host = parts.netloc or given.get("host")
        target = self.site.match(unquote(parts.path) or "/", parts.scheme or "http", host)
        if target is None or target is BYPASS:
            return None
        raw = {name.encode("latin-1"): value.encode("latin-1") for name, value in given.items()}
        request = canonical(target, raw, parts.query, {})
        return None if request is None else request.key

    def _attach(self, route: Route) -> None:
        raise NotImplementedError

    def _make_wire(self, route: Route, page: dict[str, Any]) -> P:
        raise NotImplementedError

    @property
    def surrogate_keys(self) -> bool:
        """Send a page's tags as ``Surrogate-Key`` too."""
        return self._surrogate_keys

    @surrogate_keys.setter
    def surrogate_keys(self, value: bool) -> None:
        self._surrogate_keys = value
        self._kept.forget()

    @property
    def cache_tag_header(self) -> bool:
        """Send a page's tags as ``Cache-Tag`` too."""
        return self._cache_tag_header

    @cache_tag_header.setter
    def cache_tag_header(self, value: bool) -> None:
        self._cache_tag_header = value
        self._kept.forget()


def once_headers(response: Response) -> list[tuple[bytes, bytes]]:
    """The headers of a response served once as the app sent it: its own (no hop-by-hop,
    no control characters), its length, ``X-Cache: MISS``."""
    headers = [
        (k, safe_header_value(v))
        for k, v in response.headers
        if k not in HOP_BY_HOP and k != b"x-cache"
    ]
    headers += [(b"content-length", b"%d" % len(response.body)), (b"x-cache", b"MISS")]
    return headers


def incomplete_headers(exc: IncompleteResponse) -> list[tuple[bytes, bytes]]:
    """The headers of an incomplete answer passed on: the app's, without a length."""
    headers = [(k, safe_header_value(v)) for k, v in exc.headers if k not in HOP_BY_HOP]
    headers.append((b"x-cache", b"MISS"))
    return headers


# ---------------------------------------------------------------- conditional requests


def _etags(value: bytes) -> list[str]:
    return [tag.strip() for tag in value.decode("latin-1").split(",") if tag.strip()]


def precondition(
    method: str, headers: Mapping[bytes, bytes], etag: str, last_modified: int
) -> int | None:
    """RFC 9110 section 13.2.2, for a page that exists with ``etag`` (strong) and
    ``last_modified``: 412 when ``If-Match`` (strong comparison) or, without it,
    ``If-Unmodified-Since`` fails; then 304 for a GET or HEAD whose ``If-None-Match``
    matches (weak comparison) or, without one, whose ``If-Modified-Since`` is not before
    the page (412 for other methods); None: answer in full."""
    if_match = headers.get(b"if-match")
    if if_match is not None:
        tags = _etags(if_match)
        if "*" not in tags and etag not in tags:
            return 412
    else:
        ius = headers.get(b"if-unmodified-since")
        if ius is not None:
            since = http_date(ius.decode("latin-1"))
            if since is not None and last_modified > since:
                return 412
    get = method in ("GET", "HEAD")
    inm = headers.get(b"if-none-match")
    if inm is not None:
        tags = _etags(inm)
        if "*" in tags or any(tag.removeprefix("W/") == etag for tag in tags):
            return 304 if get else 412
        return None
    ims = headers.get(b"if-modified-since")
    if ims is not None and get:
        since = http_date(ims.decode("latin-1"))
        if since is not None and last_modified <= since:
            return 304
    return None


# ---------------------------------------------------------------- unsafe methods


def unsafe_targets(
    status: int,
    headers: Iterable[tuple[bytes, bytes]],
    path: str,
    scheme: str,
    host: str | None,
    origin: tuple[str, str] | None,
) -> list[str]:
    """The paths whose pages a successful unsafe request invalidates (RFC 9111 section 4.4):
    for a 2xx or 3xx answer, the request's own ``path``, and the ``Location`` and
    ``Content-Location`` it answers with when they are on the same origin (the request's,
    or the configured canonical one); nothing for another status. A URI on another origin
    is never a target: a site cannot make us drop another's pages."""
    if not 200 <= status < 400:
        return []
    targets = [path]
    own = {(scheme, normalize_host(host, scheme) if host else None)}
    if origin is not None:
        own.add(origin)
    for name, value in headers:
        if name in (b"location", b"content-location"):
            try:
                text = value.decode("ascii").strip()
                parts = urlsplit(text)
            except (UnicodeDecodeError, ValueError):
                continue
            if parts.scheme or parts.netloc:
                other = (
                    parts.scheme or scheme,
                    normalize_host(parts.netloc, parts.scheme or scheme),
                )
                if other not in own or other[1] is None:
                    continue
            target = parts.path
            if not target.startswith("/"):  # relative to the request's path
                target = path.rsplit("/", 1)[0] + "/" + target
            target = unquote(_dot_segments(target), errors="replace")
            if target not in targets:
                targets.append(target)
    return targets


def _dot_segments(path: str) -> str:
    """``path`` with ``.`` and ``..`` segments resolved (RFC 3986 section 5.2.4)."""
    out: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    if path.endswith(("/.", "/..")):
        out.append("")
    return "/" + "/".join(out)
