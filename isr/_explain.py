"""``isr explain``'s answer: one key's state now, and what its next read will do and why.

Plain data and plain functions, no I/O: the runtime gathers the facts (``isr/_async/explain.py``
and its generated sync twin read the store without changing it; the runtime adds its
own fetches, backoffs, log and instances) and `explanation` turns them into an `Explanation`.
What the next read does is decided by the runtime's own decision functions
(`isr._entry.classify`, `isr._decisions.decide_read`), in the order the drivers apply them,
never by a second reading of the rules.
"""

from __future__ import annotations

import json
import math
import re
import string
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

from ._backoff import Backoff
from ._coherence import Instance, LoggedInvalidation
from ._decisions import decide_read
from ._entry import EXPIRED, FRESH, INF, Entry, Generation, Mode, Policy, Verdict, classify
from ._status import Status

__all__ = [
    "Explanation",
    "Facts",
    "Windows",
    "explanation",
    "logged_json",
    "page_rule_windows",
    "template_matches",
]

#: How many logged invalidations `isr.ISR.explain` searches for the one that set a mark.
LOG_SEARCHED = 200
#: How long explain waits for the other instances to say whether their L1 holds the key.
HOLDERS_WAIT = 0.5


class Facts(NamedTuple):
    """What the store and this process hold for one key, gathered without changing it.

    ``local``: this process's own copy (an L1's), None without one; ``has_l1``: the store
    keeps such copies. ``entry`` and ``generation``: the store's. ``locked``: someone
    holds the key's fetch lock in the store (None: the store keeps none, or did not say).
    ``now``: the runtime's clock, ``wall``: unix time, read together."""

    key: str
    local: Entry | None
    local_generation: Generation
    has_l1: bool
    entry: Entry | None
    generation: Generation
    locked: bool | None
    now: float
    wall: float


class Windows(NamedTuple):
    """Where a key's windows come from: a decorated function (its key template matches the
    key) or a page rule (its path matches the page's), with its windows."""

    source: str  # "function" | "page rule"
    name: str  # the function's qualified name, or the rule's path
    template: str  # the key template, or the rule's path
    policy: Policy
    xfetch: float | None = None
    soft_timeout: float | None = None


