"""The module-level API, configure, the URL parser and the public surface."""

from __future__ import annotations

import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import isr
import isr.adapters
from isr import Status

from .conftest import FakeClock


def test_all_lists_exactly_the_public_names() -> None:
    for package in (isr, isr.adapters):
        public = {
            name
            for name, value in vars(package).items()
            if not name.startswith("_") and not isinstance(value, types.ModuleType)
        } - {"annotations"}
        assert set(package.__all__) == public, package.__name__


def test_module_level_functions_follow_configure(clock: FakeClock) -> None:
    calls = 0

    @isr.with_revalidate("mod:{x}", ttl=10)
    def get(x: int) -> int:
        nonlocal calls
        calls += 1
        return x

    runtime = isr.configure("memory://?max_entries=50", clock=clock)
    assert isr.get_runtime() is runtime
    get(1)
    assert get.lookup(1).status is Status.HIT  # served from the new runtime
    assert isr.invalidate_sync("mod:1") is True
    assert get.lookup(1).status is Status.MISS
    assert isr.invalidate_tag_sync("none") == 0
    isr.invalidate_all_sync("purge")
    assert get.lookup(1).status is Status.MISS
    clock.advance(10)
    assert get.lookup(1).status is Status.STALE
    runtime.close()
    isr.configure()


@pytest.mark.anyio
async def test_module_level_async_invalidation() -> None:
    runtime = isr.configure()

    @isr.with_revalidate("amod:{x}", ttl=10, tags=["t"])
    async def get(x: int) -> int:
        return x

    await get(1)
    assert await isr.invalidate("amod:1", mode="revalidate") is True
    assert (await get.lookup(1)).status is Status.STALE
    await runtime.drain()
    assert await isr.invalidate_tag("t", mode="purge") == 1
    await isr.invalidate_all()
    assert (await get.lookup(1)).status is Status.MISS
    await runtime.aclose()
    isr.configure()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("memcached://x", "unknown scheme 'memcached'"),
        ("memory://?max_entries=abc", "max_entries must be an integer"),
        ("memory://?max_entries=0", "max_entries must be an integer, and positive"),
        ("memory://?size=3", "unknown: size"),
    ],
)
def test_bad_cache_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(isr.ConfigError, match=message):
        isr.ISR(url)


def test_cache_life_outside_a_loader_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="outside a function decorated by isr"):
        isr.cache_tag("x")


def test_stats_add_up(srt: isr.ISR, clock: FakeClock) -> None:
    @isr.with_revalidate("s:{x}", ttl=1, swr=None, runtime=srt)
    def get(x: int) -> int:
        return x

    get(1)
    get(1)
    get.lookup(1)
    clock.advance(1)
    get(1)
    srt.drain_sync()
    s = srt.stats()
    assert (s.misses, s.hits, s.stale, s.refreshes, s.loader_calls) == (1, 2, 1, 1, 2)
    assert s.entries == (1 if srt.adapter.local else None)  # counted where it is cheap


