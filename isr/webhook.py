"""A CMS webhook that turns a publish into an invalidation, then purges the CDNs.

    app = WebhookApp(runtime=rt, secret=os.environ["ISR_WEBHOOK_SECRET"],
                     purgers=[VarnishPurger("http://varnish:6081/")])
    # mount it at /_isr/webhook (POST), or call Webhook.handle(headers, body) from any framework

**Payloads.** A Strapi v4 or v5 webhook::

    {"event": "entry.publish", "model": "article", "uid": "api::article.article",
     "entry": {"id": 1, "documentId": "k3x...", "slug": "hello", ...},
     "previous": {"slug": "old-hello"}}          # optional, not sent by Strapi itself

becomes tags through ``tag_map`` (by ``uid``, then model name, then ``"*"``; default
``("{model}", "{model}:{slug}")``; for ``media.*`` events the model is ``"media"`` with
default ``("media", "media:{id}")``). A rule is a template or a list of templates naming
``model``, ``uid``, ``event`` or any scalar field of the entry (a template whose field is
missing, null or empty is skipped), a callable taking the `StrapiEvent` and returning tags,
or ``None`` to ignore the model. ``previous`` (an object of the entry's former field
values, e.g. the old slug, which a lifecycle hook can add) is run through the same rule,
so the old URL's tags are invalidated too. Events map to modes by ``modes``: create,
update, publish: ``"expire"``; unpublish, delete: ``"purge"``. Other events (``trigger-test``,
``entry.draft-discard``, review workflows, releases) are answered 200 with ``"ignored"``.

A generic body ``{"tags": [...], "keys": [...], "mode": "expire"|"revalidate"|"purge"}``
(mode optional, default ``"expire"``; unknown fields refused) invalidates those tags and
keys. Only tags are purged from the CDNs: keys are local cache keys.

**Authentication.** ``secret``: ``Authorization: Bearer <secret>``, or the raw secret in the
header named by ``header=``; compared in constant time. ``hmac_secret``: the body must be
signed, ``X-ISR-Timestamp: <unix seconds>`` and ``X-ISR-Signature: sha256=<hex>`` of
HMAC-SHA256 over ``b"<timestamp>." + body`` (`sign` makes them); a timestamp more than
``tolerance`` seconds off is refused, and so is a signature already used within the window:
each accepted signature is claimed in the runtime's store (`adapters.base.Adapter.claim`)
until its timestamp leaves the window, so on a shared store (disk, Redis) a delivery is
accepted once by every process and replica sharing it, restarts included; on the memory
store, once per process. A store that cannot be asked (Redis down) gets a 503, so the sender
retries: a delivery is never accepted unchecked. A request answered 5xx (a purge or the
store failed) does not spend its signature: senders retry those unchanged, and a replay of
it can only redo the invalidation its sender asked for, inside the window. With both, both
are required.
Without either, construction fails unless ``insecure=True``.

**Answers** (JSON, ``Cache-Control: no-store``): 200 done (or ignored); 502 when the local
invalidation was done but a CDN purge failed (``"cdn"`` says which, and why); 503 when the
local invalidation itself raised; 400 malformed JSON or wrong shape (``"field"`` names
it); 401 authentication; 405 not POST; 413 body over ``max_body`` (read incrementally,
never beyond the limit); 415 not ``application/json`` (UTF-8). A refused request changes
nothing.

Strapi sends the whole entry: raise ``max_body`` (64 KiB by default) if entries are large.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import string
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import anyio

from isr import ISR, ConfigError, get_runtime

from ._entry import _MODES, ModeName
from .asgi import Receive, Send
from .cdn import Purger, PurgeResult

__all__ = [
    "DEFAULT_MODES",
    "DEFAULT_TAG_MAP",
    "StrapiEvent",
    "TagRule",
    "Webhook",
    "WebhookApp",
    "WebhookResponse",
    "sign",
]

logger = logging.getLogger("isr")

#: The modes by name; a tuple, so that a JSON list or object in a payload compares unequal
#: instead of raising as a dict key would.
_MODE_NAMES = tuple(_MODES)


@dataclass(frozen=True)
class StrapiEvent:
    """A Strapi webhook, as a tag rule callable sees it."""

    event: str
    """``"entry.publish"``, ``"media.delete"``..."""
    model: str
    """The model's name (``"article"``), ``"media"`` for media events."""
    uid: str | None
    """``"api::article.article"`` where Strapi sends it."""
    entry: Mapping[str, Any]
    """The entry (or media) object."""
    previous: Mapping[str, Any] | None = None
    """Former field values (``{"slug": "old"}``) merged over the entry, if the payload
    had a ``previous`` object."""


