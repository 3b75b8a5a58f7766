"""The fault suite: three replicas over one Redis, and the faults a production Redis meets.

Real processes, nothing faked: a redis-server this module starts (and kills with SIGKILL,
freezes with SIGSTOP, restarts empty or from an older dump, whose records it deletes by
hand, whose subscriptions it kills), and three uvicorn replicas, each with its L1, running
``tests/_fault_app.py`` (see ``tests/_faults.py``). Every value carries its origin version;
readers record which version each request got and when, and each test asserts, on those
records, the promises of the README's "Several instances" section:

- an invalidation (key, tag, all; every mode) reaches every replica within `BOUND` after
  it returned, whatever happened to the store's records before it;
- one the store cannot take is refused (503 / `isr.StoreUnavailable`), applied by its
  replica at once, and everywhere once the store is back (`CATCHUP`);
- a purge acknowledged is never served again;
- no read waits past the loader's timeout plus a store timeout (`WAIT_BOUND`), and no read
  is answered 5xx.

The replicas are shared by the module's tests (each test its own pages); each test starts
with Redis running and every replica ready and subscribed.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator

import pytest

from ._fault_app import LOADER_TIMEOUT
from ._faults import INSTANCES, Findings, Read, Readers, Site, old_reads, running_site

#: An invalidation reaches every replica within this long after it returned: a pub/sub
#: round trip normally; the epoch poll (1 s) plus a reconnect when messages were lost.
BOUND = 1.5
#: A Redis command's timeout (the default), and what a read may wait at most: the loader's
#: timeout plus one store timeout, and slack for a loaded machine and the HTTP round trip.
STORE_TIMEOUT = 0.25
WAIT_BOUND = LOADER_TIMEOUT + STORE_TIMEOUT + 0.5
#: Once Redis answers again, a replica applies what it could not before within this long:
#: the circuit breaker's cooldown (2 s), the epoch poll (1 s), and slack.
CATCHUP = 4.0
#: Readers go on this long past a bound, so that a late old version would be seen.
TAIL = 0.5
PA, PB, PC = INSTANCES


@pytest.fixture(scope="module")
def shared_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running_site(tmp_path_factory.mktemp("faults")) as site:
        yield site


@pytest.fixture
def site(shared_site: Site) -> Site:
    """The module's site, with Redis running and every replica ready and subscribed."""
    shared_site.settle()
    return shared_site


def both(slug: str) -> list[str]:
    """The slug's two pages: bounded windows (``page/``) and ``swr=None`` (``classic/``)."""
    return [f"page/{slug}", f"classic/{slug}"]


def everywhere(paths: list[str]) -> dict[str, list[str]]:
    return dict.fromkeys(INSTANCES, paths)


def raise_generation(site: Site) -> None:
    """Two invalidate-alls: the generation (and the bus's epoch) move on, as in any site
    that has run a while."""
    for _ in range(2):
        _, answer = site.invalidate(PA, all="1")
        assert answer.status_code == 200, answer.text


# ---------------------------------------------------------------- store state lost


@pytest.mark.parametrize("mode", ["expire", "revalidate", "purge"])
def test_after_redis_restarts_empty_every_invalidation_reaches_every_replica(
    site: Site, mode: str
) -> None:
    slug = f"restarted-{mode}"
    paths = both(slug)
    raise_generation(site)
    site.redis.restart()  # SIGKILL, then up again, empty
    site.settle()
    for path in paths:  # cached again since the restart
        site.serve_everywhere(path, 1)
    with Readers(site, everywhere(paths)) as readers:
        new = site.origin.bump(slug)
        t_all, answer = site.invalidate(PB, all="1", mode=mode)
        assert answer.status_code == 200, answer.text
        time.sleep(BOUND + TAIL)
        newer = site.origin.bump(slug)
        t_tag, answer = site.webhook(PC, {"tags": [f"slug:{slug}"], "mode": "purge"})
        assert answer.status_code == 200, answer.text
        time.sleep(BOUND + TAIL)
    reads = readers.snapshot()
    found = Findings()
    found.errors(reads)
    before_tag = [r for r in reads if r.started < t_tag - 0.2]
    for path in paths:
        found.reached(
            before_tag,
            path,
            new,
            t_all,
            BOUND,
            f"invalidate_all({mode}) once Redis was back, empty",
            stale_ok=mode == "revalidate",
        )
        found.reached(reads, path, newer, t_tag, BOUND, "a tag purge after that")
    found.assert_none()


