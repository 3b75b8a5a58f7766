"""How a namespace, a key and a tag become names in a shared store, one way for every store.

Every record a store keeps for a namespace is named ``{prefix}:{kind}:{rest}``: ``prefix``
is the namespace as `prefix` spells it (never containing ``:``), ``kind`` one fixed word
per sort of record (``e`` entry, ``t`` tag set, ``l`` fetch lock, ``i`` invalidation
marker, ``c`` claim, ``gen``, ``bus``, ``epoch``, ``ack``, ``n`` the instances, ``log`` and
``logc`` the invalidation log) and ``rest`` the key or tag, as it is.
Since the prefix holds no ``:``, the first ``:`` of a name ends it; the kind is fixed, so
whatever follows is the key: no two (namespace, key) pairs share a name, however either
is spelt (namespace ``site`` with key ``post:e:1`` and namespace ``site:e:post`` with key
``1`` are two names).

Keys and tags are text every store can hold: a string with a lone surrogate (from
``json.loads('"\\ud800"')`` or a file name decoded with ``surrogateescape``) is not valid
Unicode and has no UTF-8 form, so every store, the memory one included, refuses it at the
call with `isr.ConfigError` rather than fail inside a driver (`checked`).
"""

from __future__ import annotations

from collections.abc import Iterable

from isr._errors import ConfigError

__all__ = ["checked", "checked_all", "prefix"]

#: The namespace used when none is given.
DEFAULT_NAMESPACE = "isr"


def prefix(namespace: str | None) -> str:
    """The namespace's part of every name in a shared store: the namespace itself when it
    holds neither ``:`` nor ``%`` (every plain word, ``blog`` or ``test-abc123``, keeps the
    layout earlier releases wrote), else percent-encoded (``%`` as ``%25``, ``:`` as
    ``%3A``), so that no two namespaces share a prefix and none contains ``:``. None or an
    empty namespace is ``isr``."""
    if not namespace:
        return DEFAULT_NAMESPACE
    checked(namespace, "namespace")
    if ":" in namespace or "%" in namespace:
        return namespace.replace("%", "%25").replace(":", "%3A")
    return namespace


def _refuse(text: str, what: str) -> None:
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise ConfigError(
            f"{what} {text!r} is not valid Unicode text (a lone surrogate at position "
            f"{exc.start}); a store cannot hold it"
        ) from None


def checked(text: str, what: str = "key") -> str:
    """``text``, if a store can hold it; else `isr.ConfigError` naming it (see the module
    docstring). ASCII text, the usual case, costs one C-level check."""
    if not text.isascii():
        _refuse(text, what)
    return text


def checked_all(texts: Iterable[str], what: str = "tag") -> None:
    """`checked` for each of ``texts``."""
    for text in texts:
        if not text.isascii():
            _refuse(text, what)
