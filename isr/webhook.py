"""A CMS webhook that turns a publish into an invalidation, then purges the CDNs.

    app = WebhookApp(runtime=rt, secret=os.environ["ISR_WEBHOOK_SECRET"],
                     purgers=[VarnishPurger("http://varnish:6081/")])
    # ASGI: mount it at /_isr/webhook (POST); WSGI: WebhookWSGIApp(...), the same arguments;
    # any framework: await Webhook(...).handle(headers, body)

**Payloads.** A Strapi v4 or v5 webhook, as Strapi sends it (``tests/fixtures/strapi5``
holds the requests a real Strapi 5.54 sent)::

    X-Strapi-Event: entry.unpublish
    {"event": "entry.unpublish", "model": "article", "uid": "api::article.article",
     "entry": {"id": 6, "documentId": "x4m1...", "slug": "first-post", ...,
               "localizations": [...]},        # localized types, on unpublish
     "previous": {"slug": "old-first-post"}}     # optional, not sent by Strapi itself

becomes tags through ``tag_map`` (by ``uid``, then model name, then ``"*"``), each tag either
the **entry's own** (it names this entry's page: purged when the entry is unpublished or
deleted) or the **collection's** (every page of the type carries it, or lists built from the
type do: only expired, so that one entry's removal never takes every page's stale-if-error
fallback away). A rule is:

- a template or a list of templates naming ``model``, ``uid``, ``event`` or any scalar
  field of the entry (a template whose field is missing, null or empty is skipped; Strapi
  sends no ``locale`` at all on a type without i18n). A template that names a field of the
  entry (``{model}:{slug}``, ``doc:{documentId}``) is the entry's own; one that names none
  (``{model}``, ``"posts"``, ``"home"``) is the collection's.
- ``{"own": [...], "collection": [...]}``: the split said outright.
- a callable taking the `StrapiEvent` and returning tags (all the entry's own) or
  ``{"own": [...], "collection": [...]}``.
- ``None``: the model is ignored.

The default, for every model: ``{model}`` (collection), ``{model}:{slug}`` and
``{model}:{documentId}`` (own: ``documentId`` is the document's stable id in Strapi 5; the
``id`` of an ``entry.publish`` is the new published row's, which changes at every publish);
for ``media.*`` events ``media`` (collection) and ``media:{id}`` (own). ``previous`` (former
field values, e.g. the old slug, which a lifecycle hook can add) is run through the same rule,
so the old URL's tags are invalidated too.

**Modes.** ``modes`` maps an event to the mode of the entry's own tags: create, update,
publish: ``"expire"``; unpublish, delete: ``"purge"``. Collection tags get the same mode, but
never stronger than ``"expire"``. ``modes={"entry.delete": {"own": "purge", "collection":
"revalidate", "localizations": "expire"}}`` sets each part. Other events (``trigger-test``,
``entry.draft-discard``, review workflows, releases) are answered 200 with ``"ignored"``.

**Localizations.** Strapi 5 sends, with the ``entry.unpublish`` of one locale, the document's
other rows as ``entry.localizations`` (other locales, drafts and published). Their pages are
still published, but may link to the removed one (a language switcher, ``hreflang``): their
own tags are invalidated with the ``localizations`` mode (the collection's by default:
expired, their fallback kept), not purged. A tag of the removed entry that a localization
still published carries too (a ``documentId`` tag is shared by every locale of a document)
names a live page: it gets the ``localizations`` mode as well. Deletes come without
localizations: a delete purges every own tag, shared or not. On localized types, give pages
locale-specific tags (``{model}:{locale}:{slug}``) so that one locale's removal leaves the
others' fallbacks alone.

**What Strapi does that the handling relies on.** ``entry.update`` and ``entry.publish`` of
one change arrive in either order, both expire the same tags: the final state is the
published one whichever comes last. A deleted published document sends two
``entry.delete`` (its draft row and its published row): both are answered 200, the second
finds nothing left to purge. ``publishedAt`` (set on unpublish, null on create and update)
is not used to choose a mode: the event says it. The ``X-Strapi-Event`` header names the
event; a request whose header and body disagree is refused (400, ``"field": "event"``) and
changes nothing: Strapi sends both the same, a rewriting proxy or a forged body does not.

A generic body ``{"tags": [...], "keys": [...], "mode": "expire"|"revalidate"|"purge"}``
(mode optional, default ``"expire"``; unknown fields refused) invalidates those tags and
keys. Only tags are purged from the CDNs: keys are local cache keys.

**Authentication.** ``secret``: ``Authorization: Bearer <secret>``, or the raw secret in the
header named by ``header=``; compared in constant time. ``hmac_secret``: the body must be
signed, ``X-ISR-Timestamp: <unix seconds>`` and ``X-ISR-Signature: sha256=<hex>`` of
HMAC-SHA256 over ``b"<timestamp>." + body`` (`sign` makes them); a timestamp more than
``tolerance`` seconds off is refused, and so is a signature already used within the window:
each accepted signature is claimed in the runtime's store (`isr.adapters.base.Adapter.claim`)
until its timestamp leaves the window, so on a shared store (disk, Redis) a delivery is
accepted once by every process and replica sharing it, restarts included; on the memory
store, once per process. A store that cannot be asked (Redis down) gets a 503, so the sender
retries: a delivery is never accepted unchecked. A request answered 5xx (a purge or the
store failed) does not spend its signature: senders retry those unchanged, and a replay of
it can only redo the invalidation its sender asked for, inside the window. With both, both
are required. Without either, construction fails unless ``insecure=True``. A ``secret`` (or a text
``hmac_secret``) with a control character or surrounding whitespace (a newline read from a
file) is refused at construction, without being shown.

**Confirmation before the purge.** Once the invalidation is in the store, the webhook waits
(at most ``confirm_timeout`` seconds, 1 by default; 0: it does not wait) until every live
instance has applied it (`isr.ISR.confirm`: each replica's L1 dropped the pages; with 0 the
answer has no ``"instances"``), and only then purges the CDNs: a CDN that refetches right
after the purge gets the new page from whichever replica it asks, never an old copy it
would keep. An instance that does not
confirm in time (frozen, cut off) does not fail the request: the CDNs are purged anyway,
the answer names it, and a warning is logged. The answer says
``"instances": {"confirmed": 3, "missing": [], "ms": 2.1}`` (the count of instances that
confirmed, this one included; the ids of those missing; how long it took). Each
invalidation is logged as coming from ``"webhook"``, with the Strapi event, model and entry
(``documentId``, else ``id``) (`isr.ISR.invalidation_log`).

**Answers** (JSON, ``Cache-Control: no-store``): 200 done (or ignored; ``"tags"`` maps each
tag to the entries it reached, ``"modes"`` each tag to its mode, ``"instances"`` the
confirmation); 502 when the local
invalidation was done but a CDN purge failed (``"cdn"`` says which, and why); 503 when the
local invalidation itself raised; 400 malformed JSON or wrong shape (``"field"`` names it);
401 authentication; 405 not POST; 413 body over ``max_body`` (read incrementally, never
beyond the limit; logged, since Strapi never retries a delivery); 415 not
``application/json`` (UTF-8). A refused request changes nothing. No answer or log line
carries a credential: error texts are redacted (`isr._redact`).

**Body limit.** ``max_body`` is 1 MiB by default. Strapi sends the whole entry, deep
populated: a 70 KB article made a 70,337-byte delivery (64 KiB, the former default,
answered 413 and the publish was lost). 1 MiB is Strapi's own default limit on a JSON
request body (``jsonLimit`` of its body middleware), so an entry saved in one request fits,
with 15 times the largest delivery measured; raise it for entries with large populated
relations.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import string
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import anyio
from anyio.from_thread import BlockingPortal
from typing_extensions import Self

from isr import ISR, ConfigError, StoreUnavailable, get_runtime
from isr._coherence import Confirmation, invalidation_source
from isr.adapters.base import Adapter

from ._entry import _MODES, ModeName
from ._redact import Redactor, check_header_name, check_header_value
from ._synchronization import async_usable
from .cdn import Purger, PurgeResult

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_MODES",
    "DEFAULT_TAG_MAP",
    "StrapiEvent",
    "TagRule",
    "Webhook",
    "WebhookApp",
    "WebhookResponse",
    "WebhookWSGIApp",
    "sign",
]

logger = logging.getLogger("isr")

#: The modes by name; a tuple, so that a JSON list or object in a payload compares unequal
#: instead of raising as a dict key would.
_MODE_NAMES: tuple[ModeName, ...] = ("revalidate", "expire", "purge")


def _as_mode(value: object) -> ModeName | None:
    """``value`` as a mode name, or None (a JSON list or object compares unequal)."""
    return next((name for name in _MODE_NAMES if value == name), None)


#: 1 MiB: Strapi's own default JSON body limit; see the module docstring.
DEFAULT_MAX_BODY = 1024 * 1024

STRAPI_EVENT_HEADER = "x-strapi-event"


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
    """The entry (or media) object; for a localization, that row."""
    previous: Mapping[str, Any] | None = None
    """Former field values (``{"slug": "old"}``) merged over the entry, if the payload
    had a ``previous`` object."""


Role = Literal["own", "collection"]
#: How a model's entries become tags: a template, a list of templates, a mapping of
#: ``"own"`` / ``"collection"`` templates, a callable taking the `StrapiEvent`, or None to
#: ignore the model (see the module docstring).
TagRule: TypeAlias = (
    str
    | Sequence[str]
    | Mapping[Role, str | Sequence[str]]
    | Callable[[StrapiEvent], Iterable[str] | Mapping[Role, Iterable[str]]]
    | None
)

#: The tags of every model (``"*"``) and of media unless ``tag_map`` says otherwise: the
#: model tag is the collection's, the entry's slug and ``documentId`` tags its own.
DEFAULT_TAG_MAP: Mapping[str, TagRule] = {
    "*": ("{model}", "{model}:{slug}", "{model}:{documentId}"),
    "media": ("media", "media:{id}"),
}

#: The strength each Strapi event invalidates with unless ``modes`` says otherwise (the
#: collection's tags never stronger than ``"expire"``).
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


# ------------------------------------------------------------------ tag rules

#: Template fields that are not the entry's: a template naming only these is a collection's.
_EVENT_FIELDS = frozenset({"model", "uid", "event"})


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
        names = {name for _, name in self.parts if name is not None}
        self.role: Role = "own" if names - _EVENT_FIELDS else "collection"

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


_Rule: TypeAlias = (
    tuple[tuple[_Template, Role], ...]
    | Callable[[StrapiEvent], Iterable[str] | Mapping[Role, Iterable[str]]]
    | None
)
_ROLES: tuple[Role, ...] = ("own", "collection")


def _templates(model: str, rule: object) -> list[_Template]:
    if isinstance(rule, str):
        return [_Template(rule)]
    if isinstance(rule, Sequence) and all(isinstance(t, str) for t in rule):
        return [_Template(t) for t in rule]
    raise ConfigError(
        f"tag_map[{model!r}] must be a template, a list of templates, "
        '{"own": [...], "collection": [...]}, a callable or None'
    )


def _compile(model: str, rule: TagRule) -> _Rule:
    if rule is None:
        return None
    if isinstance(rule, Mapping):
        unknown = sorted(set(map(str, rule)) - set(_ROLES))
        if unknown:
            raise ConfigError(
                f"tag_map[{model!r}]: unknown part {unknown[0]!r} (expected 'own' and/or "
                "'collection')"
            )
        return tuple(
            (template, role)
            for role, templates in rule.items()
            for template in _templates(model, templates)
        )
    if callable(rule):
        return rule
    return tuple((template, template.role) for template in _templates(model, rule))


def _text(value: str) -> bool:
    """Whether ``value`` is real Unicode text (JSON can carry lone surrogates)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _tags(rule: _Rule, event: StrapiEvent) -> list[tuple[str, Role]]:
    """The tags ``rule`` gives ``event``, each with its role, in the rule's order. A tag that
    is not Unicode text (a lone surrogate from the payload's JSON) names no page, and no
    store or CDN could take it: it is left out."""
    if rule is None:
        return []
    if callable(rule):
        found = rule(event)
        pairs: list[tuple[object, Role]]
        if isinstance(found, Mapping):
            pairs = []
            for role, tags in found.items():
                if role not in _ROLES:
                    raise TypeError(f"the rule for {event.model!r} returned part {role!r}")
                listed = [tags] if isinstance(tags, str) else list(tags)
                pairs += [(tag, role) for tag in listed]
        else:
            listed = [found] if isinstance(found, str) else list(found)  # a str is one tag
            pairs = [(tag, "own") for tag in listed]
        for tag, _ in pairs:
            if not isinstance(tag, str) or not tag:
                raise TypeError(f"the rule for {event.model!r} returned {tag!r}")
        return [(tag, role) for tag, role in pairs if isinstance(tag, str) and _text(tag)]
    values = {**event.entry, "model": event.model, "uid": event.uid, "event": event.event}
    rendered = ((template.render(values), role) for template, role in rule)
    return [(tag, role) for tag, role in rendered if tag is not None and _text(tag)]


