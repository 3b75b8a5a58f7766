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
    └── OriginError              (isr.asgi / isr.wsgi) the app answered 5xx while rendering a
                                 page for the cache

``except isr.ISRError`` catches all of them; ``except ValueError`` still catches the bad
arguments, as before. Exceptions raised by a loader are never wrapped: the caller sees the
origin's own exception (or the stale value, when ``stale_if_error`` allows).
"""

from __future__ import annotations

__all__ = ["ConfigError", "ISRError", "TemplateError"]


class ISRError(Exception):
    """Base class of isr-runtime's own errors."""


class ConfigError(ISRError, ValueError):
    """A bad argument: a runtime option, a window, a mode, a cache URL, a rule, a secret."""


class TemplateError(ConfigError):
    """A key or tag template that does not match the decorated function."""
