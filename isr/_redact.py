"""Keeping credentials out of what is shown: messages, logs, answers, headers.

Three tools for everything that holds credentials (the stores' URLs, the CDN purgers, the
webhook, the CLI):

- `redact_url` is the one function every message naming a cache URL goes through, and
  `split_url` parses one or raises `isr.ConfigError` showing it redacted. They work on the
  text, not on a parse: a password with an unencoded ``/``, ``#``, ``?`` or ``@`` (common in
  base64 secrets) makes ``urlsplit`` cut the URL in the wrong place, or raise, and a
  message must not show the part it cut off either.
- `check_header_value` refuses, when a client is built, a value that cannot travel in an
  HTTP header as given: a control character (a token read from a file keeps its trailing
  newline), surrounding whitespace, or nothing at all. The `ConfigError` names the setting,
  never the value.
- `Redactor` cleans a text before it reaches an answer, a log line or a result: every
  credential it was given (and its percent-encoded form) is replaced, and so is anything
  shaped like one: ``Authorization:`` / ``Cookie:`` / ``…-Token:`` / ``…-Key:`` header lines
  or JSON fields, ``Bearer <token>``, the password of a ``scheme://user:password@host`` URL.
  `Redactor.excerpt` also cuts the text to one short line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import SplitResult, quote, urlsplit

from ._errors import ConfigError

__all__ = [
    "REDACTED",
    "Redactor",
    "check_header_name",
    "check_header_value",
    "redact_url",
    "split_url",
    "url_password",
]

REDACTED = "[redacted]"

#: RFC 9110 field names: tchar only.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

#: Names of headers, fields and parameters whose value is a credential.
_SECRET_NAMES = (
    r"(?:proxy-)?authorization|(?:set-)?cookie|password|passwd|secret|"
    r"[\w-]*(?:token|secret|api[_-]?key|auth)|[\w-]*-key|apikey|key"
)
#: ``Name: value`` / ``"name": "value"`` / ``name=value``: the value is replaced, up to the
#: end of the line (a header), the closing quote (JSON) or the next separator (a query).
_NAMED = re.compile(
    rf"""(?ix)
    (?P<name>["']?\b(?:{_SECRET_NAMES})\b["']?)
    (?P<sep>\s*[:=]\s*)
    (?P<value>"[^"\r\n]*"?|'[^'\r\n]*'?|[^\r\n,;&}}]+)
    """
)
#: ``Bearer <token>``, ``Basic <base64>`` and the like, wherever they appear.
_SCHEME = re.compile(r"(?i)\b(Bearer|Basic|Digest|Token|Negotiate)\s+[\w.~+/=-]+")
#: The password of a URL's userinfo (user:password@).
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/@:]*:)[^\s@]*@")


def check_header_name(name: object, what: str) -> str:
    """``name`` if it is a valid HTTP field name, else a ConfigError naming ``what`` (not
    the name: a value put where a name goes would be shown)."""
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise ConfigError(
            f"{what}: a header name is not a valid HTTP field name (letters, digits, "
            "!#$%&'*+-.^_`|~)"
        )
    return name


def check_header_value(value: object, what: str, *, ascii_only: bool = False) -> str:
    """``value`` if it can be sent as an HTTP header value as it is; else a ConfigError that
    says what is wrong with ``what`` without showing the value (it may be a credential)."""
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            raise ConfigError(f"{what} is not UTF-8 text") from None
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, not {type(value).__name__}")
    if not value:
        raise ConfigError(f"{what} is empty")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value):
        where = "at its end" if value.rstrip("\r\n") != value else "in it"
        raise ConfigError(
            f"{what} has a control character {where} (a newline read from a file?): "
            "it cannot travel in an HTTP header; strip it"
        )
    if value != value.strip():
        raise ConfigError(f"{what} has surrounding whitespace: strip it")
    if ascii_only and not value.isascii():
        raise ConfigError(f"{what} must be ASCII")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ConfigError(f"{what} is not valid Unicode text") from None
    return value


def url_password(url: str) -> str | None:
    """The password in ``url``'s userinfo (as written, possibly percent-encoded), found
    without a URL parser: a password holding ``/``, ``#`` or ``?`` defeats ``urlsplit``."""
    _, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return None
    userinfo = rest.rsplit("@", 1)[0]
    _, colon, password = userinfo.partition(":")
    return password if colon and password else None


class Redactor:
    """``redact(text)``: ``text`` with the given credentials and anything shaped like one
    replaced by ``[redacted]`` (see the module docstring)."""

    def __init__(self, secrets: Iterable[str | bytes | None] = ()) -> None:
        known: set[str] = set()
        for secret in secrets:
            if secret is None:
                continue
            text = secret.decode("utf-8", "replace") if isinstance(secret, bytes) else secret
            for form in (text, text.strip(), quote(text, safe=""), repr(text)[1:-1]):
                if form:
                    known.add(form)
        # Longest first, so that a secret containing another is replaced whole. A short one
        # (a gateway's "g") only where it stands alone, not inside every word holding it.
        self._known = [
            re.compile(
                re.escape(form) if len(form) >= 8 else rf"(?<![\w-]){re.escape(form)}(?![\w-])"
            )
            for form in sorted(known, key=len, reverse=True)
        ]

    def __call__(self, text: str) -> str:
        for secret in self._known:
            text = secret.sub(REDACTED, text)
        text = _URL_PASSWORD.sub(rf"\1{REDACTED}@", text)
        text = _SCHEME.sub(rf"\1 {REDACTED}", text)
        return _NAMED.sub(_named, text)

    def excerpt(self, text: str, limit: int = 120) -> str:
        """`redact` ``text``, then keep one line of at most ``limit`` characters (redacted
        first, so that a cut never leaves part of a credential behind)."""
        clean = " ".join(self(text).split())
        clean = "".join(c if c.isprintable() else "?" for c in clean)
        return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def _named(match: re.Match[str]) -> str:
    value = match["value"]
    if value.strip() in (REDACTED, f'"{REDACTED}"', f"'{REDACTED}'"):
        return match[0]
    quote_char = value[0] if value[:1] in ('"', "'") else ""
    return f"{match['name']}{match['sep']}{quote_char}{REDACTED}{quote_char}"


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
