"""The library's own exceptions.

- `ISRError`: base of everything isr-runtime raises on its own account.
- `TemplateError` (also a ``ValueError``): a key or tag template that does not fit the
  decorated function, or a key/tag callable that returned something other than a string;
  raised at decoration time where it can be, before anything is cached.
- `ConfigError` (also a ``ValueError``): a bad runtime argument or cache URL.

Exceptions raised by a loader are never wrapped: the caller sees the origin's own exception
(or the stale value, when ``stale_if_error`` allows).
"""

from __future__ import annotations

__all__ = ["ConfigError", "ISRError", "TemplateError"]


class ISRError(Exception):
    """Base class of isr-runtime's own errors."""


class TemplateError(ISRError, ValueError):
    """A key or tag template that does not match the decorated function."""


class ConfigError(ISRError, ValueError):
    """A runtime argument or cache URL that cannot be used."""
