"""The status page, once for ASGI and WSGI: who may see it, what it shows, and its HTML.

`isr.asgi.StatusApp` and `isr.wsgi.StatusApp` only move bytes: each asks `StatusPage.decide`
what a request gets (a finished answer, or "gather a snapshot and render it"), gathers the
`Snapshot` with its own kind of I/O (``isr/_async/status.py``, and ``isr/_sync/status.py``
generated from it), and sends `StatusPage.render`'s answer.

**Access.** The page shows keys, tags, hosts and process ids: it is protected like the
webhook, by a shared ``secret`` (16 characters at least; compared in constant time, as a
SHA-256 digest, so neither its content nor its length leaks). A browser gets a login form
(POST, the secret in the body, never in a URL); the right secret sets a session cookie,
``isr_status``: HttpOnly (no script reads it), SameSite=Strict (no other site's page sends
it), ``Secure`` on https (or with ``secure_cookie=True`` behind a TLS-terminating proxy),
``Path`` the page's own path, valid for ``session`` seconds (8 hours by default). Its value is
an expiry time and an HMAC-SHA256 of it under a key derived from the secret: nothing to
steal but the session itself, and changing the secret ends every session. A script (a
monitor, ``curl``) sends ``Authorization: Bearer <secret>`` instead. A logout button clears
the cookie. The page changes nothing (its search only reads), so it carries no CSRF token;
SameSite=Strict keeps other sites' forms from using the session anyway.

**Answers.** Server-rendered HTML, every value escaped (a key or a tag holding markup shows
as text), no script at all, one inline style sheet allowed by its hash in a strict
``Content-Security-Policy`` (``default-src 'none'``; forms to the page itself; no framing),
``Cache-Control: no-store``, ``X-Content-Type-Options: nosniff``, ``Referrer-Policy:
no-referrer``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import parse_qs, quote

from ._errors import ConfigError
from ._explain import Explanation, _span, _when
from ._redact import check_header_value
from ._stats import Stats

if TYPE_CHECKING:
    from ._coherence import Confirmation, Instance, LoggedInvalidation
    from ._runtime import ISR

__all__ = [
    "Answer",
    "Render",
    "Request",
    "Snapshot",
    "StatusPage",
    "function_rates",
    "joined_headers",
    "search_key",
    "snapshot",
]

#: The cookie carrying a browser's session.
COOKIE = "isr_status"
#: The longest login form or search accepted, in bytes.
MAX_BODY = 4096
MAX_QUERY = 2048

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
header{background:#1d232a;color:#fff;padding:.8em 1.5em;display:flex;gap:1.5em;align-items:center}
header h1{font-size:1.15em;margin:0}header .meta{opacity:.8;font-size:.9em;flex:1}
header form{margin:0}
main{padding:1em 1.5em;max-width:1200px}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:.6em 1em 1em;
margin:0 0 1em}
h2{font-size:1em;margin:.4em 0 .6em}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.25em .6em;
border-bottom:1px solid #eef0f3;vertical-align:top}th{font-weight:600;color:#4a5360}
td.n{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font:12.5px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace}
pre{background:#f3f5f8;padding:.8em;border-radius:4px;overflow-x:auto;white-space:pre-wrap}
.ok{color:#116b2e;font-weight:600}.bad{color:#a4161a;font-weight:600}.dim{color:#69727d}
input[type=text],input[type=password]{font:inherit;padding:.35em .5em;width:32em;max-width:70%}
button{font:inherit;padding:.35em .9em;cursor:pointer}
.login{max-width:28em;margin:12vh auto}
""".strip()
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()

