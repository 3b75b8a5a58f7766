"""Coherence you can see: live instances, confirmations, the invalidation log (the data).

Plain data and rules, no I/O: what an instance, a confirmation and a logged invalidation
are (`Instance`, `Confirmation`, `LoggedInvalidation`), when an instance counts as live
(`is_live`), how their records are written and read back in a store (JSON text, checked
field by field: a record whoever can write the store altered is dropped, never trusted
beyond its fields' types), and where an invalidation comes from (`invalidation_source`, a
context variable the webhook and the CLI set around their invalidations).

The stores keep the records (`isr.adapters.base.Adapter.register` and the ops after it);
the runtime heartbeats, confirms and logs (`isr.ISR.instances`, `isr.ISR.confirm`,
`isr.ISR.invalidation_log`).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ._errors import ConfigError
from ._redact import Redactor

__all__ = [
    "LIVE_BEATS",
    "SOURCES",
    "Confirmation",
    "Instance",
    "LoggedInvalidation",
    "current_source",
    "invalidation_source",
    "is_live",
]

#: An instance is live while its last heartbeat is at most this many heartbeats old.
LIVE_BEATS = 3
#: A record older than this many heartbeats is pruned by the next reader.
PRUNE_BEATS = 10
#: Where an invalidation can come from.
SOURCES = ("code", "cli", "webhook")
#: The longest detail value kept in the log, and the most details.
DETAIL_CHARS = 200
DETAIL_ITEMS = 8

_EMPTY: Mapping[str, str] = MappingProxyType({})  # the default source's: never changed
_redact = Redactor()


@dataclass(frozen=True)
class Instance:
    """One runtime sharing the store: who it is and when it was last heard of."""

    id: str
    """``"<host>:<pid>:<6 hex>"``, stable for the runtime's life (`isr.ISR.instance_id`)."""
    host: str
    pid: int
    started: float
    """Unix time the runtime started."""
    namespace: str
    seen: float
    """Time of its last heartbeat (the runtime's clock: unix time on a shared store)."""
    l1: bool
    """It holds a local copy (an L1) that invalidations must reach."""
    applied: int | None
    """The highest bus epoch it has applied (None: no bus)."""
    heartbeat: float = 1.0
    """Seconds between its heartbeats."""


@dataclass(frozen=True)
class Confirmation:
    """Which live instances applied every invalidation asked about, within the timeout."""

    confirmed: tuple[str, ...]
    """Ids of the instances that applied everything asked (the caller's own included)."""
    missing: tuple[str, ...]
    """Ids of live instances that had not within the timeout (frozen, partitioned, slow)."""
    ms: float
    """Milliseconds it took (the timeout, when some are missing)."""

    @property
    def complete(self) -> bool:
        """True when no live instance is missing."""
        return not self.missing

    def as_json(self) -> dict[str, object]:
        """``{"confirmed": 3, "missing": [...], "ms": 2.1}``: the webhook's ``"instances"``."""
        return {"confirmed": len(self.confirmed), "missing": list(self.missing), "ms": self.ms}

    def to_record(self) -> str:
        """The JSON text a store keeps (the ids in full)."""
        return json.dumps(
            {"confirmed": list(self.confirmed), "missing": list(self.missing), "ms": self.ms}
        )

    @classmethod
    def from_record(cls, text: str | bytes | None) -> Confirmation | None:
        """The confirmation a record holds, or None for none or a malformed one."""
        data = _loads(text)
        if data is None:
            return None
        confirmed, missing, ms = data.get("confirmed"), data.get("missing"), data.get("ms")
        if not (isinstance(confirmed, list) and isinstance(missing, list)):
            return None
        if not (_strs(confirmed) and _strs(missing) and isinstance(ms, (int, float))):
            return None
        if not _number(ms):
            return None
        return cls(tuple(confirmed), tuple(missing), float(ms))


@dataclass(frozen=True)
class LoggedInvalidation:
    """One invalidation as the store's log keeps it (newest first from
    `isr.ISR.invalidation_log`)."""

    id: str
    """Store-assigned and ordered (a Redis stream id; ``"<ms>-<n>"`` elsewhere)."""
    at: float
    """Unix time it was made."""
    scope: str
    """``"key"``, ``"tag"`` or ``"all"``."""
    name: str
    """The key or the tag (``""`` for all)."""
    mode: str
    """``"expire"``, ``"revalidate"`` or ``"purge"``."""
    source: str
    """``"code"``, ``"cli"`` or ``"webhook"`` (`invalidation_source`)."""
    detail: Mapping[str, str]
    """What the source said of it: a webhook's ``event``, ``model`` and ``entry``."""
    instance: str
    """The id of the instance that made it."""
    epoch: int | None
    """The bus epoch it was published as (None: no bus)."""
    confirmation: Confirmation | None = field(default=None)
    """Who had applied it, once a confirmation covering it was made (`isr.ISR.confirm`)."""

    def as_json(self) -> dict[str, object]:
        """Every field as JSON-ready values (the confirmation's ids in full)."""
        done = self.confirmation
        return {
            "id": self.id,
            "at": self.at,
            "scope": self.scope,
            "name": self.name,
            "mode": self.mode,
            "source": self.source,
            "detail": dict(self.detail),
            "instance": self.instance,
            "epoch": self.epoch,
            "confirmation": None if done is None else json.loads(done.to_record()),
        }

    def to_record(self) -> str:
        """The JSON text a store keeps (without ``id`` and ``confirmation``: the store's)."""
        fields = self.as_json()
        del fields["id"], fields["confirmation"]
        return json.dumps(fields)

    @classmethod
    def from_record(
        cls, id: str, text: str | bytes | None, confirmation: Confirmation | None = None
    ) -> LoggedInvalidation | None:
        """The logged invalidation ``text`` holds, or None for a malformed record."""
        data = _loads(text)
        if data is None:
            return None
        at, epoch, detail = data.get("at"), data.get("epoch"), data.get("detail")
        texts = [data.get(name) for name in ("scope", "name", "mode", "source", "instance")]
        if not isinstance(at, (int, float)):
            return None
        if not (
            _number(at)
            and all(isinstance(t, str) for t in texts)
            and (epoch is None or (isinstance(epoch, int) and not isinstance(epoch, bool)))
            and isinstance(detail, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in detail.items())
        ):
            return None
        scope, name, mode, source, instance = (str(t) for t in texts)
        return cls(
            id,
            float(at),
            scope,
            name,
            mode,
            source,
            dict(detail),
            instance,
            epoch,
            confirmation,
        )


