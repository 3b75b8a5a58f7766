"""The library's own exceptions, in one tree.

    ISRError                     everything isr-runtime raises on its own account
    ├── ConfigError (ValueError) a bad argument: a window, a mode, a cache URL, a rule, a
    │   │                        secret, a store option; raised when the object is made or
    │   │                        the call is made, before anything changes
    │   └── TemplateError        a key or tag template that does not fit the decorated
    │                            function (or a key/tag callable that returned a non-str);
    │                            raised at decoration time where it can be
    ├── CodecError (ValueError)  a value a shared store's codec cannot encode (nothing was
    │                            stored), or a record it cannot read
    ├── StoreUnavailable         an invalidation could not reach the shared store: it was
    │                            applied in this process and waits in its outbox, to reach
    │                            the store when it answers again (the caller may retry; the
    │                            webhook answers 503)
    └── OriginError              (isr.asgi / isr.wsgi) the app answered 5xx while rendering a
                                 page for the cache

    ISRWarning (UserWarning)     a likely mistake that still works: two functions with one
                                 key template on a runtime, a sync loader blocking an event
                                 loop (`warn`)

``except isr.ISRError`` catches all of them; ``except ValueError`` still catches the bad
arguments, as before. Exceptions raised by a loader are never wrapped: the caller sees the
origin's own exception (or the stale value, when ``stale_if_error`` allows).
"""

from __future__ import annotations

import os
import sys
import warnings

__all__ = ["ConfigError", "ISRError", "ISRWarning", "StoreUnavailable", "TemplateError", "warn"]


class ISRError(Exception):
    """Base class of isr-runtime's own errors."""


class ConfigError(ISRError, ValueError):
    """A bad argument: a runtime option, a window, a mode, a cache URL, a rule, a secret."""


class TemplateError(ConfigError):
    """A key or tag template that does not match the decorated function."""


class StoreUnavailable(ISRError):
    """An invalidation could not reach the shared store (Redis down, frozen, out of use).

    It was applied in this process (its L1) and waits in the runtime's outbox
    (``stats().outbox``): the runtime applies it to the store as soon as the store answers,
    before it serves anything from the store again. The caller learns that the other
    instances have not heard of it yet, and may retry (the webhook answers 503, so a CMS
    that retries will)."""


class ISRWarning(UserWarning):
    """A likely mistake that isr-runtime lets run: see the message for the fix. Turn it into
    an error in tests with ``-W error::isr.ISRWarning`` (or pytest's ``filterwarnings``)."""


#: Where isr's own frames come from (the package folder; its generated wrappers' code).
_OURS = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn(message: str) -> None:
    """Warn with `ISRWarning`, attributed to the first caller outside isr-runtime (the
    line that decorated the function, or that called it)."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and (
        frame.f_code.co_filename.startswith(_OURS)
        or frame.f_code.co_filename.startswith("<isr wrapper")
    ):
        level += 1
        frame = frame.f_back  # type: ignore[assignment]
    warnings.warn(message, ISRWarning, stacklevel=level)
