"""Decorated functions keep their signatures for type checkers (checked by mypy --strict).

The ``assert_type`` calls are no-ops at run time; mypy fails the build if a decorated
function's parameters or return type were lost.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import pytest
from typing_extensions import assert_type

import isr

rt = isr.ISR()


@rt.with_revalidate("post:{slug}:{lang}", ttl=60)
async def get_post(slug: str, lang: str = "en") -> dict[str, str]:
    return {"slug": slug, "lang": lang}


@isr.with_revalidate("n:{n}", ttl=60, runtime=rt)
def square(n: int) -> int:
    return n * n


async def _checked_by_mypy_only() -> None:
    assert_type(await get_post("a"), dict[str, str])
    assert_type(await get_post.lookup("a", lang="de"), isr.Result[dict[str, str]])
    coroutine: Coroutine[Any, Any, dict[str, str]] = get_post("a")
    await coroutine
    assert_type(square(3), int)
    assert_type(square.lookup(3), isr.Result[int])
    assert_type(square.cache_key(3), str)
    square("3")  # type: ignore[arg-type]
    await get_post(1)  # type: ignore[arg-type]
    square(n=3, m=4)  # type: ignore[call-arg]


def test_sync_values_come_through() -> None:
    assert square(3) == 9
    assert square.lookup(3).status is isr.Status.HIT


@pytest.mark.anyio
async def test_the_runtime_method_decorates_too(anyio_backend: str) -> None:
    assert (await get_post.lookup(anyio_backend)).status is isr.Status.MISS
    assert (await get_post.lookup(slug=anyio_backend)).status is isr.Status.HIT
