"""Claims: set-if-absent names with an expiry, the same on every store (the conformance
fixtures), and the in-process table a store only one process uses keeps them in. Shared
across runtimes and processes: tests/test_security_replay.py."""

from __future__ import annotations

import time

import pytest

import isr
from isr._synchronization import async_usable
from isr.adapters.claims import LocalClaims

from .conftest import FakeClock


@pytest.mark.anyio
async def test_a_name_is_claimed_once_until_it_expires_or_is_given_back(rt: isr.ISR) -> None:
    store = async_usable(rt.adapter)  # as the runtime (and the webhook) use it, on trio too
    assert await store.aclaim("webhook:a", 30) is True
    assert await store.aclaim("webhook:a", 30) is False
    assert store.claim("webhook:a", 30) is False  # the sync spelling sees it too
    assert await store.aclaim("webhook:b", 30) is True  # names are independent
    await store.aunclaim("webhook:a")
    assert await store.aclaim("webhook:a", 30) is True
    store.unclaim("webhook:b")
    assert store.claim("webhook:b", 30) is True


def test_a_claim_expires(srt: isr.ISR) -> None:
    """Real time (diskcache and Redis expire on their own clocks): short, with margin."""
    store = srt.adapter
    assert store.claim("short", 0.3) is True
    assert store.claim("short", 0.3) is False
    time.sleep(1.2)
    assert store.claim("short", 0.3) is True


def test_local_claims_expire_on_their_clock() -> None:
    clock = FakeClock()
    claims = LocalClaims(clock=clock)
    assert claims.claim("a", 10) is True
    clock.advance(9.9)
    assert claims.claim("a", 10) is False
    clock.advance(0.2)
    assert claims.claim("a", 10) is True


def test_local_claims_stay_bounded_dropping_the_oldest() -> None:
    clock = FakeClock()
    claims = LocalClaims(limit=3, clock=clock)
    for name in "abcde":
        assert claims.claim(name, 60) is True
    assert len(claims) == 3
    assert claims.claim("e", 60) is False  # the newest are kept
    assert claims.claim("a", 60) is True  # the oldest went to make room
    clock.advance(61)
    assert claims.claim("f", 60) is True
    assert len(claims) == 1  # the expired ones are forgotten