#: Every answer's headers.
HEADERS: tuple[tuple[str, str], ...] = (
    ("content-type", "text/html; charset=utf-8"),
    ("cache-control", "no-store"),
    (
        "content-security-policy",
        f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
)


class Request(NamedTuple):
    """What a server layer passes on: the method, the path as the browser sent it
    (percent-encoded), the raw query, the headers (lower-case names) and the body."""

    method: str
    raw_path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    https: bool


class Answer(NamedTuple):
    """A finished answer: status, headers, body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


class Render(NamedTuple):
    """The request may see the page: gather a snapshot (with ``query`` explained) and
    render it."""

    query: str


@dataclass(frozen=True)
class Snapshot:
    """What the page shows, gathered at one moment."""

    at: float
    store: str
    namespace: str | None
    instance: str | None
    instances: Sequence[Instance] | None
    log: Sequence[LoggedInvalidation] | None
    stats: Stats
    functions: Sequence[tuple[str, str, Mapping[str, int]]]
    query: str = ""
    key: str | None = None
    explanation: Explanation | None = None
    problem: str | None = None


class StatusPage:
    """What the ASGI and the WSGI status apps share (they are made of it; see the module
    docstring): their options, access rules and renderer.

    ``secret``: what a browser signs in with (or a script sends as ``Authorization: Bearer``),
    16 characters at least. ``session``: how long a browser's sign-in lasts (seconds or a
    timedelta). ``secure_cookie``: mark the session cookie ``Secure`` (default: when the
    request came over https; say True behind a proxy that terminates TLS). ``log_limit``:
    the invalidations shown. ``title``: the page's."""

    def __init__(
        self,
        runtime: ISR,
        *,
        secret: str,
        session: float | timedelta = 8 * 3600,
        secure_cookie: bool | None = None,
        log_limit: int = 50,
        title: str = "isr status",
    ) -> None:
        check_header_value(secret, "the status page's secret")
        if len(secret) < 16:
            raise ConfigError(
                "the status page's secret is shorter than 16 characters: it guards keys, "
                "hosts and process ids; use a long random one (python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')"
            )
        seconds = session.total_seconds() if isinstance(session, timedelta) else session
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
            raise ConfigError(f"session takes seconds > 0 (or a timedelta), not {session!r}")
        if not isinstance(log_limit, int) or isinstance(log_limit, bool) or log_limit < 1:
            raise ConfigError(f"log_limit takes a positive int, not {log_limit!r}")
        self.runtime = runtime
        self.session = float(seconds)
        self.secure_cookie = secure_cookie
        self.log_limit = log_limit
        self.title = title
        self._digest = hashlib.sha256(secret.encode()).digest()
        self._key = hmac.new(self._digest, b"isr status session", hashlib.sha256).digest()

    # ------------------------------------------------------------------ access

    def _secret_ok(self, given: str) -> bool:
        digest = hashlib.sha256(given.encode("utf-8", "replace")).digest()
        return hmac.compare_digest(digest, self._digest)

    def _sign(self, expiry: int) -> str:
        return hmac.new(self._key, f"v1.{expiry}".encode(), hashlib.sha256).hexdigest()

    def cookie_value(self, now: float) -> str:
        """A session cookie's value, valid until ``now`` + ``session``."""
        expiry = int(now + self.session)
        return f"v1.{expiry}.{self._sign(expiry)}"

    def authorized(self, headers: Mapping[str, str], now: float) -> bool:
        """Whether the request carries the secret (``Authorization: Bearer``) or a valid,
        unexpired session cookie."""
        auth = headers.get("authorization", "")
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value and self._secret_ok(value.strip()):
            return True
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name != COOKIE:
                continue
            version, _, rest = value.partition(".")
            stamp, _, signature = rest.partition(".")
            if version != "v1" or not stamp.isdigit() or len(stamp) > 12:
                continue
            good = hmac.compare_digest(signature.encode(), self._sign(int(stamp)).encode())
            if good and now < int(stamp):
                return True
        return False

    def _cookie(self, request: Request, value: str, max_age: int) -> str:
        # Percent-encoded but for what a cookie's Path may hold as it is: a ";" in the
        # request's path must not add an attribute.
        path = quote(request.raw_path or "/", safe="/%-._~!$&'()*+=:@")
        secure = request.https if self.secure_cookie is None else self.secure_cookie
        flags = f"; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict"
        return f"{COOKIE}={value}{flags}{'; Secure' if secure else ''}"

    # ------------------------------------------------------------------ requests

    def decide(self, request: Request, now: float) -> Answer | Render:
        """What ``request`` gets: an answer (the login form, a redirect after logging in
        or out, a refusal), or `Render` when it may see the page."""
        if request.method == "POST":
            return self._post(request, now)
        if request.method not in ("GET", "HEAD"):
            return self._answer(
                405, self._message("Method not allowed", "Use GET."), [("allow", "GET, HEAD, POST")]
            )
        if not self.authorized(request.headers, now):
            return self._login(401, None)
        if len(request.query) > MAX_QUERY:
            return self._answer(414, self._message("Too long", "The search is too long."))
        try:
            fields = parse_qs(request.query, max_num_fields=8)
        except ValueError:  # more fields than a search has
            return self._answer(
                400, self._message("Bad request", "The search has too many fields.")
            )
        return Render((fields.get("q") or [""])[0].strip())

    def _post(self, request: Request, now: float) -> Answer:
        if len(request.body) > MAX_BODY:
            return self._answer(413, self._message("Too large", "The form is too large."))
        try:
            fields = parse_qs(request.body.decode("utf-8"), max_num_fields=8, strict_parsing=False)
        except (UnicodeDecodeError, ValueError):
            return self._login(400, "The form could not be read.")
        action = (fields.get("action") or [""])[0]
        here = _here(request.raw_path)
        if action == "logout":
            return Answer(
                303,
                [*HEADERS, ("location", here), ("set-cookie", self._cookie(request, "", 0))],
                b"",
            )
        if action != "login":
            return self._login(400, "Unknown action.")
        given = (fields.get("secret") or [""])[0]
        if not given or not self._secret_ok(given):
            return self._login(401, "Wrong secret.")
        cookie = self._cookie(request, self.cookie_value(now), int(self.session))
        return Answer(303, [*HEADERS, ("location", here), ("set-cookie", cookie)], b"")

    def _answer(self, status: int, body: str, extra: Iterable[tuple[str, str]] = ()) -> Answer:
        return Answer(status, [*HEADERS, *extra], body.encode("utf-8"))

    def _message(self, title: str, text: str) -> str:
        return _document(title, f"<main><h2>{_e(title)}</h2><p>{_e(text)}</p></main>")

    def _login(self, status: int, problem: str | None) -> Answer:
        note = "" if problem is None else f'<p class="bad">{_e(problem)}</p>'
        body = (
            f'<main class="login"><section><h2>{_e(self.title)}</h2>{note}'
            '<form method="post"><input type="hidden" name="action" value="login">'
            '<p><label>Secret <input type="password" name="secret" autocomplete="current-password" '
            'autofocus required></label></p><p><button type="submit">Sign in</button></p>'
            "</form></section></main>"
        )
        extra = [("www-authenticate", 'Bearer realm="isr status"')] if status == 401 else []
        return self._answer(status, _document(self.title, body), extra)

    # ------------------------------------------------------------------ the page

    def render(self, snapshot: Snapshot) -> Answer:
        """The page for ``snapshot``."""
        parts = [
            "<header>",
            f"<h1>{_e(self.title)}</h1>",
            f'<div class="meta">store <code>{_e(snapshot.store)}</code>, namespace '
            f"<code>{_e(snapshot.namespace or 'isr')}</code>; this instance "
            f"<code>{_e(snapshot.instance or '-')}</code>; {_e(_when(snapshot.at))}</div>",
            '<form method="post"><input type="hidden" name="action" value="logout">'
            '<button type="submit">Sign out</button></form>',
            "</header><main>",
            _search(snapshot),
            _instances(snapshot),
            _log(snapshot),
            _rates(snapshot),
            "</main>",
        ]
        return self._answer(200, _document(self.title, "".join(parts)))


