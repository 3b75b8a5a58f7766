"""How a tag travels over HTTP: one encoding for response headers and CDN purges alike.

A tag is any non-empty text (``"post:a b"``, a slug with a comma, a non-ASCII title). CDNs
split their tag headers on spaces (``Surrogate-Key``, Varnish's ``xkey``) or commas
(``Cache-Tag``, ``X-Cache-Tags``), and a header must not carry control characters. So a tag
goes out percent-encoded (UTF-8, as in a URL), with only unreserved characters and a few
harmless delimiters kept as they are: ``post:a b`` is sent as ``post:a%20b`` in the page's
headers and in the purge of that tag, and the two always match. Plain tags
(``post:hello``, ``posts``) are sent unchanged.
"""

from __future__ import annotations

from urllib.parse import quote

__all__ = ["encode_tag", "encode_tags"]

#: Kept as they are (beside ASCII letters and digits): never a separator in any CDN's tag
#: header, and never special in a header value. Space, comma, ``%``, ``;``, quotes,
#: control characters and everything non-ASCII are encoded.
_SAFE = "-._~:/@!$&'()*+="


def encode_tag(tag: str) -> str:
    """``tag`` as it goes into a header or a purge request. Raises `UnicodeEncodeError`
    for text that is not valid Unicode (a lone surrogate): such a tag names no page."""
    return quote(tag, safe=_SAFE, encoding="utf-8", errors="strict")


def encode_tags(tags: list[str] | tuple[str, ...]) -> list[str]:
    """`encode_tag` for each of ``tags``."""
    return [encode_tag(tag) for tag in tags]