@dataclass(frozen=True)
class Explanation:
    """One key's state now, and what its next read will do and why (`isr.ISR.explain`).

    Times are unix seconds; durations are seconds, ``None`` for an unbounded window. A
    ``*_left`` duration is negative once its window has passed. `text` (and ``str()``) says
    it in plain words; `as_json` gives it as JSON-ready data.
    """

    key: str
    """The key explained."""
    at: float
    """When (unix time) the explanation was made."""
    found: bool
    """Whether the store holds an entry under the key."""
    next_read: str
    """What the next read does: ``"HIT"``, ``"STALE"``, ``"MISS"``, ``"STALE-IF-ERROR"``, or
    ``"BYPASS"`` where the cache is off (`isr.disabled`, ``ISR(enabled=False)``)."""
    refresh: bool
    """Whether that read starts a background refresh (STALE)."""
    why: str
    """Why, in plain words."""
    verdict: str
    """The core's classification of the entry (`isr._entry.Verdict`): ``"fresh"``,
    ``"stale"``, ``"expired"`` (fetch; the old value is the fallback) or ``"absent"``."""
    produced: float | None = None
    """When the entry's value was produced (unix time)."""
    age: float | None = None
    """Seconds since then."""
    ttl: float | None = None
    """The fresh window (the entry's own, else its loader's), seconds."""
    swr: float | None = None
    """The stale-while-revalidate window, seconds; None: unbounded."""
    stale_if_error: float | None = None
    """The stale-if-error window, seconds."""
    fresh_left: float | None = None
    """Seconds until the fresh window ends (negative: ended that long ago)."""
    stale_left: float | None = None
    """Seconds until the stale window ends; None: it never does."""
    error_left: float | None = None
    """Seconds until the stale-if-error window ends (then the entry is gone)."""
    phase: str = "absent"
    """Where the entry stands in its windows by time alone: ``"fresh"``, ``"stale"``,
    ``"stale-if-error"``, ``"past its windows"`` or ``"absent"`` (marks aside)."""
    windows_from: str = "none"
    """``"entry"`` (stored with it), ``"function"`` or ``"page rule"`` (the loader whose
    template matches the key, for a key the store does not hold) or ``"none"``."""
    loader: str | None = None
    """The decorated function or page rule whose key template matches the key, if any."""
    loader_kind: str | None = None
    """Which of the two: ``"function"`` or ``"page rule"``."""
    template: str | None = None
    """That function's key template (a page rule's path)."""
    tags: tuple[str, ...] = ()
    """The entry's tags."""
    mark: str | None = None
    """The invalidation mark in force: ``"revalidate"``, ``"expire"`` or ``"purge"``."""
    marked_by: str | None = None
    """``"key or tag"`` (an invalidation of the key or of one of its tags), ``"all"`` (an
    invalidate-all, through the generation), or, matched in the log, ``"key"`` or
    ``"tag"``."""
    invalidation: Mapping[str, Any] | None = None
    """The logged invalidation (`isr.ISR.invalidation_log`) that set the mark, as its
    ``as_json`` data; for a key the store does not hold, the latest logged invalidation of
    the key."""
    generation: Mapping[str, int] = field(default_factory=dict)
    """The store's invalidate-all record (``current``, ``revalidate``, ``expire``,
    ``purge``) and the ``entry``'s generation (the one it was fetched under)."""
    fetching: str | None = None
    """A fetch of the key under way: ``"this process"``, ``"another process"`` (the store's
    fetch lock is held), or None."""
    backoff: Mapping[str, Any] | None = None
    """The key's backoff after failed fetches, in this process: ``retry_in`` seconds,
    ``failures`` in a row and the last ``error``."""
    l1_here: bool | None = None
    """Whether this instance holds a copy in its L1; None: its store keeps none."""
    l1_others: str = ""
    """What is known of the other instances' L1 copies, in words."""
    l1_holders: Mapping[str, bool] = field(default_factory=dict)
    """The other live instances keeping an L1 that answered whether theirs holds a copy
    (id: True or False); one missing from it did not answer in time."""
    instances: tuple[str, ...] = ()
    """The live instances (ids) sharing the store, where known."""
    notes: tuple[str, ...] = ()
    """Anything else worth knowing, in words."""

    def __str__(self) -> str:
        return self.text()

    def text(self) -> str:
        """The explanation in plain words, one fact a line."""
        return "\n".join(_lines(self))

    def as_json(self) -> dict[str, Any]:
        """The explanation as JSON-ready data (what ``isr explain --json`` prints)."""
        return {
            name: (dict(value) if isinstance(value, Mapping) else value)
            for name, value in self.__dict__.items()
        } | {"tags": list(self.tags), "instances": list(self.instances), "notes": list(self.notes)}


# ---------------------------------------------------------------------- matching


_FIELD = re.compile(r"(.*?)")


def template_matches(template: str, key: str) -> bool:
    """Whether ``key`` could have been formatted from the key ``template``
    (``"post:{slug}:{lang}"``): its literal parts in order, anything between them."""
    pattern = _template_patterns.get(template)
    if pattern is None:
        parts = []
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError:
            parsed = [(template, None, None, None)]
        for literal, name, _spec, _conversion in parsed:
            parts.append(re.escape(literal))
            if name is not None:
                parts.append(_FIELD.pattern)
        pattern = re.compile("".join(parts), re.DOTALL)
        if len(_template_patterns) > 1024:
            _template_patterns.clear()
        _template_patterns[template] = pattern
    return pattern.fullmatch(key) is not None


_template_patterns: dict[str, re.Pattern[str]] = {}


def literal_length(template: str) -> int:
    """How much of ``template`` is literal text: the more, the more specific a match."""
    try:
        return sum(len(literal) for literal, *_ in string.Formatter().parse(template))
    except ValueError:
        return len(template)


