"""The pure core: what a read does with an entry, decided without an event loop."""

from __future__ import annotations

import pytest

from isr._entry import INF, Entry, Generation, Mode, Policy, Verdict, classify, parse_mode

G0 = Generation()


def entry(ttl: float = 10, swr: float | None = 20, sie: float = 30, created: float = 100) -> Entry:
    return Entry("v", created, Policy(ttl, swr, sie), G0.current)


@pytest.mark.parametrize(
    ("now", "verdict"),
    [
        (100.0, Verdict.FRESH),
        (109.999, Verdict.FRESH),
        (110.0, Verdict.STALE),  # ttl reached: no longer fresh
        (129.999, Verdict.STALE),
        (130.0, Verdict.EXPIRED),  # past ttl + swr: fetch, old value as fallback
        (159.999, Verdict.EXPIRED),
        (160.0, Verdict.ABSENT),  # past stale-if-error too: nothing to fall back on
    ],
)
def test_windows_follow_ttl_swr_and_stale_if_error(now: float, verdict: Verdict) -> None:
    assert classify(entry(), now, G0) is verdict


def test_unbounded_swr_is_classic_isr_stale_forever() -> None:
    e = entry(swr=None)
    assert classify(e, 1e12, G0) is Verdict.STALE
    assert e.stale_until == INF


def test_missing_entry_is_absent() -> None:
    assert classify(None, 0.0, G0) is Verdict.ABSENT


@pytest.mark.parametrize(
    ("mode", "fresh_read", "late_read"),
    [
        (Mode.REVALIDATE, Verdict.STALE, Verdict.EXPIRED),
        (Mode.EXPIRE, Verdict.EXPIRED, Verdict.EXPIRED),
        (Mode.PURGE, Verdict.ABSENT, Verdict.ABSENT),
    ],
)
def test_marked_entry(mode: Mode, fresh_read: Verdict, late_read: Verdict) -> None:
    e = entry().marked(mode)
    assert e.fresh_until == -INF  # the hot path can never take a marked entry for fresh
    assert classify(e, 101.0, G0) is fresh_read
    assert classify(e, 140.0, G0) is late_read
    assert classify(e, 1e9, G0) is Verdict.ABSENT


def test_a_weaker_mark_never_overrides_a_stronger_one() -> None:
    e = entry().marked(Mode.EXPIRE).marked(Mode.REVALIDATE)
    assert e.policy.mark is Mode.EXPIRE
    assert classify(e, 101.0, G0) is Verdict.EXPIRED


def test_generation_marks_older_entries_only() -> None:
    old = entry()
    gen = G0.bumped(Mode.REVALIDATE)
    new = Entry("v", 100, Policy(10, 20, 30), gen.current)
    assert classify(old, 101.0, gen) is Verdict.STALE
    assert classify(new, 101.0, gen) is Verdict.FRESH


def test_generation_keeps_the_strongest_invalidate_all() -> None:
    e = entry()
    gen = G0.bumped(Mode.PURGE).bumped(Mode.REVALIDATE)
    assert classify(e, 101.0, gen) is Verdict.ABSENT
    # an entry fetched between the two only sees the revalidate
    between = Entry("v", 100, Policy(10, 20, 30), 1)
    assert classify(between, 101.0, gen) is Verdict.STALE
    gen2 = G0.bumped(Mode.REVALIDATE).bumped(Mode.EXPIRE)
    assert classify(e, 101.0, gen2) is Verdict.EXPIRED


def test_parse_mode_names_the_valid_modes() -> None:
    assert parse_mode("purge") is Mode.PURGE
    with pytest.raises(ValueError, match="'expire' \\(default\\), 'revalidate' or 'purge'"):
        parse_mode("delete")
