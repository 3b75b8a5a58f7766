"""Mistakes are loud: two functions on one key template, a sync loader blocking an event loop,
a value the shared stores would refuse (the memory store can be told to check), and windows
that make no sense."""

from __future__ import annotations

import datetime
import warnings
from collections.abc import Callable

import anyio.to_thread
import httpx
import pytest

import isr
from isr import Status
from isr.asgi import ISRMiddleware, Rule

from ._asgi_apps import Origin, client

# ---------------------------------------------------------------- one key template, two functions


def test_two_functions_on_one_key_template_are_named_in_a_warning() -> None:
    with isr.ISR() as rt:

        @rt.with_revalidate("user:{uid}", ttl=60)
        def profile(uid: int) -> str:
            return "profile"

        with pytest.warns(isr.ISRWarning) as caught:

            @rt.with_revalidate("user:{uid}", ttl=60)
            def settings(uid: int) -> str:
                return "settings"

    message = str(caught[0].message)
    assert "profile()" in message
    assert "settings()" in message
    assert "'user:{uid}'" in message
    assert caught[0].filename == __file__  # attributed to the decorating line


def _quiet(action: Callable[[], object]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", isr.ISRWarning)
        action()


def test_the_same_function_decorated_again_or_on_another_runtime_is_fine() -> None:
    with isr.ISR() as rt, isr.ISR() as other:

        def make(runtime: isr.ISR) -> isr.SyncCached[[int], int]:
            @runtime.with_revalidate("n:{n}", ttl=60)
            def square(n: int) -> int:
                return n * n

            return square

        first = make(rt)
        _quiet(lambda: make(rt))  # a factory (or a reload): the same function again
        _quiet(lambda: make(other))  # another runtime: another store
        _quiet(lambda: rt.with_revalidate(lambda n: f"n:{n}", ttl=60)(lambda n: n))
        assert first(3) == 9


# ---------------------------------------------------------------- a sync loader in a loop


@pytest.mark.anyio
async def test_a_sync_load_inside_an_event_loop_warns_once_naming_the_async_spelling(
    anyio_backend: str,
) -> None:
    with isr.ISR() as rt:

        @rt.with_revalidate("n:{n}", ttl=60)
        def square(n: int) -> int:
            return n * n

        with pytest.warns(isr.ISRWarning, match=r"blocks the loop.*`async def`") as caught:
            assert square(2) == 4
        assert caught[0].filename == __file__  # the line that called it
        _quiet(lambda: square(2))  # a hit does not block: nothing to say
        _quiet(lambda: square(3))  # blocks again, but it was said once
        # from a worker thread, as the warning says, nothing blocks the loop
        assert await anyio.to_thread.run_sync(square, 4) == 16


@pytest.mark.anyio
async def test_the_call_site_form_names_its_async_spelling(anyio_backend: str) -> None:
    with (
        isr.ISR() as rt,
        pytest.warns(isr.ISRWarning, match=r"await rt\.revalidating"),
    ):
        assert rt.revalidating_sync("k", 60, lambda: "v") == "v"


def test_a_sync_load_outside_any_loop_says_nothing() -> None:
    with isr.ISR() as rt:

        @rt.with_revalidate("n:{n}", ttl=60)
        def square(n: int) -> int:
            return n * n

        _quiet(lambda: square(2))


# ---------------------------------------------------------------- the memory store checks the codec


def test_a_memory_store_told_to_check_refuses_what_redis_would() -> None:
    with isr.ISR("memory://?codec=json") as rt:

        @rt.with_revalidate("when:{x}", ttl=60)
        def when(x: int) -> object:
            return {"at": {x}}  # a set: not JSON

        with pytest.raises(isr.CodecError, match="cannot cache the value for 'when:1' as JSON"):
            when(1)
        assert rt.adapter.get("when:1") is None


def test_a_memory_store_told_to_check_serves_what_redis_would() -> None:
    with isr.ISR("memory://?codec=json") as rt:

        @rt.with_revalidate("pair:{x}", ttl=60)
        def pair(x: int) -> object:
            return {"pair": (x, x), 1: "one"}

        assert pair(1) == {"pair": (1, 1), 1: "one"}  # the fetching call: its own value
        again = pair.lookup(1)
        assert again.status is Status.HIT
        assert again.value == {"pair": [1, 1], "1": "one"}  # as JSON gives it back


def test_a_memory_store_takes_a_codec_object_too() -> None:
    with isr.ISR("memory://", codec=isr.PickleCodec(b"k" * 16)) as rt:

        @rt.with_revalidate("set:{x}", ttl=60)
        def numbers(x: int) -> set[int]:
            return {x}

        numbers(1)
        assert numbers.lookup(1).value == {1}


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("memory://?codec=pickle", {}, "memory:// takes codec=json"),
        ("memory://?codec=json", {"codec": isr.JsonCodec()}, "not both"),
    ],
)
def test_a_bad_memory_codec_is_refused(url: str, options: dict[str, object], message: str) -> None:
    with pytest.raises(isr.ConfigError, match=message):
        isr.ISR(url, **options)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_pages_on_a_checking_memory_store_are_served(anyio_backend: str) -> None:
    origin = Origin()
    async with isr.ISR("memory://?codec=json") as rt:
        app = ISRMiddleware(origin, rt, [Rule("/p/{x}", ttl=60)], origin="http://test")
        async with client(app) as c:
            answers: list[httpx.Response] = [await c.get("/p/1") for _ in range(3)]
    assert [r.headers["x-cache"] for r in answers] == ["MISS", "HIT", "HIT"]
    assert {r.text for r in answers} == {"/p/1? lang=- v1"}
    assert len(origin.calls) == 1


# ---------------------------------------------------------------- windows


def test_a_rules_windows_take_timedeltas_and_an_unbounded_fallback() -> None:
    rule = Rule("/p", ttl=datetime.timedelta(minutes=5), stale_if_error=None)
    assert rule.ttl == 300.0
    route = isr._http.Route(rule)
    assert route.cache_control == (
        b"public, s-maxage=300, stale-while-revalidate=31536000, stale-if-error=31536000"
    )


@pytest.mark.parametrize("options", [{"ttl": -1}, {"ttl": 1, "negative_ttl": 0}])
def test_a_rules_bad_windows_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(isr.ConfigError, match=r"Rule\('/p'"):
        Rule("/p", **options)  # type: ignore[arg-type]


def test_cache_life_takes_timedeltas(clock: object) -> None:
    with isr.ISR() as rt:

        @rt.with_revalidate("k:{x}", ttl=60)
        def load(x: int) -> int:
            isr.cache_life(ttl=datetime.timedelta(seconds=5), swr=datetime.timedelta(0))
            return x

        load(1)
        entry = rt.adapter.get("k:1")
        assert entry is not None
        assert (entry.policy.ttl, entry.policy.swr) == (5.0, 0.0)
        with pytest.raises(isr.ConfigError, match=r"cache_life\(ttl=\.\.\.\)"):
            rt.with_revalidate("bad:{x}", ttl=60)(
                lambda x: isr.cache_life(ttl=datetime.timedelta(seconds=-1))
            )(1)