def page_rule_windows(key: str, sites: Iterable[Any]) -> Windows | None:
    """The page rule a page key (``page:/posts/hello``, ``page:https://host/path#...``)
    was cached under, among ``sites`` (`isr._http.Site`), with its windows."""
    if not key.startswith("page:"):
        return None
    rest = key[5:].partition("#")[0]
    host = None
    if rest.startswith("/"):
        path = unquote(rest)
    else:
        parts = urlsplit(rest)
        host, path = parts.netloc, unquote(parts.path)
    for site in sites:
        if (site.origin is None) != (host is not None):
            continue  # a key with a host is a site's without an origin, and conversely
        for route in site.routes:
            if route.pattern.fullmatch(path):
                rule = route.rule
                policy = Policy(rule.ttl, rule.swr, rule.stale_if_error)
                return Windows("page rule", rule.path, rule.path, policy)
    return None


# ---------------------------------------------------------------------- explaining


def explanation(
    facts: Facts,
    *,
    windows: Windows | None,
    backoff: Backoff | None,
    fetching_here: bool,
    log: Sequence[LoggedInvalidation] | None,
    instances: Sequence[Instance] | None,
    instance_id: str | None,
    off: str | None = None,
    holders: Mapping[str, bool] | None = None,
) -> Explanation:
    """The `Explanation` of what ``facts`` show, with the loader's ``windows`` (None: no
    template matches), this process's ``backoff`` for the key (active or not), whether it
    is ``fetching_here``, the invalidation ``log`` (newest first; None: not available) and
    the live ``instances`` (``holders``: which of them said their L1 holds the key, when
    they were asked). ``off``: why the cache is off for the caller (a disabled
    runtime or `isr.disabled` scope), if it is: the next read then runs its loader."""
    now, wall, key = facts.now, facts.wall, facts.key
    active = backoff if backoff is not None and now < backoff.retry_at else None
    notes: list[str] = []

    # What the next read does, in the drivers' order: this process's own copy first (an
    # L1, which the hot path and the quick answer serve from), then the store's entry.
    read_entry, read_gen, source = facts.entry, facts.generation, "the shared store"
    if facts.has_l1 and facts.local is not None:
        verdict = classify(facts.local, now, facts.local_generation)
        decision = decide_read(facts.local, verdict, now, active if verdict is EXPIRED else None)
        if decision.answer is not None:
            read_entry, read_gen, source = facts.local, facts.local_generation, "this L1"
    if not facts.has_l1:
        source = "the store"
    entry = read_entry
    verdict = classify(entry, now, read_gen)
    decision = decide_read(entry, verdict, now, active if verdict is EXPIRED else None)
    shown = entry if entry is not None else facts.entry

    mark: Mode | None = None
    marked_by: str | None = None
    if shown is not None:
        own = shown.policy.mark
        by_all = read_gen.mark_for(shown.gen)
        if by_all is not None and (own is None or by_all >= own):
            mark, marked_by = by_all, "all"
        elif own is not None:
            mark, marked_by = own, "key or tag"

    produced = None if shown is None else wall - (now - shown.created)
    logged = None
    if log is not None:
        logged = _setter(log, key, shown, mark, marked_by, produced)
        if logged is not None and marked_by == "key or tag":
            marked_by = logged.scope
    elif mark is not None:
        notes.append("the invalidation log is not available to this runtime")

    fetching = None
    if fetching_here:
        fetching = "this process"
    elif facts.locked:
        fetching = "another process"

    next_read, refresh, why = _next(
        decision.answer[1] if decision.answer is not None else None,
        decision.refresh,
        verdict,
        entry,
        now,
        mark,
        marked_by,
        active,
        fetching,
        source,
        windows,
    )

    if off is not None:
        next_read, refresh, why = (
            "BYPASS",
            False,
            f"{off}: the read runs its loader and stores nothing",
        )
    policy = shown.policy if shown is not None else (windows.policy if windows else None)
    out: dict[str, Any] = {}
    if policy is not None:
        out["ttl"] = policy.ttl
        out["swr"] = None if policy.swr == INF else policy.swr
        out["stale_if_error"] = policy.sie
    if shown is not None:
        fresh_until = shown.created + shown.policy.ttl
        stale_until = fresh_until + shown.policy.swr
        error_until = stale_until + shown.policy.sie
        out["fresh_left"] = fresh_until - now
        out["stale_left"] = None if math.isinf(stale_until) else stale_until - now
        out["error_left"] = None if math.isinf(error_until) else error_until - now
        out["phase"] = (
            "fresh"
            if now < fresh_until
            else "stale"
            if now < stale_until
            else "stale-if-error"
            if now < error_until
            else "past its windows"
        )
        out["age"] = now - shown.created
        out["produced"] = produced
        out["tags"] = tuple(shown.tags)
    if windows is not None and windows.xfetch is not None and verdict is FRESH:
        notes.append(
            f"{windows.name} refreshes early (XFetch, beta={windows.xfetch:g}): a HIT "
            "close to the end of the fresh window may start a background refresh"
        )
    if facts.has_l1 and facts.local is not None and source == "the shared store":
        notes.append("this L1's copy cannot answer; the read goes to the shared store")

    generation = dict(facts.generation._asdict())
    if shown is not None:
        generation["entry"] = shown.gen

    return Explanation(
        key=key,
        at=wall,
        found=facts.entry is not None or facts.local is not None,
        next_read=next_read,
        refresh=refresh,
        why=why,
        verdict=verdict.value,
        windows_from="entry" if shown is not None else (windows.source if windows else "none"),
        loader=None if windows is None else windows.name,
        loader_kind=None if windows is None else windows.source,
        template=None if windows is None else windows.template,
        mark=None if mark is None else mark.name.lower(),
        marked_by=marked_by,
        invalidation=None if logged is None else logged_json(logged),
        generation=generation,
        fetching=fetching,
        backoff=None
        if active is None
        else {
            "retry_in": active.retry_at - now,
            "failures": active.failures,
            "error": f"{type(active.error).__name__}: {active.error}",
        },
        l1_here=(facts.local is not None) if facts.has_l1 else None,
        l1_others=_others(facts.has_l1, instances, instance_id, holders),
        l1_holders={} if holders is None else dict(holders),
        instances=tuple(instance.id for instance in instances or ()),
        notes=tuple(notes),
        **out,
    )


