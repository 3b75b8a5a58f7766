"""A store URL's password never shows: in no error's text, repr or chain, whatever is wrong
with the URL (a scheme isr does not know, an option, a port, a password with characters
that cut the URL in the wrong place), and in nothing the store shows of itself."""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterator

import pytest

import isr
from isr._redact import redact_url
from isr.adapters.redis import RedisAdapter

#: A base64-like secret; its pieces around each special character must not show either.
PASSWORD = "Zq8sEcReT0k3n"


def pieces(password: str) -> list[str]:
    return [p for p in re.split(r"[/#?@\[\]:%]", password) if len(p) >= 3]


def chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [current.__cause__, current.__context__]


def assert_hidden(exc: BaseException, password: str) -> None:
    shown = [
        "".join(traceback.format_exception(exc)),
        *(text for e in chain(exc) for text in (str(e), repr(e), repr(e.args))),
    ]
    for piece in pieces(password):
        for text in shown:
            assert piece not in text, text


CASES = [
    ("valkey://:{pw}@cache:6379/0", "unknown scheme 'valkey'"),
    ("redis+sentinel://user:{pw}@cache:26379", "unknown scheme 'redis+sentinel'"),
    ("memcached://:{pw}@cache", "unknown scheme"),
    ("redis://:{pw}@cache:6379/0?timeout=soon", "bad value 'soon' for timeout"),
    ("redis://:{pw}@cache:6379/0?cluster=maybe", "bad value 'maybe' for cluster"),
    ("redis://:{pw}@cache:6379/0?nope=1", "unknown option"),
    ("redis://cache:6379/0?password={pw}", "unknown option"),
    ("redis://:{pw}@cache:port/0", "the host part does not parse"),
    ("redis://:{pw}@cache:6379/zero", "the path must be the database number"),
    ("redis://:{pw}@[cache", "cannot be parsed"),
    ("disk://user:{pw}@/var/cache", "needs an absolute path"),
    ("disk://user:{pw}@/var/cache?size_limit=x", "needs an absolute path"),
    ("memory://user:{pw}@host", "memory:// takes no host"),
]
#: Passwords a secret generator makes, with the characters that break a URL unencoded.
AWKWARD = [
    PASSWORD,
    "Zq8s/EcRe/T0k3n",
    "Zq8s#EcReT0k3n",
    "Zq8s?EcReT0k3n",
    "Zq8s@EcReT0k3n",
    "Zq8s[EcReT0k3n",
    "Zq8s:EcReT0k3n",
]


@pytest.mark.parametrize(("template", "message"), CASES)
@pytest.mark.parametrize("password", AWKWARD)
def test_no_config_error_shows_the_password(template: str, message: str, password: str) -> None:
    url = template.format(pw=password)
    with pytest.raises(isr.ConfigError) as info:
        isr.ISR(url)
    assert_hidden(info.value, password)
    if password == PASSWORD:  # the others may cut the URL elsewhere: another error
        assert message in str(info.value)


@pytest.mark.parametrize("password", [p for p in AWKWARD if set(p) & set("/#?[")])
def test_a_password_that_breaks_the_url_is_a_config_error_that_hides_it(password: str) -> None:
    """Unencoded '/', '#', '?' or '[' in a password: never the ValueError urlsplit raises
    (which shows a piece of it), never a URL that parses as another host or database.
    (An unencoded '@' or ':' parses as meant: urlsplit splits at the last '@', the first
    ':'.)"""
    for url in (f"redis://:{password}@cache:6379/0", f"rediss://app:{password}@cache/1"):
        with pytest.raises(isr.ConfigError) as info:
            isr.ISR(url)
        assert_hidden(info.value, password)


def test_the_target_and_url_mismatch_hides_the_password() -> None:
    env = {"ISR_TARGET": "single-host", "ISR_CACHE_URL": f"redis://:{PASSWORD}@cache:6379/0"}
    with pytest.raises(isr.ConfigError, match="wants a disk:// store") as info:
        isr.ISR.from_env(env)
    assert_hidden(info.value, PASSWORD)


def test_l1_on_another_store_names_no_url() -> None:
    with pytest.raises(isr.ConfigError, match="disk:// has none") as info:
        isr.ISR(f"disk://u:{PASSWORD}@/x", l1=True)
    assert_hidden(info.value, PASSWORD)


@pytest.mark.parametrize("password", [p for p in AWKWARD if not set(p) & set("/#?[")])
def test_the_store_shows_no_password_of_itself(password: str) -> None:
    store = RedisAdapter(f"redis://app:{password}@127.0.0.1:1/0")
    for piece in pieces(password):
        assert piece not in repr(store)
        assert piece not in store.breaker.name
    store.close()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("redis://app:pw@cache:6379/0", "redis://app:***@cache:6379/0"),
        ("redis://:pw@cache", "redis://:***@cache"),
        ("redis://tokenonly@cache", "redis://***@cache"),
        ("redis://:p/w#x?y@z@cache:1/0", "redis://:***@cache:1/0"),
        ("redis://cache/0?password=pw&timeout=1", "redis://cache/0?password=***&timeout=1"),
        ("rediss://c?ssl_keyfile=/k&client_name=a", "rediss://c?ssl_keyfile=***&client_name=a"),
        ("pw@cache", "***@cache"),
        ("", ""),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