def test_import_needs_no_optional_dependency() -> None:
    code = (
        "import sys, builtins\n"
        "real = builtins.__import__\n"
        "def guard(name, *a, **k):\n"
        "    if name.split('.')[0] in ('redis', 'trio', 'sniffio'):\n"
        "        raise ModuleNotFoundError(name)\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = guard\n"
        "import isr, asyncio\n"
        "@isr.with_revalidate('k', ttl=1)\n"
        "async def f(): return 1\n"
        "async def main():\n"
        "    assert await f() == 1\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_from_env_picks_the_store_for_the_deployment_target(tmp_path: Path) -> None:
    disk = isr.ISR.from_env({"ISR_CACHE_URL": f"disk://{tmp_path / 'a'}", "ISR_NAMESPACE": "shop"})
    assert type(disk.adapter).__name__ == "DiskAdapter"
    assert disk.adapter.namespace == "shop"  # type: ignore[attr-defined]
    disk.close()
    host = isr.ISR.from_env({"ISR_TARGET": "single-host", "ISR_CACHE_DIR": str(tmp_path / "b")})
    assert host.adapter.directory == str(tmp_path / "b")  # type: ignore[attr-defined]
    host.close()
    assert type(isr.ISR.from_env({}).adapter).__name__ == "MemoryAdapter"
    assert type(isr.ISR.from_env({"ISR_TARGET": "tests"}).adapter).__name__ == "MemoryAdapter"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"ISR_TARGET": "cloud"}, "ISR_TARGET='cloud' is not a deployment target"),
        ({"ISR_TARGET": "multi-instance"}, "needs ISR_CACHE_URL=redis://"),
        (
            {"ISR_TARGET": "serverless", "ISR_CACHE_URL": "disk:///tmp/x"},
            "wants a redis:// store",
        ),
    ],
)
def test_from_env_says_what_is_missing(environ: dict[str, str], message: str) -> None:
    with pytest.raises(isr.ConfigError, match=message):
        isr.ISR.from_env(environ)


def test_adapters_import_on_their_own() -> None:
    code = "import isr.adapters as a; a.MemoryAdapter()"
    subprocess.run([sys.executable, "-c", code], check=True)


def _bad_arguments() -> list[tuple[str, Any]]:
    """One call per kind of bad argument a user can pass, each raising at once."""
    rt = isr.ISR()

    def decorate(fn: Any = lambda: 1, key: str = "k", **options: Any) -> None:
        isr.with_revalidate(key, runtime=rt, **{"ttl": 1, **options})(fn)

    def generator() -> Iterator[int]:
        yield 1

    return [
        ("ttl", lambda: decorate(ttl=-1)),
        ("swr", lambda: decorate(swr="1")),
        ("stale_if_error", lambda: decorate(stale_if_error=float("nan"))),
        ("timeout", lambda: decorate(timeout=-0.5)),
        ("xfetch", lambda: decorate(xfetch=0)),
        ("template", lambda: decorate(key="k:{nope}")),
        ("generator", lambda: decorate(generator)),
        ("not a function", lambda: decorate(42)),
        ("mode", lambda: rt.invalidate_sync("k", mode="delete")),  # type: ignore[arg-type]
        ("empty key", lambda: rt.invalidate_sync("")),
        ("empty tag", lambda: rt.invalidate_tag_sync("")),
        ("all mode", lambda: rt.invalidate_all_sync(mode="soon")),  # type: ignore[arg-type]
        ("backoff", lambda: isr.ISR(backoff=0)),
        ("workers", lambda: isr.ISR(refresh_workers=0)),
        ("lock_ttl", lambda: isr.ISR(lock_ttl=0)),
        ("url", lambda: isr.ISR("ftp://x")),
        ("memory bound", lambda: isr.ISR("memory://?max_entries=0")),
        ("adapter bound", lambda: isr.adapters.MemoryAdapter(0)),
        ("codec key", lambda: isr.PickleCodec("short")),
        ("adapter and namespace", lambda: isr.ISR(isr.adapters.MemoryAdapter(), namespace="x")),
    ]


@pytest.mark.parametrize(("what", "call"), _bad_arguments(), ids=[w for w, _ in _bad_arguments()])
def test_every_bad_argument_is_a_config_error(what: str, call: Any) -> None:
    with pytest.raises(isr.ConfigError) as caught:
        call()
    assert isinstance(caught.value, ValueError)  # as before the error tree: still a ValueError
    assert isinstance(caught.value, isr.ISRError)


def test_a_bad_window_in_a_loader_is_a_config_error_too() -> None:
    rt = isr.ISR()

    @rt.with_revalidate("k", ttl=1)
    def load() -> int:
        isr.cache_life(ttl=-1)
        return 1

    @rt.with_revalidate("t", ttl=1)
    def tag() -> int:
        isr.cache_tag("")
        return 1

    for fn in (load, tag):
        with pytest.raises(isr.ConfigError):
            fn()
