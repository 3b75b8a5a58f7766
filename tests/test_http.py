"""The page cache's HTTP policy (isr._http), checked directly with tables of cases: no server,
no event loop. The drivers (isr.asgi, isr.wsgi) are tested as clients see them elsewhere."""

from __future__ import annotations

from typing import Any

import pytest

import isr
from isr._http import (
    BYPASS,
    Canonical,
    Prepared,
    Route,
    Rule,
    Site,
    assess,
    canonical,
    declared_tags,
    normalize_host,
    page_record,
    parse_origin,
    precondition,
    safe_header_value,
    unsafe_targets,
)

ETAG = '"0123456789abcdef0123456789abcdef"'
MODIFIED = 1_700_000_000  # Tue, 14 Nov 2023 22:13:20 GMT
BEFORE = b"Tue, 14 Nov 2023 22:13:19 GMT"
AT = b"Tue, 14 Nov 2023 22:13:20 GMT"


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("GET", {}, None),
        # If-Match: strong comparison, "*" matches any existing page (RFC 9110 13.1.1).
        ("GET", {b"if-match": ETAG.encode()}, None),
        ("GET", {b"if-match": b'"other", ' + ETAG.encode()}, None),
        ("GET", {b"if-match": b"*"}, None),
        ("GET", {b"if-match": b'"other"'}, 412),
        ("GET", {b"if-match": b"W/" + ETAG.encode()}, 412),  # weak never matches strongly
        # If-Unmodified-Since only without If-Match (step 2).
        ("GET", {b"if-unmodified-since": AT}, None),
        ("GET", {b"if-unmodified-since": BEFORE}, 412),
        ("GET", {b"if-unmodified-since": b"not a date"}, None),  # ignored
        ("GET", {b"if-match": ETAG.encode(), b"if-unmodified-since": BEFORE}, None),
        # If-None-Match: weak comparison; 304 for GET/HEAD (step 3).
        ("GET", {b"if-none-match": ETAG.encode()}, 304),
        ("HEAD", {b"if-none-match": b"W/" + ETAG.encode()}, 304),
        ("GET", {b"if-none-match": b"*"}, 304),
        ("GET", {b"if-none-match": b'"other"'}, None),
        ("GET", {b"if-none-match": b'"a", "b", ' + ETAG.encode()}, 304),
        # If-Modified-Since only without If-None-Match (step 4).
        ("GET", {b"if-modified-since": AT}, 304),
        ("GET", {b"if-modified-since": BEFORE}, None),
        ("GET", {b"if-none-match": b'"other"', b"if-modified-since": AT}, None),
        # Step order: a failed If-Match wins over a matching If-None-Match.
        ("GET", {b"if-match": b'"other"', b"if-none-match": ETAG.encode()}, 412),
        ("GET", {b"if-unmodified-since": BEFORE, b"if-none-match": ETAG.encode()}, 412),
    ],
)
def test_conditional_requests_follow_rfc_9110_order(
    method: str, headers: dict[bytes, bytes], expected: int | None
) -> None:
    assert precondition(method, headers, ETAG, MODIFIED) == expected


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (200, [], "keep"),
        (200, [(b"cache-control", b"public, max-age=60")], "keep"),
        (200, [(b"cache-control", b"no-cache")], "once"),
        (200, [(b"cache-control", b'no-cache="set-cookie"')], "once"),
        (200, [(b"cache-control", b"max-age=0, No-Cache")], "once"),
        (200, [(b"cache-control", b"private")], "private"),
        (200, [(b"cache-control", b"no-store")], "private"),
        (200, [(b"set-cookie", b"a=b")], "private"),
        (200, [(b"vary", b"user-agent")], "private"),
        (200, [(b"vary", b"*")], "private"),
        (200, [(b"vary", b"Accept-Language")], "keep"),  # the rule varies on it
        (404, [], "gone"),
        (410, [], "gone"),
        (404, [(b"set-cookie", b"a=b")], "private"),
        (500, [], "error"),
        (503, [(b"set-cookie", b"a=b")], "error"),
        (301, [(b"location", b"/x")], "once"),
        (206, [], "once"),
    ],
)
def test_what_is_kept_of_a_rendered_response(
    status: int, headers: list[tuple[bytes, bytes]], expected: str
) -> None:
    rule = Rule("/x", ttl=1, vary=["accept-language"])
    assert assess(status, headers, rule) == expected