# ------------------------------------------------------------------ modes


@dataclass(frozen=True)
class _Modes:
    """The modes one event gives the entry's own tags, the collection's, and the tags of
    the entry's localizations."""

    own: ModeName
    collection: ModeName
    localizations: ModeName


def _weaker(mode: ModeName, cap: ModeName) -> ModeName:
    return mode if _MODES[mode] <= _MODES[cap] else cap


def _stronger(a: ModeName, b: ModeName) -> ModeName:
    return a if _MODES[a] >= _MODES[b] else b


ModeSpec: TypeAlias = ModeName | Mapping[str, ModeName]


def _mode_name(event: str, part: str, value: object) -> ModeName:
    name = _as_mode(value)
    if name is not None:
        return name
    raise ConfigError(
        f"modes[{event!r}]{part} must be 'expire', 'revalidate' or 'purge', not {value!r:.40}"
    )


def _compile_modes(event: str, spec: object) -> _Modes:
    """``"purge"`` or ``{"own": ..., "collection": ..., "localizations": ...}``: collection
    and localizations default to the own mode, never stronger than ``"expire"``."""
    if isinstance(spec, Mapping):
        unknown = sorted(set(map(str, spec)) - {"own", "collection", "localizations"})
        if unknown:
            raise ConfigError(
                f"modes[{event!r}]: unknown part {unknown[0]!r} (expected 'own', "
                "'collection', 'localizations')"
            )
        own = _mode_name(event, "['own']", spec.get("own", DEFAULT_MODES.get(event, "expire")))
        collection = _mode_name(
            event, "['collection']", spec.get("collection", _weaker(own, "expire"))
        )
        localizations = _mode_name(
            event, "['localizations']", spec.get("localizations", collection)
        )
        return _Modes(own, collection, localizations)
    own = _mode_name(event, "", spec)
    collection = _weaker(own, "expire")
    return _Modes(own, collection, collection)