def joined_headers(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Request headers by lower-case name, repeated ones joined (``Cookie`` with ``; ``)."""
    found: dict[str, str] = {}
    for name, value in pairs:
        name = name.lower()
        if name in found:
            found[name] += ("; " if name == "cookie" else ", ") + value
        else:
            found[name] = value
    return found


# ---------------------------------------------------------------------- gathering


def function_rates(runtime: ISR) -> list[tuple[str, str, Mapping[str, int]]]:
    """Answers by status for each decorated function and page rule of ``runtime`` (the
    counters `isr.ISR.stats` and the metrics read; nothing counted here): (name,
    ``"function"`` or ``"page rule"``, counts), page rules first, then by name."""
    pages = {id(route.counter) for edge in list(runtime._edges) for route in edge.site.routes}
    rows: list[tuple[str, str, Mapping[str, int]]] = [
        (loader.label, "page rule" if id(loader) in pages else "function", loader.calls())
        for loader in list(runtime._loaders)
        if loader.runtime is runtime
    ]
    rows.sort(key=lambda row: (row[1] != "page rule", row[0]))
    return rows


def search_key(runtime: ISR, query: str) -> tuple[str | None, str | None]:
    """The key a search names: itself, or for a path or URL the page key the runtime's page
    rules give it; (None, why) when no rule caches that path."""
    if not query.startswith(("/", "http://", "https://")):
        return query, None
    for edge in sorted(runtime._edges, key=id):
        key = edge.page_key(query)
        if key is not None:
            return key, None
    return None, f"No page rule caches {query}: nothing to explain."


def snapshot(
    runtime: ISR,
    query: str,
    live: Sequence[Instance],
    log: Sequence[LoggedInvalidation],
    found: tuple[str | None, Explanation | None, str | None],
) -> Snapshot:
    """A `Snapshot` of ``runtime`` now, with what the driver read: the ``live`` instances,
    the ``log``, and for the search ``query`` the key, its explanation and a problem."""
    adapter = runtime.adapter
    key, explanation, problem = found
    return Snapshot(
        at=time.time(),
        store=type(adapter).__name__,
        namespace=getattr(adapter, "namespace", None),
        instance=runtime.instance_id,
        instances=live,
        log=log,
        stats=runtime.stats(),
        functions=function_rates(runtime),
        query=query,
        key=key,
        explanation=explanation,
        problem=problem,
    )


# ---------------------------------------------------------------------- HTML


def _e(value: object) -> str:
    """``value`` as HTML text, escaped for an element or a quoted attribute."""
    return html.escape(str(value), quote=True)


def _here(raw_path: str) -> str:
    """A relative URL of the page itself, whatever prefix it is mounted under."""
    last = (raw_path or "/").rsplit("/", 1)[-1]
    return "./" + quote(last, safe="%-._~!$&'()*+,;=:@")


def _document(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="referrer" content="no-referrer"><title>{_e(title)}</title>'
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], empty: str) -> str:
    rows = list(rows)
    if not rows:
        return f'<p class="dim">{_e(empty)}</p>'
    cells = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _td(value: object, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{_e(value)}</td>"


def _search(s: Snapshot) -> str:
    parts = [
        '<section id="explain"><h2>Explain a key or a page</h2>',
        '<form method="get"><input type="text" name="q" placeholder="post:hello or /posts/hello" '
        f'value="{_e(s.query)}" aria-label="key or path"> <button type="submit">Explain</button>'
        "</form>",
    ]
    if s.problem is not None:
        parts.append(f'<p class="bad" id="explain-problem">{_e(s.problem)}</p>')
    if s.explanation is not None:
        e = s.explanation
        if s.key != s.query:
            parts.append(f"<p>Page key <code>{_e(s.key)}</code></p>")
        cls = "ok" if e.next_read == "HIT" else "bad" if e.next_read == "MISS" else ""
        refresh = " + background refresh" if e.refresh else ""
        parts.append(
            f'<p>Next read: <span class="{cls}" id="next-read">{_e(e.next_read)}{refresh}</span>'
            f" &mdash; {_e(e.why)}</p>"
        )
        parts.append(f'<pre id="explanation">{_e(e.text())}</pre>')
    parts.append("</section>")
    return "".join(parts)


def _instances(s: Snapshot) -> str:
    head = '<section id="instances"><h2>Live instances</h2>'
    if s.instances is None:
        return head + '<p class="dim">Not known to this runtime.</p></section>'
    rows = [
        [
            _td(i.id, "me" if i.id == s.instance else ""),
            _td(i.host),
            _td(i.pid, "n"),
            _td(_when(i.started)),
            _td(f"{_span(s.at - i.seen)} ago", "n"),
            _td("yes" if i.l1 else "no"),
            _td("-" if i.applied is None else i.applied, "n"),
        ]
        for i in s.instances
    ]
    table = _table(
        ("id", "host", "pid", "started", "last seen", "L1", "applied epoch"), rows, "None."
    )
    return f"{head}{table}</section>"


def _confirmation(c: Confirmation | None) -> str:
    if c is None:
        return '<td class="dim">not yet known</td>'
    missing = list(c.missing)
    text = f"{len(c.confirmed)} confirmed in {c.ms:.1f} ms"
    if missing:
        return f'<td class="bad">{_e(text)}; missing {_e(", ".join(missing))}</td>'
    return f'<td class="ok">{_e(text)}</td>'


def _log(s: Snapshot) -> str:
    head = '<section id="log"><h2>Recent invalidations</h2>'
    if s.log is None:
        return head + '<p class="dim">The invalidation log is not available.</p></section>'
    rows = []
    for item in s.log:
        detail = ", ".join(f"{k}={v}" for k, v in dict(item.detail).items())
        source = item.source + (f" ({detail})" if detail else "")
        rows.append(
            [
                _td(_when(item.at)),
                _td(item.scope),
                _td(item.name or "(everything)"),
                _td(item.mode),
                _td(source),
                _td(item.instance),
                _confirmation(item.confirmation),
            ]
        )
    table = _table(
        ("when", "scope", "name", "mode", "from", "instance", "confirmation"),
        rows,
        "No invalidation logged yet.",
    )
    return f"{head}{table}</section>"


def _ratio(counts: Mapping[str, int]) -> str:
    served = sum(counts.get(k, 0) for k in ("HIT", "STALE", "MISS", "STALE-IF-ERROR"))
    if not served:
        return "-"
    return f"{100 * counts.get('HIT', 0) / served:.1f} %"


def _rates(s: Snapshot) -> str:
    rows = [
        [
            _td(name),
            _td(kind),
            *(_td(counts.get(k, 0), "n") for k in ("HIT", "STALE", "MISS", "STALE-IF-ERROR")),
            _td(counts.get("ERROR", 0), "n"),
            _td(_ratio(counts), "n"),
        ]
        for name, kind, counts in s.functions
    ]
    t = s.stats
    total = {
        "HIT": t.hits,
        "STALE": t.stale,
        "MISS": t.misses,
        "STALE-IF-ERROR": t.stale_if_error,
    }
    rows.append(
        [
            "<td><strong>all</strong></td>",
            _td("runtime"),
            *(_td(total[k], "n") for k in ("HIT", "STALE", "MISS", "STALE-IF-ERROR")),
            _td(t.errors, "n"),
            _td(_ratio(total), "n"),
        ]
    )
    table = _table(
        (
            "function or page rule",
            "kind",
            "HIT",
            "STALE",
            "MISS",
            "STALE-IF-ERROR",
            "errors",
            "hit rate",
        ),
        rows,
        "Nothing cached yet.",
    )
    extra = (
        f"{t.refreshes} background refresh{'' if t.refreshes == 1 else 'es'} "
        f"({t.refresh_failures} failed), "
        f"{t.invalidations} invalidations, {t.store_errors} store errors, "
        f"{t.entries if t.entries is not None else '?'} entries"
    )
    return f'<section id="rates"><h2>Answers</h2>{table}<p class="dim">{_e(extra)}</p></section>'