def test_negative_caching_keeps_a_404_only_when_the_rule_asks() -> None:
    negative = Rule("/x", ttl=1, negative_ttl=5)
    assert assess(404, [], negative) == "negative"
    assert assess(410, [], negative) == "negative"
    assert assess(404, [(b"cache-control", b"no-cache")], negative) == "gone"
    assert assess(200, [], negative) == "keep"
    for bad in (0, -1, True, "5"):
        with pytest.raises(ValueError, match="negative_ttl"):
            Rule("/x", ttl=1, negative_ttl=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (200, [], ["/posts/a"]),
        (204, [], ["/posts/a"]),
        (303, [(b"location", b"/posts/b")], ["/posts/a", "/posts/b"]),
        (201, [(b"location", b"b")], ["/posts/a", "/posts/b"]),  # relative to the target
        (201, [(b"location", b"../c/./d")], ["/posts/a", "/c/d"]),
        (200, [(b"content-location", b"http://site.test/posts/c")], ["/posts/a", "/posts/c"]),
        (200, [(b"content-location", b"http://SITE.test:80/posts/c")], ["/posts/a", "/posts/c"]),
        (200, [(b"content-location", b"https://site.test/posts/c")], ["/posts/a"]),  # scheme
        (200, [(b"location", b"http://other.test/posts/c")], ["/posts/a"]),  # another site
        (200, [(b"location", b"//other.test/posts/c")], ["/posts/a"]),
        (200, [(b"location", b"http://www.example.com/posts/e")], ["/posts/a", "/posts/e"]),
        (200, [(b"location", b"/posts/caf%C3%A9")], ["/posts/a", "/posts/café"]),
        (200, [(b"location", "/posts/é".encode())], ["/posts/a"]),  # not ASCII: no URI
        (400, [(b"location", b"/posts/b")], []),
        (500, [], []),
        (404, [], []),
    ],
)
def test_unsafe_requests_invalidate_their_target_and_same_origin_locations(
    status: int, headers: list[tuple[bytes, bytes]], expected: list[str]
) -> None:
    origin = ("http", "www.example.com")  # the configured canonical origin counts as ours
    assert unsafe_targets(status, headers, "/posts/a", "http", "site.test", origin) == expected


@pytest.mark.parametrize(
    ("value", "scheme", "expected"),
    [
        ("Example.COM", "http", "example.com"),
        ("example.com:80", "http", "example.com"),
        ("example.com:443", "https", "example.com"),
        ("example.com:443", "http", "example.com:443"),
        ("example.com.", "http", "example.com"),
        ("[::1]:8000", "http", "[::1]:8000"),
        ("127.0.0.1:8000", "http", "127.0.0.1:8000"),
        ("evil.example/x", "http", None),
        ("user@example.com", "http", None),
        ("a b", "http", None),
        ("example.com\r\nx: y", "http", None),
        ("", "http", None),
        ("example.com:99999999", "http", None),
    ],
)
def test_hosts_are_normalized_or_refused(value: str, scheme: str, expected: str | None) -> None:
    assert normalize_host(value, scheme) == expected


def test_an_origin_is_a_scheme_and_a_host_only() -> None:
    assert parse_origin("https://WWW.example.com/") == ("https", "www.example.com")
    assert parse_origin("http://localhost:8000") == ("http", "localhost:8000")
    for bad in ("www.example.com", "ftp://x", "https://x/blog", "https://x?a=1", "https://u@x"):
        with pytest.raises(isr.ConfigError, match="origin="):
            parse_origin(bad)
    with pytest.raises(isr.ConfigError, match="not both"):
        Site([], origin="https://x", hosts=["x"])
    with pytest.raises(isr.ConfigError, match="not a host"):
        Site([], hosts=["x/y"])
    with pytest.raises(isr.ConfigError, match="list"):
        Site([], hosts="x")


def _target(site: Site, path: str, scheme: str = "http", host: str | None = None) -> Any:
    return site.match(path, scheme, host)


def test_keys_are_the_path_with_an_origin_and_the_url_without() -> None:
    rule = Rule("/posts/{slug}", ttl=1)
    with_origin = _target(Site([rule], origin="https://www.example.com"), "/posts/café")
    assert with_origin.base == "page:/posts/caf%C3%A9"
    keyed = Site([rule])
    assert _target(keyed, "/posts/a", "https", "Example.com:443").base == (
        "page:https://example.com/posts/a"
    )
    assert _target(keyed, "/posts/a", "http", "evil/x") is BYPASS
    assert _target(keyed, "/posts/a", "http", None) is BYPASS
    assert _target(keyed, "/other", "http", "example.com") is None
    allowed = Site([rule], hosts=["example.com", "www.example.com:8443"])
    assert _target(allowed, "/posts/a", "http", "EXAMPLE.com").host == "example.com"
    assert _target(allowed, "/posts/a", "https", "www.example.com:8443").base.startswith(
        "page:https://www.example.com:8443/"
    )
    assert _target(allowed, "/posts/a", "http", "evil.example") is BYPASS


def _request(rule: Rule, headers: dict[bytes, bytes], query: str) -> Canonical | None:
    target = _target(Site([rule], origin="https://www.example.com"), "/posts/a b")
    return canonical(target, headers, query, {})