@dataclass
class _Plan:
    """What a request asks for: each tag with its mode (in order), the keys, the mode the
    answer names, and extra answer fields."""

    tags: dict[str, ModeName]
    keys: list[str]
    mode: ModeName
    extra: dict[str, Any]
    #: What the invalidation log says of the request (`isr.invalidation_source`).
    detail: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------ payloads


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


def _localizations(entry: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    value = entry.get("localizations")
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Invalid("entry.localizations", "expected a list of objects")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _Invalid(f"entry.localizations[{i}]", "expected an object")
    return value


def _digits(value: str, most: int) -> int | None:
    """A non-negative decimal integer of at most ``most`` ASCII digits, else None."""
    value = value.strip()
    if value.isascii() and value.isdigit() and len(value) <= most:
        return int(value)
    return None


def _claim_refused(claimed: bool | None) -> WebhookResponse | None:
    """The answer to a signed request whose claim the store refused (a replay) or could not
    be asked about (the sender should retry), or None: claimed, go on."""
    if claimed is None:
        return _error(503, "the replay guard's store cannot be reached; retry later")
    if not claimed:
        return _error(401, "signature already used (replay)")
    return None


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


# ------------------------------------------------------------------ the webhook


class Webhook:
    """The framework-neutral webhook: ``await webhook.handle(headers, body)`` returns a
    `WebhookResponse`. See the module docstring for payloads, authentication and answers.

    ``runtime=None`` uses the default runtime (`isr.get_runtime`) at each request.
    ``purgers`` are purged concurrently after the local invalidation, by the same tags,
    soft when the tag's mode is ``"revalidate"``; one that takes longer than
    ``purge_timeout`` (retries included) is given up and reported as failed, so the CMS
    gets its answer in time. ``aclose()`` closes the purgers. ``max_seen`` is accepted for
    compatibility and no longer used: the runtime's store keeps the signatures (an
    in-process store at most 10,000 of them, `isr.adapters.claims.LocalClaims`)."""

    def __init__(
        self,
        runtime: ISR | None = None,
        *,
        secret: str | None = None,
        header: str = "authorization",
        hmac_secret: str | bytes | None = None,
        tolerance: float = 300.0,
        max_seen: int = 10_000,
        max_body: int = DEFAULT_MAX_BODY,
        tag_map: Mapping[str, TagRule] | None = None,
        modes: Mapping[str, ModeSpec] | None = None,
        purgers: Sequence[Purger] = (),
        purge_timeout: float = 10.0,
        confirm_timeout: float = 1.0,
        insecure: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if secret is not None:
            check_header_value(secret, "secret", ascii_only=True)
        if isinstance(hmac_secret, str):
            check_header_value(hmac_secret, "hmac_secret")
        elif hmac_secret is not None and not hmac_secret:
            raise ConfigError("hmac_secret is empty")
        if secret is None and hmac_secret is None and not insecure:
            raise ConfigError(
                "the webhook needs secret= (or hmac_secret=): without one anybody could "
                "invalidate the cache; pass insecure=True to run without (tests only)"
            )
        check_header_name(header, "header=")
        if not tolerance > 0:
            raise ConfigError("tolerance must be > 0 seconds")
        if not purge_timeout > 0:
            raise ConfigError("purge_timeout must be > 0 seconds")
        if isinstance(confirm_timeout, bool) or not (
            isinstance(confirm_timeout, (int, float)) and 0 <= confirm_timeout <= 60
        ):
            raise ConfigError("confirm_timeout must be between 0 (no waiting) and 60 seconds")
        if not isinstance(max_body, int) or max_body < 1:
            raise ConfigError("max_body must be a positive number of bytes")
        if not isinstance(max_seen, int) or max_seen < 1:
            raise ConfigError("max_seen must be a positive integer")
        rules = {**DEFAULT_TAG_MAP, **(tag_map or {})}
        self._rules = {model: _compile(model, rule) for model, rule in rules.items()}
        self._modes: dict[str, _Modes] = {
            event: _compile_modes(event, spec)
            for event, spec in {**DEFAULT_MODES, **(modes or {})}.items()
        }
        for purger in purgers:
            if not isinstance(purger, Purger):
                raise ConfigError(f"{purger!r} is not a Purger (name, purge(), stats())")
        self.runtime = runtime
        self.header = header.lower()
        self.max_body = max_body
        self.tolerance = tolerance
        self.max_seen = max_seen
        self.purgers = tuple(purgers)
        self.purge_timeout = purge_timeout
        self.confirm_timeout = float(confirm_timeout)
        self.clock = clock
        self._secret = hashlib.sha256(secret.encode()).digest() if secret else None
        self._hmac_key = _key(hmac_secret) if hmac_secret is not None else None
        self._redact = Redactor([secret, hmac_secret])

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
        # Empty is absent: a WSGI environ cannot tell the two apart (PEP 3333).
        reason = _check_content_type(headers.get("content-type") or None)
        if reason is not None:
            return _error(415, reason)
        length = headers.get("content-length") or None
        if length is not None:
            size = _digits(length, 18)
            if size is None:
                return _error(400, f"bad Content-Length {length!r:.40}")
            if size > self.max_body:
                return self._too_large()
        return None

    def _too_large(self) -> WebhookResponse:
        logger.warning(
            "webhook: refused a body larger than max_body=%d bytes (the CMS will not retry "
            "it: raise max_body if its entries are that large)",
            self.max_body,
        )
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
        timestamp it signs (then it still has to be claimed: `_authenticate_body`)."""
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

    def _authenticate_body(
        self, headers: Mapping[str, str], body: bytes
    ) -> WebhookResponse | tuple[str, float] | None:
        """A 401 answer; or the claim that spends the request's valid signature (its name in
        the store, and how long to hold it: until its timestamp leaves the window); or None
        when no signature is required."""
        if self._hmac_key is None:
            return None
        signature = _given_signature(headers)
        checked = self._check_signature(headers, body, signature)
        if isinstance(checked, str):
            return _error(401, checked)
        return f"webhook:{signature}", max(1.0, checked + self.tolerance - self.clock())

    def _store(self) -> Adapter:
        return (self.runtime if self.runtime is not None else get_runtime()).adapter

    def _async_store(self) -> Adapter:
        """The store as async code on this backend uses it (on trio, an asyncio-only
        store's sync calls in threads: `isr._synchronization.async_usable`)."""
        return async_usable(self._store())

    async def _handle_body(self, headers: Mapping[str, str], body: bytes) -> WebhookResponse:
        signed = self._authenticate_body(headers, body)
        if isinstance(signed, WebhookResponse):
            return signed
        if signed is None:
            return await self._handle_payload(headers, body)
        # Spent from here on, in the runtime's store, so that a copy sent meanwhile (to any
        # process sharing it) is a replay; given back when the answer is 5xx (or none), for
        # the sender's retry.
        claim, ttl = signed
        store = self._async_store()
        refused = _claim_refused(await store.aclaim(claim, ttl))
        if refused is not None:
            return refused
        response: WebhookResponse | None = None
        try:
            response = await self._handle_payload(headers, body)
            return response
        finally:
            if response is None or response.status >= 500:
                with anyio.CancelScope(shield=True):
                    await store.aunclaim(claim)

    async def _handle_payload(self, headers: Mapping[str, str], body: bytes) -> WebhookResponse:
        plan = self._prepare(headers, body)
        if isinstance(plan, WebhookResponse):
            return plan
        runtime = self.runtime if self.runtime is not None else get_runtime()
        try:
            with invalidation_source("webhook", **plan.detail):
                counts = {tag: await runtime.invalidate_tag(tag, m) for tag, m in plan.tags.items()}
                found = {key: await runtime.invalidate(key, plan.mode) for key in plan.keys}
        except Exception as exc:
            return self._store_failed(exc)
        confirmation = None
        if self.confirm_timeout:
            confirmation = await runtime.confirm(self.confirm_timeout)
            self._note_missing(confirmation)
        results = await self._purge_all(plan) if plan.tags else []
        return self._answer(plan, counts, found, results, confirmation)

    def _prepare(self, headers: Mapping[str, str], body: bytes) -> WebhookResponse | _Plan:
        """Parse and plan, or the answer refusing the payload."""
        try:
            payload = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            detail = "too deeply nested" if isinstance(exc, RecursionError) else str(exc)
            return _error(400, f"body is not valid UTF-8 JSON: {detail}"[:300])
        try:
            return self._plan(payload, headers.get(STRAPI_EVENT_HEADER))
        except _Invalid as exc:
            return _error(400, str(exc), field=exc.field)
        except Exception as exc:
            message = self._redact(f"a tag rule failed: {type(exc).__name__}: {exc}")[:300]
            # Where, not the traceback: its text could quote what the redaction removed.
            where = traceback.extract_tb(exc.__traceback__)[-1]
            logger.error(
                "webhook: %s (at %s:%s in %s)", message, where.filename, where.lineno, where.name
            )
            return _error(500, message)

    def _store_failed(self, exc: Exception) -> WebhookResponse:
        """503, so that a sender that retries will: the store could not be reached (the
        runtime applied the invalidation in this process and keeps it in its outbox, see
        `isr.StoreUnavailable`), or the invalidation failed otherwise."""
        if isinstance(exc, StoreUnavailable):
            what = "the cache store cannot be reached; retry (applied in this process only)"
        else:
            what = "local invalidation failed"
        message = self._redact(f"{what}: {type(exc).__name__}: {exc}")[:300]
        logger.error("webhook: %s", message)
        response = _error(503, message)
        response.headers["retry-after"] = "5"
        return response

    def _note_missing(self, confirmation: Confirmation) -> None:
        """Log the instances that did not confirm in time: the CDNs are purged anyway (a
        frozen replica must not hold every publish back), and may refetch its old page."""
        if confirmation.missing:
            logger.warning(
                "webhook: %d instance(s) did not confirm within confirm_timeout=%g s (%s); "
                "purging the CDNs anyway",
                len(confirmation.missing),
                self.confirm_timeout,
                ", ".join(confirmation.missing),
            )

    def _answer(
        self,
        plan: _Plan,
        counts: dict[str, int],
        found: dict[str, bool],
        results: list[PurgeResult],
        confirmation: Confirmation | None = None,
    ) -> WebhookResponse:
        answer: dict[str, Any] = {
            "ok": True,
            **plan.extra,
            "mode": plan.mode,
            "tags": counts,
            "modes": plan.tags,
            "keys": found,
            "cdn": [result.to_json() for result in results],
        }
        if confirmation is not None:
            answer["instances"] = confirmation.as_json()
        if all(result.ok for result in results):
            return WebhookResponse(200, answer)
        answer["ok"] = False
        answer["error"] = "a CDN purge failed; the local invalidation was done"
        return WebhookResponse(502, answer)

    # -------------------------------------------------------------- payloads

    def _plan(self, payload: object, header_event: str | None) -> WebhookResponse | _Plan:
        """What to invalidate, or an answer (an event ignored)."""
        if not isinstance(payload, dict):
            raise _Invalid("body", "expected a JSON object")
        if header_event is not None and header_event.strip() != payload.get("event"):
            body_event = payload.get("event")
            raise _Invalid(
                "event",
                f"the X-Strapi-Event header says {header_event.strip()!r:.60} but the body's "
                f"event is {body_event!r:.60}",
            )
        if "event" in payload:
            return self._plan_strapi(payload)
        unknown = sorted(set(payload) - {"tags", "keys", "mode"})
        if unknown:
            raise _Invalid(unknown[0][:60], "unknown field (expected tags, keys, mode or event)")
        tags = _strings(payload, "tags")
        keys = _strings(payload, "keys")
        given = payload.get("mode", "expire")
        mode = _as_mode(given)
        if mode is None:
            raise _Invalid("mode", f"expected 'expire', 'revalidate' or 'purge', not {given!r:.40}")
        if not tags and not keys:
            raise _Invalid("tags", "nothing to invalidate: give tags and/or keys")
        return _Plan(dict.fromkeys(tags, mode), keys, mode, {})

    def _plan_strapi(self, payload: dict[str, Any]) -> WebhookResponse | _Plan:
        event = payload["event"]
        if not isinstance(event, str):
            raise _Invalid("event", "expected a string")
        modes = self._modes.get(event)
        if modes is None:
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
        localizations = _localizations(entry) if where == "entry" else []
        key = uid if uid is not None and uid in self._rules else model
        rule = self._rules[key] if key in self._rules else self._rules.get("*")
        extra: dict[str, Any] = {"event": event, "model": model}

        found = _tags(rule, StrapiEvent(event, model, uid, entry))
        if previous:
            merged = {**entry, **previous}
            found += _tags(rule, StrapiEvent(event, model, uid, merged, previous))
        others = [(loc, _tags(rule, StrapiEvent(event, model, uid, loc))) for loc in localizations]
        # An own tag that a still-published localization carries too names a live page.
        live = {tag for loc, tags in others if loc.get("publishedAt") for tag, role in tags}
        plan: dict[str, ModeName] = {}

        def put(tag: str, mode: ModeName) -> None:
            plan[tag] = _stronger(plan[tag], mode) if tag in plan else mode

        for tag, role in found:
            if role == "collection":
                put(tag, modes.collection)
            else:
                put(tag, modes.localizations if tag in live else modes.own)
        for _, tags in others:
            for tag, role in tags:
                put(tag, modes.localizations if role == "own" else modes.collection)
        if not plan:
            return WebhookResponse(200, {"ok": True, **extra, "ignored": "no tags for this model"})
        entry_id = entry.get("documentId") or entry.get("id")
        detail = {"event": event, "model": model}
        if isinstance(entry_id, (str, int)) and not isinstance(entry_id, bool):
            detail["entry"] = str(entry_id)
        return _Plan(plan, [], modes.own, extra, detail)

    # -------------------------------------------------------------- purging

    async def _purge_all(self, plan: _Plan) -> list[PurgeResult]:
        """Purge ``plan``'s tags from every purger: hard for the tags expired or purged,
        soft for those revalidated; each group concurrently."""
        groups = {
            soft: [tag for tag, mode in plan.tags.items() if (mode == "revalidate") == soft]
            for soft in (False, True)
        }
        results: dict[bool, list[PurgeResult]] = {}

        async def group(soft: bool, tags: list[str]) -> None:
            results[soft] = await self._purge(tags, soft=soft)

        async with anyio.create_task_group() as tg:
            for soft, tags in groups.items():
                if tags:
                    tg.start_soon(group, soft, tags)
        return [*results.get(False, []), *results.get(True, [])]

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
                    error = self._redact(f"{type(exc).__name__}: {exc}")
            if results[i] is None:
                logger.error("webhook: purge of %s failed: %s", name, error)
                results[i] = PurgeResult(name, soft, failed=tuple(tags), error=error)

        async with anyio.create_task_group() as tg:
            for i, purger in enumerate(self.purgers):
                tg.start_soon(one, i, purger)
        return [r for r in results if r is not None]


# ------------------------------------------------------------------ ASGI

_Message: TypeAlias = dict[str, Any]
_Receive: TypeAlias = Callable[[], Awaitable[_Message]]
_Send: TypeAlias = Callable[[_Message], Awaitable[None]]


class WebhookApp(Webhook):
    """The `Webhook` as a pure ASGI app: POST only, any path. The body is read
    incrementally and never beyond ``max_body``. On ASGI lifespan shutdown it closes its
    purgers."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:  # any ASGI 3 types
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
            _join(headers, raw_name.decode("latin-1").lower(), raw_value.decode("latin-1"))
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

    async def _read_body(self, receive: _Receive) -> bytes | None:
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

    async def _lifespan(self, receive: _Receive, send: _Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _join(headers: dict[str, str], name: str, value: str) -> None:
    # A repeated header is joined, as HTTP says: a second Authorization fails. With a bare
    # comma, as WSGI servers (gunicorn) join them, so both apps answer the same text.
    headers[name] = f"{headers[name]},{value}" if name in headers else value


def _response_headers(response: WebhookResponse, body: bytes) -> list[tuple[str, str]]:
    return [
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        ("cache-control", "no-store"),
        *response.headers.items(),
    ]


async def _send(send: _Send, response: WebhookResponse) -> None:
    body = response.encode()
    headers = [
        (k.encode("latin-1"), v.encode("latin-1")) for k, v in _response_headers(response, body)
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ------------------------------------------------------------------ WSGI

_READ_CHUNK = 64 * 1024

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    405: "Method Not Allowed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


_LOOPS_LOCK = threading.Lock()


class _LoopThread:
    """One event loop in a daemon thread, for the purgers' async HTTP clients, shared by
    every request of the process: started on first use (and again in a forked child, whose
    copy of the thread is gone), stopped by `close`. A daemon, so that an app nobody closes
    never holds the interpreter's exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._portal: BlockingPortal | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    def portal(self) -> BlockingPortal:
        with self._lock:
            if self._portal is None or self._pid != os.getpid():
                self._start()
            assert self._portal is not None
            return self._portal

    def _start(self) -> None:
        ready = threading.Event()
        box: list[BlockingPortal] = []

        async def serve() -> None:
            async with BlockingPortal() as portal:
                box.append(portal)
                ready.set()
                await portal.sleep_until_stopped()

        thread = threading.Thread(
            target=anyio.run, args=(serve,), name="isr-webhook-purges", daemon=True
        )
        thread.start()
        ready.wait()
        self._portal, self._thread, self._pid = box[0], thread, os.getpid()

    def close(self, last: Callable[[], Awaitable[None]]) -> None:
        """Run ``last`` on the loop (if it runs in this process), then stop it."""
        with self._lock:
            portal, thread, self._portal, self._thread = self._portal, self._thread, None, None
            if portal is None or thread is None or self._pid != os.getpid():
                return
            try:
                portal.call(last)
            finally:
                portal.call(portal.stop)
                thread.join()


class WebhookWSGIApp(Webhook):
    """The `Webhook` as a WSGI app: POST only, any path; the same answers and limits as the
    ASGI `WebhookApp`. Use it under any WSGI server (gunicorn's sync and gthread workers
    are tested), on any store: the local invalidation goes through the runtime's sync API
    (`ISR.invalidate_tag_sync`, `ISR.invalidate_sync`) in the request's thread.

    The body is read incrementally, never beyond ``max_body``: exactly ``Content-Length``
    bytes, or, without one, up to the end of a chunked body where the server says it ends
    (``wsgi.input_terminated``, as gunicorn does); a body that ends short (the client hung
    up) is refused with 400 and acted on in no way.

    The CDN purgers are async (httpx): they run on one event loop in a daemon thread that
    the app starts at its first purge and keeps for its lifetime (one per process, however
    many requests or threads), so their clients and connections are reused, never made
    per request. ``close()`` (or ``with app:``) closes the purgers and stops that loop:
    call it from the server's shutdown hook (gunicorn's ``worker_exit``)."""

    @property
    def _loop(self) -> _LoopThread:
        loop: _LoopThread | None = self.__dict__.get("_loop_thread")
        if loop is None:
            with _LOOPS_LOCK:  # two threads' first purges must not make two loops
                loop = self.__dict__.setdefault("_loop_thread", _LoopThread())
        return loop

    def close(self) -> None:
        """Close the purgers (on their loop) and stop the loop."""
        self._loop.close(self.aclose)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        headers = _environ_headers(environ)
        response = self._check_head(str(environ.get("REQUEST_METHOD", "")), headers)
        if response is None:
            try:
                body = self._read_wsgi_body(environ, headers.get("content-length"))
            except _Disconnected:
                response = _error(400, "the body ended before its Content-Length")
            else:
                if body is None:
                    response = self._too_large()
                else:
                    response = self._handle_body_sync(headers, body)
        encoded = response.encode()
        reason = _REASONS.get(response.status, "")
        start_response(f"{response.status} {reason}", _response_headers(response, encoded))
        return [encoded]

    def _read_wsgi_body(self, environ: Mapping[str, Any], length: str | None) -> bytes | None:
        """The body, or None as soon as it grows past ``max_body`` (checked against
        ``Content-Length`` before this is called)."""
        stream = environ["wsgi.input"]
        if length is not None:
            remaining = _digits(length, 18) or 0
        elif environ.get("wsgi.input_terminated"):
            remaining = self.max_body + 1  # read to the end, or one byte past the limit
        else:
            return b""  # PEP 3333: without a length there is no body to read
        chunks: list[bytes] = []
        size = 0
        while remaining > 0:
            chunk = stream.read(min(remaining, _READ_CHUNK))
            if not chunk:
                if length is not None:
                    raise _Disconnected
                break
            size += len(chunk)
            remaining -= len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def _handle_body_sync(self, headers: Mapping[str, str], body: bytes) -> WebhookResponse:
        signed = self._authenticate_body(headers, body)
        if isinstance(signed, WebhookResponse):
            return signed
        if signed is None:
            return self._handle_payload_sync(headers, body)
        claim, ttl = signed  # as in `Webhook._handle_body`
        store = self._store()
        refused = _claim_refused(store.claim(claim, ttl))
        if refused is not None:
            return refused
        response: WebhookResponse | None = None
        try:
            response = self._handle_payload_sync(headers, body)
            return response
        finally:
            if response is None or response.status >= 500:
                store.unclaim(claim)

    def _handle_payload_sync(self, headers: Mapping[str, str], body: bytes) -> WebhookResponse:
        plan = self._prepare(headers, body)
        if isinstance(plan, WebhookResponse):
            return plan
        runtime = self.runtime if self.runtime is not None else get_runtime()
        try:
            with invalidation_source("webhook", **plan.detail):
                counts = {tag: runtime.invalidate_tag_sync(tag, m) for tag, m in plan.tags.items()}
                found = {key: runtime.invalidate_sync(key, plan.mode) for key in plan.keys}
        except Exception as exc:
            return self._store_failed(exc)
        confirmation = None
        if self.confirm_timeout:
            confirmation = runtime.confirm_sync(self.confirm_timeout)
            self._note_missing(confirmation)
        results: list[PurgeResult] = []
        if plan.tags and self.purgers:
            results = self._loop.portal().call(self._purge_all, plan)
        return self._answer(plan, counts, found, results, confirmation)


def _environ_headers(environ: Mapping[str, Any]) -> dict[str, str]:
    """The request's headers from a WSGI environ, names lower-cased (``HTTP_X_STRAPI_EVENT``
    is ``x-strapi-event``); a repeated header arrives joined by the server."""
    headers: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            _join(headers, key[5:].replace("_", "-").lower(), str(value))
    for key, name in (("CONTENT_TYPE", "content-type"), ("CONTENT_LENGTH", "content-length")):
        if environ.get(key):
            headers[name] = str(environ[key])
    return headers
