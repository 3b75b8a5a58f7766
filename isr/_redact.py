"""Credentials out of what is shown: a store URL as messages and logs may carry it.

`redact_url` is the one function every message naming a cache URL goes through;
`split_url` parses one or raises `isr.ConfigError` showing it redacted. It works on
the text, not on a parse: a password with an unencoded ``/``, ``#``, ``?`` or ``@`` (common in
base64 secrets) makes ``urlsplit`` cut the URL in the wrong place, or raise, and a message
must not show the part it cut off either.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit

from ._errors import ConfigError

__all__ = ["redact_url", "split_url"]

#: Query parameters whose value is a secret, or may be (redis-py takes ``?password=``).
_SECRET_PARAM = re.compile(r"pass|pwd|secret|token|auth|cred|key", re.IGNORECASE)
_PARAM = re.compile(r"([?&;])([^=&;#]*)=([^&;]*)")


def _param(match: re.Match[str]) -> str:
    sep, name, value = match.groups()
    return f"{sep}{name}=***" if value and _SECRET_PARAM.search(name) else match.group(0)


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (all of the user part when it has no
    ``:``, since that may be a password too) and so are the values of query parameters
    named like secrets. Everything up to the last ``@`` after ``//`` counts as the user
    part, so a password holding ``/``, ``#``, ``?`` or ``@`` is hidden whole (a URL without
    credentials but with an ``@`` in its query loses its host from the message instead)."""
    text = str(url)
    slashes = text.find("//")
    start = 0 if slashes < 0 else slashes + 2
    text = text[:start] + _PARAM.sub(_param, text[start:])  # first: a value may hold '@'
    at = text.rfind("@")
    if at >= start:
        user, colon, _ = text[start:at].partition(":")
        text = f"{text[:start]}{f'{user}:***' if colon else '***'}{text[at:]}"
    return text


def split_url(url: str) -> SplitResult:
    """``urlsplit(url)``, or `isr.ConfigError` (without the URL's credentials) for a URL
    it cannot parse."""
    try:
        return urlsplit(url)
    except ValueError:
        pass  # not raised from here: its message may hold part of the password
    raise ConfigError(
        f"cache URL {redact_url(url)!r} cannot be parsed; a password holding '/', '#', '?', "
        "'@', '[' or ']' must be percent-encoded (%2F, %23, %3F, %40, %5B, %5D)"
    )