def _covers(item: LoggedInvalidation, key: str, tags: tuple[str, ...]) -> bool:
    scope = item.scope
    return (
        scope == "all"
        or (scope == "key" and item.name == key)
        or (scope == "tag" and item.name in tags)
    )


def _setter(
    log: Sequence[LoggedInvalidation],
    key: str,
    entry: Entry | None,
    mark: Mode | None,
    marked_by: str | None,
    produced: float | None,
) -> LoggedInvalidation | None:
    """The logged invalidation that set ``mark`` on ``entry``: the newest one covering the
    key (by key, by one of its tags, or all) with the mark's strength, made after the
    entry was produced (1 s of clock skew between hosts allowed). For a key the store does
    not hold: the newest logged invalidation of the key."""
    if entry is None:
        return next((i for i in log if i.scope == "key" and i.name == key), None)
    if mark is None or produced is None:
        return None
    want = mark.name.lower()
    for item in log:  # newest first
        if item.at < produced - 1.0:
            break
        if item.mode.lower() != want:
            continue
        if marked_by == "all" and item.scope == "all":
            return item
        if marked_by != "all" and item.scope != "all" and _covers(item, key, entry.tags):
            return item
    return None


def _next(
    status: Status | None,
    refresh: bool,
    verdict: Verdict,
    entry: Entry | None,
    now: float,
    mark: Mode | None,
    marked_by: str | None,
    backoff: Backoff | None,
    fetching: str | None,
    source: str,
    windows: Windows | None,
) -> tuple[str, bool, str]:
    """The next read's status, whether it refreshes, and why, from the core's decision."""
    by = "" if mark is None else f"marked {mark.name.lower()} (by {marked_by})"
    if status is Status.HIT:
        assert entry is not None
        left = entry.created + entry.policy.ttl - now
        return "HIT", False, f"fresh in {source} for {_span(left)} more"
    if status is Status.STALE:
        assert entry is not None
        if mark is Mode.REVALIDATE:
            reason = f"{by}: served stale at once"
        else:
            reason = f"past its fresh window by {_span(now - entry.created - entry.policy.ttl)}"
            reason += ", within stale-while-revalidate"
        if fetching is not None:
            return "STALE", False, f"{reason}; the refresh already running in {fetching} goes on"
        if backoff is not None:
            return (
                "STALE",
                False,
                f"{reason}; no refresh until the key's backoff ends in "
                f"{_span(backoff.retry_at - now)} (last fetch failed: {_error(backoff)})",
            )
        return "STALE", True, f"{reason}; one background refresh starts"
    if status is Status.STALE_IF_ERROR:
        assert backoff is not None
        return (
            "STALE-IF-ERROR",
            False,
            f"expired and its last fetch failed ({_error(backoff)}): the old value is served "
            f"until the backoff ends in {_span(backoff.retry_at - now)}, then a read "
            "fetches again",
        )
    # A fetch: EXPIRED (with the old value as a fallback) or ABSENT.
    if verdict is EXPIRED:
        assert entry is not None
        reason = by if mark is not None else "past its stale-while-revalidate window"
        left = entry.created + entry.policy.ttl + entry.policy.swr + entry.policy.sie - now
        fallback = (
            f"; should the fetch fail, the old value is served (STALE-IF-ERROR) for "
            f"{_span(left)} more"
        )
    else:
        fallback = ""
        if entry is None:
            reason = "the store holds no entry under this key"
            if windows is None:
                reason += " (and no registered function or page rule's key template matches it)"
        elif mark is Mode.PURGE:
            reason = f"{by}: never served again"
        else:
            reason = "past all its windows"
    if fetching == "this process":
        how = "waits for the fetch already running in this process"
    elif fetching == "another process":
        how = "waits for the fetch another process is running (it holds the fetch lock)"
    else:
        how = "fetches from the origin"
    return "MISS", False, f"{reason}: the read {how}{fallback}"