TagRule: TypeAlias = str | Sequence[str] | Callable[[StrapiEvent], Iterable[str]] | None

DEFAULT_TAG_MAP: Mapping[str, TagRule] = {
    "*": ("{model}", "{model}:{slug}"),
    "media": ("media", "media:{id}"),
}

DEFAULT_MODES: Mapping[str, ModeName] = {
    "entry.create": "expire",
    "entry.update": "expire",
    "entry.publish": "expire",
    "entry.unpublish": "purge",
    "entry.delete": "purge",
    "media.create": "expire",
    "media.update": "expire",
    "media.delete": "purge",
}

SIGNATURE_HEADER = "x-isr-signature"
TIMESTAMP_HEADER = "x-isr-timestamp"


def sign(body: bytes, secret: str | bytes, *, timestamp: int | None = None) -> dict[str, str]:
    """The headers that sign ``body`` for a webhook configured with ``hmac_secret=secret``."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: "sha256=" + _signature(_key(secret), ts, body),
    }


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else bytes(secret)


def _given_signature(headers: Mapping[str, str]) -> str:
    """The request's signature as kept against replays: hex digits, lowercase."""
    return headers.get(SIGNATURE_HEADER, "").strip().lower().removeprefix("sha256=")


def _signature(key: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(key, b"%d." % timestamp + body, hashlib.sha256).hexdigest()


@dataclass
class WebhookResponse:
    """What the webhook answers: a status, a JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        # ASCII: the answer may echo request strings, lone surrogates included.
        return json.dumps(self.body, separators=(",", ":")).encode()


class _Invalid(Exception):
    """A payload of the wrong shape: ``field`` says where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class _Disconnected(Exception):
    """The client went away before the whole body arrived."""


def _error(status: int, message: str, **extra: Any) -> WebhookResponse:
    return WebhookResponse(status, {"ok": False, "error": message, **extra})


class _Template:
    """A tag template such as ``"{model}:{slug}"``: plain field names only, rendered by
    concatenation (never ``str.format`` on request data)."""

    def __init__(self, template: str) -> None:
        self.parts: list[tuple[str, str | None]] = []
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise ConfigError(f"bad tag template {template!r}: {exc}") from None
        for literal, name, spec, conversion in parsed:
            if name is not None and (not name.isidentifier() or spec or conversion):
                raise ConfigError(
                    f"bad tag template {template!r}: use plain fields like {{slug}}, "
                    f"not {{{name}{'!' + conversion if conversion else ''}"
                    f"{':' + spec if spec else ''}}}"
                )
            self.parts.append((literal, name))
        if not template:
            raise ConfigError("a tag template must not be empty")

    def render(self, values: Mapping[str, Any]) -> str | None:
        out = []
        for literal, name in self.parts:
            out.append(literal)
            if name is not None:
                value = values.get(name)
                if isinstance(value, bool) or not isinstance(value, (str, int)):
                    return None
                text = str(value)
                if not text:
                    return None
                out.append(text)
        return "".join(out)


_Rule: TypeAlias = tuple[_Template, ...] | Callable[[StrapiEvent], Iterable[str]] | None


def _compile(model: str, rule: TagRule) -> _Rule:
    if rule is None:
        return None
    if isinstance(rule, str):
        return (_Template(rule),)
    if callable(rule):
        return rule
    if isinstance(rule, Sequence) and all(isinstance(t, str) for t in rule):
        return tuple(_Template(t) for t in rule)
    raise ConfigError(
        f"tag_map[{model!r}] must be a template, a list of templates, a callable or None"
    )


def _text(value: str) -> bool:
    """Whether ``value`` is real Unicode text (JSON can carry lone surrogates)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _strings(body: Mapping[str, Any], name: str) -> list[str]:
    value = body.get(name, [])
    if not isinstance(value, list):
        raise _Invalid(name, "expected a list of strings")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item or not _text(item):
            raise _Invalid(f"{name}[{i}]", f"expected a non-empty string, not {item!r:.40}")
    return list(dict.fromkeys(value))


def _model(payload: Mapping[str, Any]) -> tuple[str, str | None]:
    """A Strapi entry event's model name and uid (v5 always sends the uid, v4 the model)."""
    uid = payload.get("uid")
    if uid is not None and (not isinstance(uid, str) or not uid):
        raise _Invalid("uid", "expected a non-empty string")
    model = payload.get("model")
    if model is None and uid is not None:
        model = uid.rpartition(".")[2]  # "api::article.article" -> "article"
    if not isinstance(model, str) or not model:
        raise _Invalid("model", "expected the model name (or a uid)")
    return model, uid


def _digits(value: str, most: int) -> int | None:
    """A non-negative decimal integer of at most ``most`` ASCII digits, else None."""
    value = value.strip()
    if value.isascii() and value.isdigit() and len(value) <= most:
        return int(value)
    return None


class Webhook:
    """The framework-neutral webhook: ``await webhook.handle(headers, body)`` returns a
    `WebhookResponse`. See the module docstring for payloads, authentication and answers.

    ``runtime=None`` uses the default runtime (`isr.get_runtime`) at each request.
    ``purgers`` are purged concurrently after the local invalidation, by the same tags,
    soft when the mode is ``"revalidate"``; one that takes longer than ``purge_timeout``
    (retries included) is given up and reported as failed, so the CMS gets its answer in
    time. ``aclose()`` closes the purgers. ``max_seen`` is accepted for compatibility and no
    longer used: the runtime's store keeps the signatures (an in-process store at most
    10,000 of them, `adapters.claims.LocalClaims`)."""

    def __init__(
        self,
        runtime: ISR | None = None,
        *,
        secret: str | None = None,
        header: str = "authorization",
        hmac_secret: str | bytes | None = None,
        tolerance: float = 300.0,
        max_seen: int = 10_000,
        max_body: int = 64 * 1024,
        tag_map: Mapping[str, TagRule] | None = None,
        modes: Mapping[str, ModeName] | None = None,
        purgers: Sequence[Purger] = (),
        purge_timeout: float = 10.0,
        insecure: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if secret is not None:
            if not isinstance(secret, str) or not secret:
                raise ConfigError("secret must be a non-empty string")
            if not secret.isascii() or not secret.isprintable() or secret != secret.strip():
                raise ConfigError(
                    "secret must be printable ASCII without surrounding spaces (it travels "
                    "in an HTTP header)"
                )
        if hmac_secret is not None and not hmac_secret:
            raise ConfigError("hmac_secret must not be empty")
        if secret is None and hmac_secret is None and not insecure:
            raise ConfigError(
                "the webhook needs secret= (or hmac_secret=): without one anybody could "
                "invalidate the cache; pass insecure=True to run without (tests only)"
            )
        if not isinstance(header, str) or not header.strip():
            raise ConfigError("header must name an HTTP header")
        if not tolerance > 0:
            raise ConfigError("tolerance must be > 0 seconds")
        if not purge_timeout > 0:
            raise ConfigError("purge_timeout must be > 0 seconds")
        if not isinstance(max_body, int) or max_body < 1:
            raise ConfigError("max_body must be a positive number of bytes")
        if not isinstance(max_seen, int) or max_seen < 1:
            raise ConfigError("max_seen must be a positive integer")
        rules = {**DEFAULT_TAG_MAP, **(tag_map or {})}
        self._rules = {model: _compile(model, rule) for model, rule in rules.items()}
        self.modes: dict[str, ModeName] = {**DEFAULT_MODES, **(modes or {})}
        for event, mode in self.modes.items():
            if mode not in _MODE_NAMES:
                raise ConfigError(
                    f"modes[{event!r}] must be 'expire', 'revalidate' or 'purge', not {mode!r}"
                )
        for purger in purgers:
            if not isinstance(purger, Purger):
                raise ConfigError(f"{purger!r} is not a Purger (name, purge(), stats())")
        self.runtime = runtime
        self.header = header.strip().lower()
        self.max_body = max_body
        self.tolerance = tolerance
        self.max_seen = max_seen
        self.purgers = tuple(purgers)
        self.purge_timeout = purge_timeout
        self.clock = clock
        self._secret = hashlib.sha256(secret.encode()).digest() if secret else None
        self._hmac_key = _key(hmac_secret) if hmac_secret is not None else None

    async def aclose(self) -> None:
        """Close the purgers that can be closed."""
        for purger in self.purgers:
            close = getattr(purger, "aclose", None)
            if close is not None:
                await close()

    # -------------------------------------------------------------- the request

    async def handle(
        self, headers: Mapping[str, str], body: bytes, *, method: str = "POST"
    ) -> WebhookResponse:
        """Answer one request (``headers`` in any case)."""
        lowered = {k.lower(): v for k, v in headers.items()}
        refused = self._check_head(method, lowered)
        if refused is not None:
            return refused
        if len(body) > self.max_body:
            return self._too_large()
        return await self._handle_body(lowered, body)

    def _check_head(self, method: str, headers: Mapping[str, str]) -> WebhookResponse | None:
        """The checks that need no body: method, shared secret, content type, length."""
        if method != "POST":
            response = _error(405, f"method {method} not allowed: use POST")
            response.headers["allow"] = "POST"
            return response
        if self._secret is not None:
            reason = self._check_secret(headers.get(self.header))
            if reason is not None:
                response = _error(401, reason)
                if self.header == "authorization":
                    response.headers["www-authenticate"] = "Bearer"
                return response
        reason = _check_content_type(headers.get("content-type"))
        if reason is not None:
            return _error(415, reason)
        length = headers.get("content-length")
        if length is not None:
            size = _digits(length, 18)
            if size is None:
                return _error(400, f"bad Content-Length {length!r:.40}")
            if size > self.max_body:
                return self._too_large()
        return None

    def _too_large(self) -> WebhookResponse:
        return _error(413, f"body larger than {self.max_body} bytes")

    def _check_secret(self, value: str | None) -> str | None:
        assert self._secret is not None
        if value is None:
            return f"missing {self.header} header"
        if self.header == "authorization":
            scheme, _, value = value.strip().partition(" ")
            if scheme.lower() != "bearer":
                return "expected Authorization: Bearer <secret>"
        given = hashlib.sha256(value.strip().encode("utf-8", "replace")).digest()
        # Digests of equal length: the comparison reveals neither the secret nor its length.
        if not hmac.compare_digest(given, self._secret):
            return "wrong secret"
        return None

    def _check_signature(self, headers: Mapping[str, str], body: bytes, given: str) -> str | int:
        """Why the request's signature ``given`` (`_given_signature`) is refused, or the
        timestamp it signs."""
        assert self._hmac_key is not None
        stamp = headers.get(TIMESTAMP_HEADER, "").strip()
        if not given:
            return f"missing {SIGNATURE_HEADER} header"
        timestamp = _digits(stamp, 12)
        if timestamp is None:
            return f"missing or malformed {TIMESTAMP_HEADER} header (unix seconds)"
        now = self.clock()
        if abs(now - timestamp) > self.tolerance:
            return (
                f"{TIMESTAMP_HEADER} is {now - timestamp:+.0f} s off, outside the "
                f"{self.tolerance:g} s window"
            )
        expected = _signature(self._hmac_key, timestamp, body)
        if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace")):
            return "bad signature"
        return timestamp

    async def _handle_body(self, headers: Mapping[str, str], body: bytes) -> WebhookResponse:
        if self._hmac_key is None:
            return await self._handle_payload(body)
        signature = _given_signature(headers)
        timestamp = self._check_signature(headers, body, signature)
        if isinstance(timestamp, str):
            return _error(401, timestamp)
        # Spent from here on, in the runtime's store, so that a copy sent meanwhile (to any
        # process sharing it) is a replay; given back when the answer is 5xx (or none), for
        # the sender's retry.
        store = (self.runtime if self.runtime is not None else get_runtime()).adapter
        claim = f"webhook:{signature}"
        claimed = await store.aclaim(claim, max(1.0, timestamp + self.tolerance - self.clock()))
        if claimed is None:
            return _error(503, "the replay guard's store cannot be reached; retry later")
        if not claimed:
            return _error(401, "signature already used (replay)")
        response: WebhookResponse | None = None
        try:
            response = await self._handle_payload(body)
            return response
        finally:
            if response is None or response.status >= 500:
                with anyio.CancelScope(shield=True):
                    await store.aunclaim(claim)

    async def _handle_payload(self, body: bytes) -> WebhookResponse:
        try:
            payload = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            detail = "too deeply nested" if isinstance(exc, RecursionError) else str(exc)
            return _error(400, f"body is not valid UTF-8 JSON: {detail}"[:300])
        try:
            plan = self._plan(payload)
        except _Invalid as exc:
            return _error(400, str(exc), field=exc.field)
        except Exception as exc:
            logger.exception("webhook: a tag rule failed")
            return _error(500, f"a tag rule failed: {type(exc).__name__}: {exc}"[:300])
        if isinstance(plan, WebhookResponse):
            return plan
        return await self._apply(*plan)

    # -------------------------------------------------------------- payloads

    def _plan(
        self, payload: object
    ) -> WebhookResponse | tuple[list[str], list[str], ModeName, dict[str, Any]]:
        """What to invalidate: (tags, keys, mode, extra answer fields), or an answer."""
        if not isinstance(payload, dict):
            raise _Invalid("body", "expected a JSON object")
        if "event" in payload:
            return self._plan_strapi(payload)
        unknown = sorted(set(payload) - {"tags", "keys", "mode"})
        if unknown:
            raise _Invalid(unknown[0][:60], "unknown field (expected tags, keys, mode or event)")
        tags = _strings(payload, "tags")
        keys = _strings(payload, "keys")
        mode = payload.get("mode", "expire")
        if mode not in _MODE_NAMES:
            raise _Invalid("mode", f"expected 'expire', 'revalidate' or 'purge', not {mode!r:.40}")
        if not tags and not keys:
            raise _Invalid("tags", "nothing to invalidate: give tags and/or keys")
        return tags, keys, mode, {}

    def _plan_strapi(
        self, payload: dict[str, Any]
    ) -> WebhookResponse | tuple[list[str], list[str], ModeName, dict[str, Any]]:
        event = payload["event"]
        if not isinstance(event, str):
            raise _Invalid("event", "expected a string")
        mode = self.modes.get(event)
        if mode is None:
            return WebhookResponse(
                200, {"ok": True, "event": event, "ignored": "not an invalidating event"}
            )
        if event.startswith("media."):
            model, uid, where = "media", None, "media"
        else:
            model, uid = _model(payload)
            where = "entry"
        entry = payload.get(where)
        if not isinstance(entry, dict):
            raise _Invalid(where, "expected an object")
        previous = payload.get("previous")
        if previous is not None and not isinstance(previous, dict):
            raise _Invalid("previous", "expected an object of former field values, or null")
        key = uid if uid is not None and uid in self._rules else model
        rule = self._rules[key] if key in self._rules else self._rules.get("*")
        extra: dict[str, Any] = {"event": event, "model": model}
        current = StrapiEvent(event, model, uid, entry)
        tags = self._tags(rule, current)
        if previous:
            tags += self._tags(
                rule, StrapiEvent(event, model, uid, {**entry, **previous}, previous)
            )
        tags = list(dict.fromkeys(tags))
        if not tags:
            return WebhookResponse(200, {"ok": True, **extra, "ignored": "no tags for this model"})
        return tags, [], mode, extra

    @staticmethod
    def _tags(rule: _Rule, event: StrapiEvent) -> list[str]:
        if rule is None:
            return []
        if callable(rule):
            found = rule(event)
            tags = [found] if isinstance(found, str) else list(found)  # a str is one tag
            for tag in tags:
                if not isinstance(tag, str) or not tag:
                    raise TypeError(f"the rule for {event.model!r} returned {tag!r}")
            # As from a template: a tag that is not Unicode text (a lone surrogate from the
            # payload's JSON) names no page, and no store or CDN could take it.
            return [tag for tag in tags if _text(tag)]
        values = {**event.entry, "model": event.model, "uid": event.uid, "event": event.event}
        return [tag for tag in (t.render(values) for t in rule) if tag is not None and _text(tag)]

    # -------------------------------------------------------------- acting

    async def _apply(
        self, tags: list[str], keys: list[str], mode: ModeName, extra: dict[str, Any]
    ) -> WebhookResponse:
        runtime = self.runtime if self.runtime is not None else get_runtime()
        answer: dict[str, Any] = {"ok": True, **extra, "mode": mode}
        try:
            answer["tags"] = {tag: await runtime.invalidate_tag(tag, mode) for tag in tags}
            answer["keys"] = {key: await runtime.invalidate(key, mode) for key in keys}
        except Exception as exc:
            logger.exception("webhook: local invalidation failed")
            return _error(503, f"local invalidation failed: {type(exc).__name__}: {exc}"[:300])
        results = await self._purge(tags, soft=mode == "revalidate") if tags else []
        answer["cdn"] = [result.to_json() for result in results]
        if all(result.ok for result in results):
            return WebhookResponse(200, answer)
        answer["ok"] = False
        answer["error"] = "a CDN purge failed; the local invalidation was done"
        return WebhookResponse(502, answer)

    async def _purge(self, tags: list[str], *, soft: bool) -> list[PurgeResult]:
        results: list[PurgeResult | None] = [None] * len(self.purgers)

        async def one(i: int, purger: Purger) -> None:
            name = purger.name  # a Purger has one (checked when the app is made)
            error = f"no answer within purge_timeout={self.purge_timeout:g} s"
            with anyio.move_on_after(self.purge_timeout):
                try:
                    results[i] = await purger.purge(tags, soft=soft)
                    return
                except Exception as exc:  # a third-party purger must not take the answer down
                    logger.exception("webhook: purger %s raised", name)
                    error = f"{type(exc).__name__}: {exc}"
            if results[i] is None:
                logger.error("webhook: purge of %s failed: %s", name, error)
                results[i] = PurgeResult(name, soft, failed=tuple(tags), error=error)

        async with anyio.create_task_group() as tg:
            for i, purger in enumerate(self.purgers):
                tg.start_soon(one, i, purger)
        return [r for r in results if r is not None]


def _check_content_type(value: str | None) -> str | None:
    if value is None:
        return "missing Content-Type: send application/json"
    media_type, *params = value.split(";")
    if media_type.strip().lower() != "application/json":
        return f"Content-Type {value!r:.60} not supported: send application/json"
    for param in params:
        name, _, param_value = param.partition("=")
        charset = param_value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
            return f"charset {param_value.strip()!r:.30} not supported: send UTF-8 JSON"
    return None


class WebhookApp(Webhook):
    """The `Webhook` as a pure ASGI app: POST only, any path. The body is read
    incrementally and never beyond ``max_body``. On ASGI lifespan shutdown it closes its
    purgers."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:  # as asgi.ASGIApp
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            return
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", ()):
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            # A repeated header is joined, as HTTP says: a second Authorization fails.
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        response = self._check_head(str(scope.get("method", "")), headers)
        if response is None:
            try:
                body = await self._read_body(receive)
            except _Disconnected:
                return  # nobody to answer, and a truncated body must not be acted on
            if body is None:
                response = self._too_large()
            else:
                response = await self._handle_body(headers, body)
        await _send(send, response)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The body, or None as soon as it grows past ``max_body``."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _send(send: Send, response: WebhookResponse) -> None:
    body = response.encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *((k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()),
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
