"""What type checkers see of the features beside the call, checked by BOTH mypy --strict and
pyright (the test command runs each over this file; see ``[tool.pyright]``).

The ``assert_type`` calls are no-ops at run time. Each ``# type: ignore[...]`` marks a call
that must NOT type-check: mypy (``warn_unused_ignores``, part of strict) and pyright
(``reportUnnecessaryTypeIgnoreComment``) both fail the build if one of them starts passing.
"""

from __future__ import annotations

import datetime
from collections.abc import Coroutine
from typing import Any

from typing_extensions import assert_type

import isr

rt = isr.ISR()


class Repo:
    def __init__(self, tenant: str) -> None:
        self.tenant = tenant

    @rt.with_revalidate("user:{self.tenant}:{uid}", ttl=60)
    def user(self, uid: int, *, full: bool = False) -> dict[str, int]:
        return {"uid": uid}

    @rt.with_revalidate("auser:{self.tenant}:{uid}", ttl=datetime.timedelta(minutes=1))
    async def auser(self, uid: int) -> list[int]:
        return [uid]


@rt.with_revalidate("post:{slug}", ttl=60, stale_if_error=None)
async def get_post(slug: str, lang: str = "en") -> dict[str, str]:
    return {"slug": slug}


@rt.with_revalidate("n:{n}", ttl=0)
def square(n: int) -> int:
    return n * n


def _sync_methods(repo: Repo) -> None:
    assert_type(repo.user(1), dict[str, int])
    assert_type(repo.user(1, full=True), dict[str, int])
    assert_type(repo.user.lookup(1), isr.Result[dict[str, int]])
    assert_type(repo.user.cache_key(1), str)
    assert_type(repo.user.cache_tags(1), tuple[str, ...])
    assert_type(repo.user.refresh(1), dict[str, int])
    assert_type(repo.user.invalidate(1), bool)
    assert_type(repo.user.invalidate(1, mode="purge"), bool)
    assert_type(Repo.user(repo, 1), dict[str, int])  # through the class: self passed
    repo.user("1")  # type: ignore[arg-type]
    repo.user(1, full="yes")  # type: ignore[arg-type]
    repo.user.lookup("1")  # type: ignore[arg-type]
    repo.user.refresh()  # type: ignore[call-arg]
    repo.user.invalidate("1")  # type: ignore[call-overload]
    repo.user.invalidate(1, mode="gone")  # type: ignore[call-overload]


async def _async_methods(repo: Repo) -> None:
    assert_type(await repo.auser(1), list[int])
    assert_type(await repo.auser.lookup(1), isr.Result[list[int]])
    assert_type(await repo.auser.refresh(1), list[int])
    assert_type(await repo.auser.invalidate(1, mode="revalidate"), bool)
    coroutine: Coroutine[Any, Any, list[int]] = repo.auser(1)
    await coroutine
    await repo.auser("1")  # type: ignore[arg-type]


async def _functions() -> None:
    assert_type(await get_post.refresh("a", lang="de"), dict[str, str])
    assert_type(await get_post.invalidate("a"), bool)
    assert_type(await get_post.invalidate("a", mode=isr.Mode.PURGE), bool)
    assert_type(square.refresh(3), int)
    assert_type(square.invalidate(3), bool)
    square.refresh("3")  # type: ignore[arg-type]
    await get_post.invalidate(1)  # type: ignore[call-overload]
    with isr.disabled():
        assert_type(square(2), int)


async def _fetch_posts() -> list[str]:
    return ["a"]


def _load_posts() -> list[str]:
    return ["a"]


async def _call_site() -> None:
    assert_type(await rt.revalidating("posts", 60, _fetch_posts), list[str])
    assert_type(
        await rt.revalidating("posts", 60, _fetch_posts, lookup=True), isr.Result[list[str]]
    )
    assert_type(await isr.revalidating("posts", 60, _fetch_posts, swr=None), list[str])
    assert_type(rt.revalidating_sync("posts", 60, _load_posts, tags=["posts"]), list[str])
    assert_type(
        isr.revalidating_sync("p", datetime.timedelta(seconds=5), _load_posts, lookup=True),
        isr.Result[list[str]],
    )
    await rt.revalidating("posts", 60, _load_posts)  # type: ignore[arg-type]
    await rt.revalidating("posts", 60, _fetch_posts, swr="1m")  # type: ignore[call-overload]
    rt.revalidating_sync(5, 60, _load_posts)  # type: ignore[call-overload]


def test_the_checked_code_runs() -> None:
    repo = Repo("typing")
    _sync_methods_ok = (repo.user(1), repo.user.lookup(1).status, square.refresh(3))
    assert _sync_methods_ok == ({"uid": 1}, isr.Status.HIT, 9)