def instance_record(instance: Instance) -> str:
    """The JSON text a store keeps for ``instance`` (its ``applied`` is kept apart)."""
    return json.dumps(
        {
            "id": instance.id,
            "host": instance.host,
            "pid": instance.pid,
            "started": instance.started,
            "namespace": instance.namespace,
            "seen": instance.seen,
            "l1": instance.l1,
            "heartbeat": instance.heartbeat,
        }
    )


def instance_from(text: str | bytes | None, applied: int | None = None) -> Instance | None:
    """The instance a record holds (with ``applied`` from the store's own field), or None
    for a malformed record."""
    data = _loads(text)
    if data is None:
        return None
    iid, host, ns = data.get("id"), data.get("host"), data.get("namespace")
    pid, started, seen = data.get("pid"), data.get("started"), data.get("seen")
    l1, beat = data.get("l1"), data.get("heartbeat")
    if not (
        isinstance(started, (int, float))
        and isinstance(seen, (int, float))
        and isinstance(beat, (int, float))
    ):
        return None
    if not (
        isinstance(iid, str)
        and isinstance(host, str)
        and isinstance(ns, str)
        and isinstance(pid, int)
        and _number(started)
        and _number(seen)
        and isinstance(l1, bool)
        and _number(beat)
        and beat > 0
    ):
        return None
    return Instance(iid, host, pid, float(started), ns, float(seen), l1, applied, float(beat))


def is_live(instance: Instance, now: float) -> bool:
    """Whether ``instance`` counts as running at ``now``: heard of within `LIVE_BEATS`
    heartbeats (its own interval)."""
    return now - instance.seen <= LIVE_BEATS * instance.heartbeat


def is_stale(instance: Instance, now: float) -> bool:
    """Whether a reader may delete ``instance``'s record: silent for `PRUNE_BEATS`
    heartbeats, well past `is_live`, so a reader whose clock runs ahead prunes nothing
    live."""
    return now - instance.seen > PRUNE_BEATS * instance.heartbeat


def parse_epoch(value: Any) -> int | None:
    """An applied epoch as a store returned it (bytes, text, int), or None."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# ------------------------------------------------------------------ sources

_SOURCE: contextvars.ContextVar[tuple[str, Mapping[str, str]]] = contextvars.ContextVar(
    "isr_invalidation_source", default=("code", _EMPTY)
)


@contextlib.contextmanager
def invalidation_source(source: str, **detail: object) -> Iterator[None]:
    """Log the invalidations made inside the block as coming from ``source`` (``"code"``,
    ``"cli"`` or ``"webhook"``) with ``detail`` (``event="entry.publish", model="article",
    entry="x4m1..."``): what `isr.ISR.invalidation_log` shows. Details are text, at most
    200 characters each and 8 in all; anything shaped like a credential (a URL's password,
    ``token=...``) is redacted, and a name that says secret (``secret``, ``authorization``,
    ``password``, ``token``) is refused: the log is for reading, not for secrets. A
    context variable: it follows the task (and a thread started with its context)."""
    if source not in SOURCES:
        raise ConfigError(f"source must be one of {', '.join(SOURCES)}, not {source!r:.40}")
    token = _SOURCE.set((source, _details(detail)))
    try:
        yield
    finally:
        _SOURCE.reset(token)


def current_source() -> tuple[str, Mapping[str, str]]:
    """Where an invalidation made now comes from, and its detail (`invalidation_source`)."""
    return _SOURCE.get()


_SECRET_NAME = ("secret", "authorization", "password", "passwd", "token", "cookie", "credential")


def _details(detail: Mapping[str, object]) -> Mapping[str, str]:
    if len(detail) > DETAIL_ITEMS:
        raise ConfigError(f"at most {DETAIL_ITEMS} details, not {len(detail)}")
    kept: dict[str, str] = {}
    for name, value in detail.items():
        if any(word in name.lower() for word in _SECRET_NAME):
            raise ConfigError(f"detail {name!r:.40} looks like a credential: not logged")
        if value is None:
            continue
        text = _redact.excerpt(str(value), DETAIL_CHARS)
        kept[name[:40]] = text
    return kept


# ------------------------------------------------------------------ parsing


def _loads(text: str | bytes | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _strs(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)
