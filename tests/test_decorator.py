"""The decorator: keys from any kind of parameter, signatures kept, bad input refused."""

from __future__ import annotations

import datetime
import inspect
import re
from typing import Any

import pytest

import isr
from isr import Status

from .conftest import FakeClock


def test_key_formatted_from_positional_keyword_and_default_arguments(srt: isr.ISR) -> None:
    @isr.with_revalidate("page:{path}:{lang}", ttl=60, runtime=srt)
    def page(path: str, lang: str = "en") -> str:
        return f"{path}/{lang}"

    assert page.cache_key("home") == "page:home:en"
    assert page.cache_key("home", "de") == "page:home:de"
    assert page.cache_key(path="home", lang="fr") == "page:home:fr"
    page("home")
    assert page.lookup(path="home", lang="en").status is Status.HIT  # same key, any spelling


def test_every_parameter_kind(srt: isr.ISR) -> None:
    seen: list[Any] = []

    @isr.with_revalidate("k:{a}:{b}:{args}:{c}:{kw}", ttl=60, runtime=srt)
    def f(a: int, /, b: int = 2, *args: int, c: int, **kw: int) -> int:
        seen.append((a, b, args, c, kw))
        return a + b + sum(args) + c + sum(kw.values())

    assert f(1, 2, 3, c=4, d=5) == 15
    assert seen == [(1, 2, (3,), 4, {"d": 5})]
    assert f.cache_key(1, 2, 3, c=4, d=5) == "k:1:2:(3,):4:{'d': 5}"
    assert str(inspect.signature(f)) == str(inspect.signature(f.__wrapped__))
    with pytest.raises(TypeError):
        f(a=1, c=2)  # type: ignore[call-arg]  # positional-only stays positional-only


def test_attributes_indexes_conversions_and_format_specs(srt: isr.ISR) -> None:
    class User:
        id = 7

    @isr.with_revalidate(
        "u:{user.id}:{ids[0]}:{opts[lang]}:{name!r}:{price:.2f}", ttl=1, runtime=srt
    )
    def f(user: User, ids: list[int], opts: dict[str, str], name: str, price: float) -> int:
        return 1

    assert f.cache_key(User(), [3], {"lang": "en"}, "x", 2.5) == "u:7:3:en:'x':2.50"


def test_literal_braces_quotes_and_backslashes_survive(srt: isr.ISR) -> None:
    @isr.with_revalidate("a{{b}}'\\\"\n:{x}", ttl=1, runtime=srt)
    def f(x: int) -> int:
        return x

    assert f.cache_key(1) == "a{b}'\\\"\n:1"


def test_callable_key_and_tags(srt: isr.ISR) -> None:
    @isr.with_revalidate(
        lambda slug, lang="en": f"{lang}/{slug}",
        ttl=60,
        tags=["posts", lambda slug, lang="en": f"lang:{lang}"],
        runtime=srt,
    )
    def get(slug: str, lang: str = "en") -> str:
        return slug

    assert get.cache_key("a") == "en/a"
    assert get.cache_tags("a", lang="de") == ("posts", "lang:de")
    get("a", "de")
    assert srt.invalidate_tag_sync("lang:de") == 1


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("post:{slugg}", "get() has no parameter 'slugg'; its parameters are: slug, lang"),
        ("post:{}", "positional field {}"),
        ("post:{0}", "positional field {0}"),
        ("post:{slug", "is not valid"),
        ("post:{slug!x}", "unknown conversion !x"),
        ("post:{slug:{lang}}", "nested fields"),
    ],
)
def test_a_template_that_does_not_match_fails_at_decoration(
    srt: isr.ISR, template: str, message: str
) -> None:
    decorate = isr.with_revalidate(template, ttl=60, runtime=srt)
    with pytest.raises(isr.TemplateError, match=re.escape(message)):

        @decorate
        def get(slug: str, lang: str = "en") -> str:
            return slug


def test_a_tag_template_is_checked_too(srt: isr.ISR) -> None:
    with pytest.raises(isr.TemplateError, match="tag template 'author:\\{author\\}'"):

        @isr.with_revalidate("post:{slug}", ttl=60, tags=["author:{author}"], runtime=srt)
        def get(slug: str) -> str:
            return slug


def test_a_key_callable_that_does_not_fit_fails_at_decoration(srt: isr.ISR) -> None:
    with pytest.raises(isr.TemplateError, match="does not accept the arguments"):

        @isr.with_revalidate(lambda: "k", ttl=60, runtime=srt)
        def get(slug: str) -> str:
            return slug


def test_a_key_callable_returning_a_non_string_caches_nothing(srt: isr.ISR) -> None:
    @isr.with_revalidate(lambda n: n, ttl=60, runtime=srt)
    def get(n: int) -> int:
        return n

    with pytest.raises(isr.TemplateError, match="returned 5; it must return a non-empty str"):
        get(5)
    assert srt.stats().loader_calls == 0


@pytest.mark.parametrize(
    "options",
    [
        {"ttl": -1},
        {"ttl": "60"},
        {"ttl": 1, "swr": -5},
        {"ttl": 1, "stale_if_error": -1},
        {"ttl": 1, "stale_if_error": "forever"},
        {"ttl": datetime.timedelta(seconds=-1)},
        {"ttl": 1, "xfetch": 0},
        {"ttl": 1, "timeout": -1},
    ],
)
def test_bad_windows_are_refused(srt: isr.ISR, options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="with_revalidate"):
        isr.with_revalidate("k", runtime=srt, **options)


def test_reserved_parameter_names_are_refused(srt: isr.ISR) -> None:
    with pytest.raises(isr.TemplateError, match="reserved"):

        @isr.with_revalidate("k:{_isr_k}", ttl=1, runtime=srt)
        def f(_isr_k: int) -> int:
            return 1


def test_generators_are_refused(srt: isr.ISR) -> None:
    with pytest.raises(isr.ConfigError, match="generator"):

        @isr.with_revalidate("k", ttl=1, runtime=srt)
        def f():  # type: ignore[no-untyped-def]
            yield 1


def test_methods_key_on_self(srt: isr.ISR, clock: FakeClock) -> None:
    class Repo:
        def __init__(self, name: str) -> None:
            self.name = name
            self.calls = 0

        @isr.with_revalidate("repo:{self.name}:{n}", ttl=10, runtime=srt)
        def get(self, n: int) -> str:
            self.calls += 1
            return f"{self.name}{n}"

    a, b = Repo("a"), Repo("b")
    assert (a.get(1), b.get(1), a.get(1)) == ("a1", "b1", "a1")
    assert (a.calls, b.calls) == (1, 1)


def test_name_doc_and_wrapped_are_kept(srt: isr.ISR) -> None:
    @isr.with_revalidate("k", ttl=1, runtime=srt)
    async def loader() -> int:
        """Load it."""
        return 1

    assert loader.__name__ == "loader"
    assert loader.__doc__ == "Load it."
    assert inspect.iscoroutinefunction(loader)
    assert loader.__wrapped__.__name__ == "loader"
