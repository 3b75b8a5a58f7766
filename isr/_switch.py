"""The switch: ``with isr.disabled():`` turns the cache off for the code inside, and only it.

    def test_the_page_shows_the_latest_title():
        with isr.disabled():                 # every decorated call runs its loader
            assert get_post("hello")["title"] == "New"

While a scope is disabled, every call of a decorated function (and of the call-site form)
runs its loader for that call alone and stores nothing: status `isr.Status.BYPASS`, no
singleflight, no stale value, no stale-if-error fallback; the loader's exception reaches the
caller. The page middleware passes requests to the app as they came, with ``X-Cache:
BYPASS``. Invalidations still apply to the store. The scope is a context variable's: the
current thread, or the current task and the tasks it starts (as context variables are
inherited), so one test (or request) that disables the cache does not disable another's.
A whole runtime can be built disabled: ``ISR(enabled=False)``, or ``ISR_ENABLED=0`` for
``ISR.from_env``.

**What it costs.** Nothing on a fresh hit. The hot paths (the decorator's generated wrapper,
the middleware's quick path) compare an entry's generation with their store's ``gen``;
while any scope in the process is disabled (and always, for a disabled runtime) each hot
path is given `CLOSED` instead of its store, whose ``gen`` no entry has, so every call takes
the slow path, which asks the context variable (`bypassing`). Calls outside the disabled
scope are answered there as before (a HIT is still a HIT), at the slow path's cost, for as
long as some scope is disabled.
"""

from __future__ import annotations

import threading
import weakref
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Protocol

__all__ = ["CLOSED", "Gated", "bypassing", "disabled", "hot_paths_shut", "register"]


class _Closed:
    """Stands in for a store on a hot path that is shut: no entry's ``gen`` is its ``gen``."""

    __slots__ = ("gen",)

    def __init__(self) -> None:
        self.gen = object()

    def __repr__(self) -> str:
        return "CLOSED"


#: What a shut hot path compares entries with (see the module docstring).
CLOSED = _Closed()

_off: ContextVar[bool] = ContextVar("isr_disabled", default=False)


class Gated(Protocol):
    """Something with a hot path (a runtime, a page middleware) that the switch shuts."""

    def shut_hot_paths(self, shut: bool) -> None:
        """Give the hot paths `CLOSED` (``shut``) or their store again (if enabled)."""
        ...


class _Switch:
    """The process's disabled scopes, counted, and the hot paths to shut while any is open."""

    def __init__(self) -> None:
        self.scopes = 0
        self.lock = threading.Lock()
        self.gated: weakref.WeakSet[Gated] = weakref.WeakSet()

    def move(self, by: int) -> None:
        with self.lock:
            before = self.scopes
            self.scopes = before + by
            if (before == 0) != (self.scopes == 0):
                shut = self.scopes > 0
                for gated in list(self.gated):
                    gated.shut_hot_paths(shut)


_switch = _Switch()


def register(gated: Gated) -> None:
    """Have ``gated``'s hot paths shut while a scope is disabled (shut at once if one is)."""
    with _switch.lock:
        _switch.gated.add(gated)
        gated.shut_hot_paths(_switch.scopes > 0)


def hot_paths_shut() -> bool:
    """Whether a scope is disabled somewhere in the process (hot paths are then shut)."""
    return _switch.scopes > 0


def bypassing() -> bool:
    """Whether the cache is off for the code running now (inside `disabled`)."""
    return _switch.scopes > 0 and _off.get()


class disabled:
    """``with isr.disabled():``: the cache is off for the code inside (sync or async), and
    for the tasks it starts; see the module docstring of ``isr._switch``. Nested and
    concurrent scopes are independent; leaving one restores what was there before."""

    __slots__ = ("_tokens",)

    def __init__(self) -> None:
        self._tokens: list[Token[bool]] = []

    def __enter__(self) -> None:
        self._tokens.append(_off.set(True))
        _switch.move(+1)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _off.reset(self._tokens.pop())
        _switch.move(-1)

    def __repr__(self) -> str:
        return "isr.disabled()"
