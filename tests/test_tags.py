"""Tags go out over HTTP in one encoding: what a page's headers carry is what a purge sends."""

from __future__ import annotations

import pytest

from isr._tags import encode_tag


@pytest.mark.parametrize(
    ("tag", "sent"),
    [
        ("post:hello", "post:hello"),  # plain tags travel unchanged
        ("item:a b", "item:a%20b"),  # a space would split a Surrogate-Key / xkey
        ("item:a,b", "item:a%2Cb"),  # a comma would split a Cache-Tag / X-Cache-Tags
        ("50%", "50%25"),  # the escape character itself, so decoding is unambiguous
        ("a\r\nSet-Cookie: x", "a%0D%0ASet-Cookie:%20x"),  # no header injection
        ("café", "caf%C3%A9"),  # non-ASCII as UTF-8, as in a URL
    ],
)
def test_a_tag_is_sent_as_one_header_token(tag: str, sent: str) -> None:
    assert encode_tag(tag) == sent
    assert not any(c.isspace() or c == "," or ord(c) < 0x21 or ord(c) > 0x7E for c in sent)


def test_text_that_is_not_unicode_names_no_page() -> None:
    with pytest.raises(UnicodeEncodeError):
        encode_tag("\ud800")