def test_the_canonical_request_holds_the_key_and_nothing_else() -> None:
    rule = Rule("/posts/{slug}", ttl=1, query=["page", "sort"], vary=["accept-language"])
    visitor = {
        b"accept-language": b" de ",
        b"user-agent": b"evil",
        b"x-forwarded-host": b"evil.example",
        b"x-forwarded-proto": b"http",
        b"x-original-url": b"/admin",
        b"host": b"evil.example",
        b"accept": b"application/json",
    }
    one = _request(rule, visitor, "utm=<script>&sort=new&page=2&page=1")
    two = _request(rule, {b"accept-language": b"de"}, "page=1&page=2&sort=new&x=1")
    assert one is not None
    assert two is not None
    assert one.key == two.key
    assert one.key.startswith("page:/posts/a%20b#")
    for request in (one, two):
        assert request.path == "/posts/a b"
        assert request.raw_path == "/posts/a%20b"
        assert request.query_string == "page=1&page=2&sort=new"
        assert (request.scheme, request.host, request.hostname, request.port) == (
            "https",
            "www.example.com",
            "www.example.com",
            "443",
        )
        assert dict(request.headers) == {
            b"host": b"www.example.com",
            b"user-agent": isr._http.USER_AGENT.encode(),
            b"accept": b"*/*",
            b"x-forwarded-host": b"www.example.com",
            b"x-forwarded-proto": b"https",
            b"accept-language": b"de",
        }
    other = _request(rule, {b"accept-language": b"en"}, "page=1&page=2&sort=new")
    assert other is not None
    assert other.key != one.key
    plain = _request(rule, {}, "x=1")
    assert plain is not None
    assert plain.key == "page:/posts/a%20b"
    assert b"accept-language" not in dict(plain.headers)


def test_what_keeps_the_cache_out_of_a_request() -> None:
    rule = Rule("/posts/{slug}", ttl=1, bypass_query=["search", "filter["])
    assert _request(rule, {b"authorization": b"Basic x"}, "") is None
    assert _request(rule, {b"cookie": b"a=b"}, "") is None
    assert _request(rule, {}, "search=x") is None
    assert _request(rule, {}, "filter[a]=1") is None
    assert _request(rule, {}, "filtered=1") is not None
    private_ok = Rule("/posts/{slug}", ttl=1, private_ok=True)
    request = _request(private_ok, {b"cookie": b"sid=secret"}, "")
    assert request is not None
    assert b"cookie" not in dict(request.headers)
    assert _request(private_ok, {b"authorization": b"Basic x"}, "") is None


def test_app_declared_tags_are_percent_decoded_or_taken_as_they_are() -> None:
    headers = [
        (b"x-cache-tags", "a, item:a%2Cb, caf%C3%A9 ,lang:én,,".encode()),
        (b"x-cache-tags", b"b%20c, 50%"),
    ]
    assert declared_tags(headers) == ["a", "item:a,b", "café", "lang:én", "b c", "50%"]


def test_no_control_character_reaches_a_header() -> None:
    assert safe_header_value(b"plain value\twith tab") == b"plain value\twith tab"
    assert safe_header_value(b"a\r\nSet-Cookie: x\x00\x7f") == b"a%0D%0ASet-Cookie: x%00%7F"
    page = page_record(
        200,
        [(b"x-note", b"ok"), (b"set-cookie", b"never"), (b"etag", b'"app"')],
        b"body",
        ["post:a\r\nb", "x y"],
        MODIFIED + 0.9,
        raw_body=True,
    )
    assert page["body"] == b"body"  # as it is: the memory store keeps it once
    prepared = Prepared(Route(Rule("/x", ttl=1)), page, True, True)
    sent = dict(prepared.head + prepared.tail)
    assert sent[b"x-cache-tags"] == b"post:a%0D%0Ab,x%20y"
    assert sent[b"surrogate-key"] == b"post:a%0D%0Ab x%20y"
    assert sent[b"etag"] == b'"' + b"230d8358dc8e8890b4c58deeb62912ee" + b'"'
    assert sent[b"last-modified"] == AT
    assert b"set-cookie" in sent  # kept only because assess() said so; not its job here
    text = page_record(200, [], b"\xff", [], MODIFIED, raw_body=False)
    assert text["body"] == "\xff"
    assert Prepared(Route(Rule("/x", ttl=1)), text, False, False).body == b"\xff"


def test_last_modified_is_never_after_the_date_it_goes_out_with() -> None:
    page = page_record(200, [], b"x", [], MODIFIED + 0.5, raw_body=True)
    prepared = Prepared(Route(Rule("/x", ttl=1)), page, False, False)
    assert prepared.with_date(None) is prepared.validators
    assert prepared.with_date(MODIFIED + 3) is prepared.validators
    assert dict(prepared.with_date(MODIFIED - 0.2))[b"last-modified"] == BEFORE