def _error(backoff: Backoff) -> str:
    return f"{type(backoff.error).__name__}: {backoff.error}"


def _others(
    has_l1: bool,
    instances: Sequence[Instance] | None,
    me: str | None,
    holders: Mapping[str, bool] | None = None,
) -> str:
    """What is known of the L1 copies of the instances other than ``me``: what they
    answered (``holders``), if they were asked."""
    others = [i for i in instances or () if i.id != me]
    with_l1 = [i.id for i in others if i.l1]
    here = "" if has_l1 else "this runtime keeps no L1; "
    if instances is None:
        return f"{here}other instances: not known here"
    if not with_l1:
        return f"{here}no other live instance keeps an L1 ({len(others)} other live)"
    if holders is None:
        return f"{here}{len(with_l1)} other live instance(s) keep an L1: could not be asked"
    hold = [i for i in with_l1 if holders.get(i) is True]
    lack = [i for i in with_l1 if holders.get(i) is False]
    silent = [i for i in with_l1 if i not in holders]
    parts = [
        f"held by {', '.join(hold)}" if hold else "held by no other instance",
        f"not by {', '.join(lack)}" if lack and hold else "",
        f"{', '.join(silent)} did not answer" if silent else "",
    ]
    return here + "; ".join(p for p in parts if p)


def logged_json(item: LoggedInvalidation) -> dict[str, Any]:
    """A logged invalidation as JSON-ready data: its record as the store keeps it, its id,
    and its confirmation as the webhook says it (how many confirmed, which were missing, in
    how many ms)."""
    confirmation = item.confirmation
    return {
        "id": item.id,
        **json.loads(item.to_record()),
        "confirmation": None if confirmation is None else confirmation.as_json(),
    }


# ---------------------------------------------------------------------- words