def test_after_redis_restarts_from_an_older_dump_no_purge_or_invalidation_is_lost(
    site: Site,
) -> None:
    purged, later = "dump-purged", "dump-later"
    paths = [*both(purged), *both(later)]
    for path in paths:
        site.serve_everywhere(path, 1)
    dump = site.redis.save()
    with Readers(site, everywhere(paths)) as readers:
        gone = site.origin.bump(purged)
        keys = [f"page:{purged}", f"classic:{purged}"]
        t_purge, answer = site.webhook(PA, {"keys": keys, "mode": "purge"})
        assert answer.status_code == 200, answer.text  # acknowledged: never served again
        for _ in range(2):  # the generation moves on after the dump
            _, answer = site.invalidate(PB, all="1", mode="revalidate")
            assert answer.status_code == 200, answer.text
        time.sleep(BOUND)
        site.redis.restart(dump)  # a restart with persistence, or a failover, that lost these
        t_restart = time.monotonic()
        site.settle()
        time.sleep(BOUND)
        new = site.origin.bump(later)
        t_all, answer = site.invalidate(PC, all="1")
        assert answer.status_code == 200, answer.text
        time.sleep(BOUND + TAIL)
    reads = readers.snapshot()
    found = Findings()
    found.errors(reads)
    for path in both(purged):
        found.reads(
            f"{path}: the purged v1 served again (purged, acknowledged, then Redis restarted "
            "from a dump saved before the purge)",
            old_reads(reads, path, gone, t_purge + BOUND),
        )
        found.served(reads, path, gone, after=t_restart)
    for path in both(later):
        found.reached(
            reads, path, new, t_all, BOUND, "invalidate_all once Redis was back from the dump"
        )
    found.assert_none()


@pytest.mark.parametrize("record", ["gen", "epoch"])
def test_with_a_record_deleted_by_hand_no_invalidation_is_ignored(site: Site, record: str) -> None:
    slug = f"deleted-{record}"
    paths = both(slug)
    raise_generation(site)
    for path in paths:
        site.serve_everywhere(path, 1)
    with site.redis_client() as client:  # as an eviction (allkeys-lru) or an operator would
        assert client.delete(f"{site.namespace}:{record}") == 1
    steps: list[tuple[str, int, float]] = []
    with Readers(site, everywhere(paths)) as readers:
        for what, instance, params in [
            ("invalidate (key)", PA, [{"key": f"page:{slug}"}, {"key": f"classic:{slug}"}]),
            ("invalidate_tag", PB, [{"tag": f"slug:{slug}"}]),
            ("invalidate_all", PC, [{"all": "1"}]),
        ]:
            version = site.origin.bump(slug)
            for param in params:
                done, answer = site.invalidate(instance, **param)
                assert answer.status_code == 200, answer.text
            steps.append((what, version, done))
            time.sleep(BOUND + TAIL)
    reads = readers.snapshot()
    found = Findings()
    found.errors(reads)
    for (what, version, done), (_, _, following) in zip(
        steps, [*steps[1:], ("", 0, float("inf"))], strict=True
    ):
        shown = [r for r in reads if r.started < following - 0.2]
        for path in paths:
            deleted = f"{what} (with {site.namespace}:{record} deleted before)"
            found.reached(shown, path, version, done, BOUND, deleted)
    found.assert_none()


# ---------------------------------------------------------------- Redis out of reach


def test_a_frozen_redis_delays_no_reader_past_the_bound_and_loses_no_invalidation(
    site: Site,
) -> None:
    hot, target = "frozen-hot", "frozen-target"
    for path in (f"page/{hot}", f"page/{target}"):
        site.serve_everywhere(path, 1)
    plan = {
        name: [f"page/{hot}", f"page/{target}", f"page/frozen-{name}-{{n}}"] for name in INSTANCES
    }
    with Readers(site, plan) as readers:
        time.sleep(0.3)
        site.redis.freeze()  # SIGSTOP: connections stay open, nothing answers
        t_freeze = time.monotonic()
        time.sleep(1.0)
        new = site.origin.bump(target)
        sent = time.monotonic()
        t_inv, answer = site.invalidate(PA, key=f"page:{target}")
        time.sleep(max(0.0, t_freeze + 3.0 - time.monotonic()))
        site.redis.thaw()
        t_thaw = time.monotonic()
        time.sleep(CATCHUP + TAIL)
    reads = readers.snapshot()
    path = f"page/{target}"
    found = Findings()
    found.errors(reads)
    found.reads(
        f"waited longer than {WAIT_BOUND} s (the loader's timeout, a store timeout, slack)",
        [r for r in reads if r.took > WAIT_BOUND],
    )
    found.check(
        answer.status_code == 503 and "StoreUnavailable" in answer.text,
        f"the invalidation made while Redis was frozen was answered {answer.status_code} "
        f"{answer.text.strip()}, not 503 (StoreUnavailable)",
    )
    found.check(
        t_inv - sent <= WAIT_BOUND,
        f"the invalidation made while Redis was frozen took {t_inv - sent:.2f} s",
    )
    found.reads(
        f"{path}: v1 served by {PA} after its own invalidation returned",
        old_reads(reads, path, new, t_inv, instances=[PA]),
    )
    found.reached(reads, path, new, t_thaw, CATCHUP, "the thaw")
    found.assert_none()


