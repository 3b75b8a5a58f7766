"""Decorated methods: ``self`` is bound for the call and for every helper, instances never
share an entry unless that is said, and the unbound function stays reachable."""

from __future__ import annotations

import inspect

import pytest

import isr
from isr import Status

#: The methods' runtime (a memory store; each test uses its own tenants).
RT = isr.ISR()


class Users:
    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.loads: list[int] = []

    def name_of(self, uid: int) -> str:
        self.loads.append(uid)
        return f"{self.tenant}:{uid}:v{len(self.loads)}"

    @RT.with_revalidate("user:{self.tenant}:{uid}", ttl=60)
    def name(self, uid: int) -> str:
        return self.name_of(uid)

    @RT.with_revalidate("auser:{self.tenant}:{uid}", ttl=60)
    async def aname(self, uid: int) -> str:
        return self.name_of(uid)


def test_a_method_binds_self_for_the_call_and_every_helper() -> None:
    a, b = Users("sync-a"), Users("sync-b")
    assert a.name(1) == "sync-a:1:v1"
    assert b.name(1) == "sync-b:1:v1"
    assert a.name.lookup(1).status is Status.HIT
    assert a.name.cache_key(1) == "user:sync-a:1"
    assert a.name.cache_tags(1) == ()
    assert a.name.refresh(1) == "sync-a:1:v2"
    assert a.name.invalidate(1, mode="purge") is True
    assert RT.adapter.get("user:sync-a:1") is None
    assert RT.adapter.get("user:sync-b:1") is not None  # the other instance's entry
    assert Users.name(b, 1) == "sync-b:1:v1"  # through the class
    assert "bound cached method" in repr(a.name)
    assert list(inspect.signature(a.name).parameters) == ["uid"]
    assert list(inspect.signature(Users.name).parameters) == ["self", "uid"]


@pytest.mark.anyio
async def test_an_async_method_binds_self_for_the_call_and_every_helper(
    anyio_backend: str,
) -> None:
    a = Users(f"async-{anyio_backend}")
    assert await a.aname(1) == f"async-{anyio_backend}:1:v1"
    assert (await a.aname.lookup(1)).status is Status.HIT
    assert await a.aname.refresh(1) == f"async-{anyio_backend}:1:v2"
    assert await a.aname.invalidate(1) is True
    assert (await a.aname.lookup(1)).status is Status.MISS
    assert inspect.iscoroutinefunction(a.aname)


def test_a_method_key_that_does_not_name_self_is_refused_unless_shared() -> None:
    with isr.ISR() as rt:
        with pytest.raises(isr.TemplateError, match=r"does not name \{self\.\.\.\}"):

            class Broken:
                @rt.with_revalidate("user:{uid}", ttl=60)
                def name(self, uid: int) -> str:
                    return str(uid)

        class Meant:
            @rt.with_revalidate("config:{key}", ttl=60, shared=True)
            def get(self, key: str) -> str:
                return key

        first, second = Meant(), Meant()
        assert first.get("x") == "x"
        assert second.get.lookup("x").status is Status.HIT  # one entry for all, as said


def test_a_classmethods_key_must_name_cls() -> None:
    with isr.ISR() as rt, pytest.raises(isr.TemplateError, match=r"\{cls\.\.\.\}"):

        @rt.with_revalidate("kind:{x}", ttl=60)
        def of(cls: type, x: int) -> int:
            return x


def test_a_plain_function_stays_the_generated_wrapper() -> None:
    """No descriptor layer where there is no ``self``: the call is the wrapper itself."""
    with isr.ISR() as rt:

        @rt.with_revalidate("n:{n}", ttl=60)
        def square(n: int) -> int:
            return n * n

        assert inspect.isfunction(square)