def _span(seconds: float | None) -> str:
    """``seconds`` as a person says it: ``"0.4 s"``, ``"75 s"``, ``"3 min 5 s"``,
    ``"2 h 10 min"``, ``"1 d 3 h"``; ``"unbounded"`` for None or infinity."""
    if seconds is None or math.isinf(seconds):
        return "unbounded"
    s = abs(seconds)
    if s < 10:
        text = f"{s:.1f} s"
    elif s < 120:
        text = f"{s:.0f} s"
    elif s < 7200:
        text = _two(int(s // 60), "min", int(s % 60), "s")
    elif s < 172800:
        text = _two(int(s // 3600), "h", int(s % 3600 // 60), "min")
    else:
        text = _two(int(s // 86400), "d", int(s % 86400 // 3600), "h")
    return text if seconds >= 0 else f"-{text}"


def _two(big: int, unit: str, small: int, small_unit: str) -> str:
    return f"{big} {unit}" if small == 0 else f"{big} {unit} {small} {small_unit}"


def _when(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix))


def _window(name: str, length: float | None, left: float | None) -> str:
    if length is None:
        return f"{name} unbounded"
    if left is None:
        return f"{name} {_span(length)}"
    if left > 0:
        return f"{name} {_span(length)} ({_span(left)} left)"
    return f"{name} {_span(length)} (ended {_span(-left)} ago)"


def _lines(e: Explanation) -> Iterable[str]:
    yield f"key         {e.key}"
    if e.loader is not None:
        what = "path" if e.loader_kind == "page rule" else "key template"
        yield f"loader      {e.loader} ({e.loader_kind}, {what} {e.template!r})"
    else:
        yield "loader      none registered here matches this key"
    if e.produced is not None and e.age is not None:
        yield f"produced    {_when(e.produced)} ({_span(e.age)} ago)"
    else:
        yield "produced    - (no entry)"
    if e.ttl is not None:
        src = "stored with the entry" if e.windows_from == "entry" else f"the {e.windows_from}'s"
        yield (
            f"windows     {_window('ttl', e.ttl, e.fresh_left)}, "
            f"{_window('swr', e.swr, e.stale_left)}, "
            f"{_window('stale-if-error', e.stale_if_error, e.error_left)} [{src}]"
        )
        if e.found:
            yield f"stands      {e.phase} by time"
    else:
        yield "windows     unknown (no entry, no matching loader)"
    if e.found:
        yield f"tags        {', '.join(e.tags) if e.tags else '(none)'}"
    if e.mark is not None:
        yield f"mark        {e.mark} (by {e.marked_by})"
    elif e.found:
        yield "mark        none"
    if e.invalidation is not None:
        inv = e.invalidation
        title = "set by    " if e.mark is not None else "last inval."
        yield f"{title}  {_describe(inv)}"
    gen = e.generation
    if gen:
        line = (
            f"generation  store current {gen.get('current')} (revalidate {gen.get('revalidate')}"
            f", expire {gen.get('expire')}, purge {gen.get('purge')})"
        )
        if "entry" in gen:
            line += f"; entry fetched under {gen['entry']}"
        yield line
    yield f"fetch       {'in progress in ' + e.fetching if e.fetching else 'none in progress'}"
    if e.backoff is not None:
        b = e.backoff
        yield (
            f"backoff     {b['failures']} failed fetch(es), retry in {_span(b['retry_in'])} "
            f"(last: {b['error']})"
        )
    else:
        yield "backoff     none"
    if e.l1_here is not None:
        yield f"L1          this instance {'holds' if e.l1_here else 'does not hold'} a copy"
        yield f"            {e.l1_others}"
    else:
        yield f"L1          {e.l1_others}"
    if e.instances:
        yield f"instances   {', '.join(e.instances)}"
    refresh = " + background refresh" if e.refresh else ""
    yield f"next read   {e.next_read}{refresh}: {e.why}"
    for note in e.notes:
        yield f"note        {note}"


def _describe(inv: Mapping[str, Any]) -> str:
    scope, name = inv.get("scope"), inv.get("name")
    what = "everything" if scope == "all" else f"{scope} {name!r}"
    text = f"{inv.get('mode')} of {what} at {_when(float(inv.get('at', 0)))} [{inv.get('id')}]"
    source = inv.get("source")
    if source:
        text += f", from {source}"
        detail = inv.get("detail")
        if isinstance(detail, Mapping) and detail:
            text += " (" + ", ".join(f"{k}={v}" for k, v in detail.items()) + ")"
    confirmation = inv.get("confirmation")
    if isinstance(confirmation, Mapping):
        missing = confirmation.get("missing") or []
        text += f"; confirmed by {confirmation.get('confirmed')}"
        text += f", missing {', '.join(missing)}" if missing else ", none missing"
    return text