def test_invalidations_made_while_redis_is_down_are_refused_then_applied(site: Site) -> None:
    purged, tagged, every = "down-purged", "down-tagged", "down-all"
    paths = [f"page/{purged}", f"page/{tagged}", f"page/{every}"]
    for path in paths:
        site.serve_everywhere(path, 1)
    dump = site.redis.save()  # Redis keeps its data (RDB, AOF) across the stop
    with Readers(site, everywhere(paths)) as readers:
        site.redis.kill()
        new = site.origin.bump(purged, tagged, every)
        done: dict[str, float] = {}
        answers = {}
        done["key"], answers["key purge (webhook)"] = site.webhook(
            PA, {"keys": [f"page:{purged}"], "mode": "purge"}
        )
        done["tag"], answers["tag purge (webhook)"] = site.webhook(
            PB, {"tags": [f"slug:{tagged}"], "mode": "purge"}
        )
        done["all"], answers["invalidate_all"] = site.invalidate(PC, all="1")
        time.sleep(1.0)
        site.redis.restart(dump)  # back, with the data it had: every page at v1
        t_back = time.monotonic()
        time.sleep(CATCHUP)
        later = site.origin.bump(every)
        t_later, answer = site.invalidate(PA, all="1")
        time.sleep(BOUND + TAIL)
    reads = readers.snapshot()
    found = Findings()
    found.errors(reads)
    for what, response in answers.items():
        found.check(
            response.status_code == 503
            and "unavailable" in response.text.lower()
            and "retry-after" in response.headers,
            f"{what} made while Redis was down was answered {response.status_code} "
            f"{response.text.strip()[:200]}, not 503 with Retry-After (store unavailable)",
        )
    for path, instance, when in [
        (f"page/{purged}", PA, done["key"]),
        (f"page/{tagged}", PB, done["tag"]),
        (f"page/{every}", PC, done["all"]),
    ]:
        found.reads(
            f"{path}: v1 served by {instance} after its own invalidation",
            old_reads(reads, path, new, when, instances=[instance]),
        )
        found.reached(reads, path, new, t_back, CATCHUP, "Redis was back")
    found.check(
        answer.status_code == 200, f"the later invalidate_all was answered {answer.status_code}"
    )
    found.reached(reads, f"page/{every}", later, t_later, BOUND, "a normal invalidate_all")
    found.assert_none()


# ---------------------------------------------------------------- pub/sub


def test_killed_subscriptions_keep_staleness_within_the_bound(site: Site) -> None:
    slug = "churn"
    path = f"page/{slug}"
    site.serve_everywhere(path, 1)
    stop = threading.Event()
    kills: list[int] = []

    def kill_subscriptions() -> None:
        with site.redis_client() as client:
            while not stop.wait(0.4):
                kills.append(int(client.client_kill_filter(_type="pubsub")))

    published: list[tuple[float, int]] = []
    killer = threading.Thread(target=kill_subscriptions, daemon=True)
    with Readers(site, {PB: [path], PC: [path]}, pause=0.005) as readers:
        killer.start()
        try:
            end = time.monotonic() + 10.0
            while time.monotonic() < end:
                version = site.origin.bump(slug)
                done, answer = site.invalidate(PA, key=f"page:{slug}")
                assert answer.status_code == 200, answer.text
                published.append((done, version))
                time.sleep(0.2)
        finally:
            stop.set()
            killer.join()
        time.sleep(BOUND + TAIL)
    reads = readers.snapshot()
    staleness = [
        lateness(reads, path, instance, done, version)
        for done, version in published
        for instance in (PB, PC)
    ]
    p50 = statistics.median(staleness)
    p99 = statistics.quantiles(staleness, n=100)[98]
    worst = max(staleness)
    figures = (
        f"staleness over {len(published)} publishes x 2 replicas, {sum(kills)} subscriptions "
        f"killed ({len(kills)} rounds): p50 {p50 * 1e3:.0f} ms, p99 {p99 * 1e3:.0f} ms, "
        f"max {worst * 1e3:.0f} ms"
    )
    print(figures)
    found = Findings()
    found.errors(reads)
    found.check(
        kills[:1] == [len(INSTANCES)], f"the replicas were not all subscribed at first: {kills}"
    )
    found.check(worst <= BOUND, f"{figures}: above the bound of {BOUND * 1e3:.0f} ms")
    found.assert_none()


def lateness(reads: list[Read], path: str, instance: str, done: float, version: int) -> float:
    """How long after ``done`` (an invalidation's return) ``instance`` still served ``path``
    older than ``version``: the start of its last such read, minus ``done``."""
    late = old_reads(reads, path, version, done, instances=[instance])
    return max((r.started - done for r in late), default=0.0)
