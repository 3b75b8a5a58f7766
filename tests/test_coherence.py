"""Coherence you can see (issue 19): live instances, confirmations, the invalidation log.

Three layers of checks: the plain rules and records (`isr._coherence`); several runtimes in
this process on one store (disk, Redis, Redis with an L1), each with its own bus, and an
injected clock wherever the liveness window is crossed; and real processes: three uvicorn
replicas with their L1 over one redis-server (the fault suite's site, ``tests/_faults.py``),
killed with SIGKILL and frozen with SIGSTOP, purging a recording CDN through the webhook.
The conformance suite (``tests/_async/test_runtime.py`` and its generated sync twin) checks
the single-runtime behaviour on every store.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis

import isr
from isr import Confirmation, Instance, LoggedInvalidation, invalidation_source
from isr._coherence import current_source, instance_from, instance_record, is_live
from isr.webhook import Webhook

from ._faults import INSTANCES, Site, running_site
from ._strapi5 import deliveries
from ._third_party import DictStore
from .conftest import FakeClock
from .recording_server import Recorded, RecordingServer
from .redis_server import RedisServer
from .test_cli import isr_command

PA, PB, PC = INSTANCES


# ------------------------------------------------------------------ rules and records


def test_a_source_is_one_of_three_and_its_details_carry_no_credential() -> None:
    assert current_source() == ("code", {})
    with invalidation_source("webhook", event="entry.publish", entry=6, model=None):
        source, detail = current_source()
        assert (source, dict(detail)) == ("webhook", {"event": "entry.publish", "entry": "6"})
        with invalidation_source("cli"):
            assert current_source()[0] == "cli"
        assert current_source()[0] == "webhook"
    assert current_source()[0] == "code"
    with pytest.raises(isr.ConfigError, match="source must be one of"), invalidation_source("cron"):
        pass
    for name in ("secret", "Authorization", "webhook_token", "password"):
        refused = pytest.raises(isr.ConfigError, match="credential")
        with refused, invalidation_source("webhook", **{name: "x"}):
            pass
    with invalidation_source(
        "webhook",
        url="https://editor:hunter2-pass@cms.example/hook?token=abc123def",
        long="x" * 500,
        lines="a\nb\x00c",
    ):
        detail = dict(current_source()[1])
    assert "hunter2" not in detail["url"]
    assert "abc123def" not in detail["url"]
    assert len(detail["long"]) == 200
    assert detail["lines"].isprintable()
    many = {f"d{i}": "v" for i in range(9)}
    with pytest.raises(isr.ConfigError, match="at most 8"), invalidation_source("code", **many):
        pass


def test_records_round_trip_and_a_tampered_one_is_dropped() -> None:
    me = Instance("h:1:abcdef", "h", 1, 10.0, "blog", 20.0, True, None, 0.5)
    assert instance_from(instance_record(me), 42) == Instance(
        "h:1:abcdef", "h", 1, 10.0, "blog", 20.0, True, 42, 0.5
    )
    done = Confirmation(("a", "b"), ("c",), 2.5)
    assert Confirmation.from_record(done.to_record()) == done
    assert not done.complete
    assert done.as_json() == {"confirmed": 2, "missing": ["c"], "ms": 2.5}
    logged = LoggedInvalidation("", 1.0, "tag", "posts", "purge", "webhook", {"a": "b"}, "i", 7)
    back = LoggedInvalidation.from_record("5-0", logged.to_record(), done)
    assert back is not None
    assert (back.id, back.epoch, back.confirmation) == ("5-0", 7, done)
    for bad in (
        None,
        b"\xff",
        "[]",
        '{"id": 1}',
        json.dumps({**json.loads(instance_record(me)), "pid": "1; rm -rf /"}),
        json.dumps({**json.loads(instance_record(me)), "heartbeat": 0}),
        json.dumps({**json.loads(instance_record(me)), "seen": float("nan")}),
    ):
        assert instance_from(bad) is None
    assert LoggedInvalidation.from_record("1-0", '{"at": 1, "detail": {"a": 1}}') is None
    assert Confirmation.from_record('{"confirmed": "abc", "missing": [], "ms": 1}') is None


def test_an_instance_is_live_for_three_of_its_heartbeats() -> None:
    me = Instance("h:1:abcdef", "h", 1, 0.0, "isr", 100.0, False, None, 2.0)
    assert is_live(me, 100.0)
    assert is_live(me, 106.0)
    assert not is_live(me, 106.01)


# ------------------------------------------------------------------ runtimes in this process


@pytest.fixture(params=["disk", "redis", "redis-l1"])
def shared_url(
    request: pytest.FixtureRequest, tmp_path: Path, redis_server: RedisServer
) -> Iterator[tuple[str, dict[str, Any]]]:
    if request.param == "disk":
        yield f"disk://{tmp_path / 'cache'}", {}
    else:
        yield redis_server.url, {"l1": request.param == "redis-l1"}


def test_runtimes_on_one_store_list_each_other_within_the_window(
    shared_url: tuple[str, dict[str, Any]], namespace: str
) -> None:
    """Registered at ``wait_ready``, listed by every runtime on the store and namespace
    (not another namespace's), each with its own clock; one whose heartbeat is three
    intervals old is no longer listed; closing removes the record at once."""
    url, options = shared_url
    clock_a, clock_b = FakeClock(50_000.0), FakeClock(50_000.0)
    a = isr.ISR(url, namespace=namespace, clock=clock_a, heartbeat=10, **options)
    b = isr.ISR(url, namespace=namespace, clock=clock_b, heartbeat=10, **options)
    other = isr.ISR(url, namespace=namespace + "-other", clock=clock_b, **options)
    try:
        assert a.wait_ready_sync(10)
        assert b.wait_ready_sync(10)
        assert other.wait_ready_sync(10)
        both = sorted([a.instance_id, b.instance_id])
        assert [i.id for i in a.instances_sync()] == both
        assert [i.id for i in b.instances_sync()] == both
        assert [i.id for i in other.instances_sync()] == [other.instance_id]
        listed = {i.id: i for i in b.instances_sync()}[a.instance_id]
        assert (listed.seen, listed.heartbeat, listed.namespace) == (50_000.0, 10.0, namespace)
        assert listed.l1 is bool(options.get("l1"))
        clock_b.advance(30)  # a's last heartbeat is three intervals old: still live
        assert a.instance_id in [i.id for i in b.instances_sync()]
        clock_b.advance(0.5)
        assert [i.id for i in b.instances_sync()] == [b.instance_id]
        clock_b.advance(-30.5)
        a.close()  # leaves the registry at once
        assert [i.id for i in b.instances_sync()] == [b.instance_id]
    finally:
        for rt in (a, b, other):
            rt.close()


def test_the_log_is_bounded_and_shared_by_the_runtimes_of_a_store(
    shared_url: tuple[str, dict[str, Any]], namespace: str
) -> None:
    url, options = shared_url
    with (
        isr.ISR(url, namespace=namespace, log_size=5, **options) as a,
        isr.ISR(url, namespace=namespace, log_size=5, **options) as b,
    ):
        assert a.wait_ready_sync(10)
        assert b.wait_ready_sync(10)
        for i in range(12):
            (a if i % 2 else b).invalidate_sync(f"k{i}")
        log = a.invalidation_log_sync(limit=50)
        assert [e.name for e in log] == ["k11", "k10", "k9", "k8", "k7"]
        assert [e.instance for e in log[:2]] == [a.instance_id, b.instance_id]
        assert [e.id for e in log] == sorted((e.id for e in log), key=_order, reverse=True)
    if url.startswith("redis"):
        with Redis.from_url(url) as client:
            assert client.xlen(f"{namespace}:log") == 5


def _order(log_id: str) -> tuple[int, int]:
    ms, _, n = log_id.partition("-")
    return int(ms), int(n)


def test_a_confirmation_waits_for_each_l1_and_reports_one_that_does_not_apply(
    redis_server: RedisServer, namespace: str
) -> None:
    """Three runtimes with an L1, each its own bus: an invalidation made by a plain Redis
    runtime (no L1, no registration: the isr command's way) is confirmed by all three;
    one whose bus stopped listening (its thread stopped: it never applies) is missing after
    the timeout, not a hang, and the confirmation is recorded in the log."""
    url = redis_server.url
    l1s = [isr.ISR(url, namespace=namespace, l1=True) for _ in range(3)]
    plain = isr.ISR(url, namespace=namespace, heartbeat=None)
    try:
        for rt in l1s:
            assert rt.wait_ready_sync(10)
        ids = tuple(sorted(rt.instance_id for rt in l1s))
        assert [i.id for i in plain.instances_sync()] == list(ids)  # not itself
        plain.invalidate_tag_sync("posts")
        done = plain.confirm_sync(timeout=2.0)
        assert (done.confirmed, done.missing) == (ids, ())
        deaf = l1s[2]
        deaf.adapter.bus.close()  # type: ignore[attr-defined]
        plain.invalidate_sync("k")
        started = time.monotonic()
        late = plain.confirm_sync(timeout=0.3)
        assert 0.3 <= time.monotonic() - started < 2.0
        assert (late.confirmed, late.missing) == (
            ids[:2]
            if deaf.instance_id == ids[2]
            else tuple(i for i in ids if i != deaf.instance_id),
            (deaf.instance_id,),
        )
        assert 300 <= late.ms < 2000
        logged = l1s[0].invalidation_log_sync(limit=2)
        assert [(e.name, e.confirmation) for e in logged] == [("k", late), ("posts", done)]
        assert all(e.instance == plain.instance_id for e in logged)
    finally:
        for rt in [*l1s, plain]:
            rt.close()


# ------------------------------------------------------------------ the isr command


def test_the_isr_command_lists_instances_and_the_log_with_its_own_source(
    tmp_path: Path, namespace: str
) -> None:
    url = f"disk://{tmp_path / 'cache'}"
    with isr.ISR(url, namespace=namespace) as app:
        assert app.wait_ready_sync(5)
        env = {"ISR_CACHE_URL": url, "ISR_NAMESPACE": namespace}
        done = isr_command("invalidate", "--tag", "posts", "--mode", "purge", **env)
        assert done.returncode == 0, done.stderr
        assert "\ninstances: 1 confirmed in " in done.stdout  # the app, which has no L1
        assert isr_command("invalidate", "--tag", "x", "--confirm", "-1", **env).returncode == 2
        listed = isr_command("instances", "--json", **env)
        assert listed.returncode == 0, listed.stderr
        assert [i["id"] for i in json.loads(listed.stdout)] == [app.instance_id]
        table = isr_command("instances", **env)
        assert table.stdout.splitlines()[0].split() == [
            "ID", "HOST", "PID", "STARTED", "(UTC)", "SEEN", "L1", "APPLIED",
        ]  # fmt: skip
        assert app.instance_id in table.stdout
        assert "1 live instance\n" in table.stdout
        logged = isr_command("log", "--json", "--limit", "5", **env)
        assert logged.returncode == 0, logged.stderr
        (entry,) = json.loads(logged.stdout)
        assert (entry["scope"], entry["name"], entry["mode"], entry["source"]) == (
            "tag",
            "posts",
            "purge",
            "cli",
        )
        assert entry["instance"] not in {app.instance_id, ""}  # the command's own id
        text = isr_command("log", **env).stdout
        assert "tag posts" in text
        assert "purge" in text
        assert " cli " in text
        assert isr_command("log", "--limit", "0", **env).returncode == 2


# ------------------------------------------------------------------ real processes


class ObservingCDN(RecordingServer):
    """A CDN's purge API that, when a purge arrives, first reads ``path`` from every
    replica, as a CDN refetching at once would, and records what each served."""

    def __init__(self) -> None:
        super().__init__()
        self.site: Site | None = None
        self.path = ""
        self.seen: list[dict[str, int | None]] = []

    def respond(
        self, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if self.site is not None and self.path:
            with httpx.Client(timeout=5, trust_env=False) as client:
                versions = {
                    name: _version(client, f"{base}/{self.path}")
                    for name, base in self.site.replicas.items()
                }
            self.seen.append(versions)
        return super().respond(handler, body)


def _version(client: httpx.Client, url: str) -> int | None:
    """The version a replica serves at ``url`` (None: it did not answer in time)."""
    try:
        version: int = client.get(url).json()["version"]
    except httpx.HTTPError:
        return None
    return version


@pytest.fixture(scope="module")
def cdn() -> Iterator[ObservingCDN]:
    with ObservingCDN() as server:
        yield server


@pytest.fixture(scope="module")
def coherent_site(tmp_path_factory: pytest.TempPathFactory, cdn: ObservingCDN) -> Iterator[Site]:
    with running_site(
        tmp_path_factory.mktemp("coherence"),
        namespace="coherence",
        env={"PURGE_URL": cdn.url, "CONFIRM_TIMEOUT": "1.0"},
    ) as site:
        cdn.site = site
        yield site


@pytest.fixture
def site(coherent_site: Site, cdn: ObservingCDN) -> Site:
    coherent_site.settle()
    cdn.path, cdn.seen, cdn.requests = "", [], []
    return coherent_site


def ids(site: Site) -> dict[str, str]:
    """Each replica's instance id, by name."""
    return {
        name: site.http.get(f"{base}/instances").json()["me"]
        for name, base in site.replicas.items()
    }


def test_three_replicas_register_and_list_each_other(site: Site) -> None:
    mine = ids(site)
    assert len(set(mine.values())) == 3
    for name, base in site.replicas.items():
        found = site.http.get(f"{base}/instances").json()["instances"]
        assert [i["id"] for i in found] == sorted(mine.values()), name
        assert all(i["l1"] and i["applied"] is not None for i in found)
        me = next(i for i in found if i["id"] == mine[name])
        assert me["pid"] == site.processes[name].proc.pid
        assert me["namespace"] == "coherence"
    done = isr_command(
        "instances", "--json", ISR_CACHE_URL=site.redis.url, ISR_NAMESPACE="coherence"
    )
    assert done.returncode == 0, done.stderr
    assert sorted(i["id"] for i in json.loads(done.stdout)) == sorted(mine.values())


def test_a_confirmation_covers_an_invalidation_made_in_another_process(site: Site) -> None:
    """Replica A invalidates and confirms: every replica applied it; what A's confirmation
    says is in the store's log, read by this process (another one), with A as its maker."""
    mine = ids(site)
    _, answer = site.invalidate(PA, tag="slug:confirm", mode="purge")
    assert answer.status_code == 200
    done = site.http.post(f"{site.replicas[PA]}/confirm", params={"timeout": "2"}).json()
    assert (sorted(done["confirmed"]), done["missing"]) == (sorted(mine.values()), [])
    with isr.ISR(site.redis.url, namespace="coherence", heartbeat=None) as reader:
        newest = reader.invalidation_log_sync(limit=1)[0]
    assert (newest.scope, newest.name, newest.mode, newest.source) == (
        "tag",
        "slug:confirm",
        "purge",
        "code",
    )
    assert newest.instance == mine[PA]
    assert newest.epoch is not None
    assert newest.confirmation is not None
    assert sorted(newest.confirmation.confirmed) == sorted(mine.values())


def freeze(site: Site, name: str) -> None:
    site.processes[name].proc.send_signal(signal.SIGSTOP)


def thaw(site: Site, name: str) -> None:
    site.processes[name].proc.send_signal(signal.SIGCONT)


def test_the_webhook_purges_the_cdn_only_after_every_replica_dropped_the_page(
    site: Site, cdn: ObservingCDN
) -> None:
    """The race a site behind a CDN hits: the purge lands, the CDN refetches from a replica
    that has not heard yet, and keeps the old page. Replica C's bus lags 0.5 s behind
    while A takes a Strapi publish (the request a real Strapi 5 sent, replayed): A's
    webhook waits for C's acknowledgement before it purges, so when the purge arrives
    every replica already serves the new version (what the CDN, reading each at that
    moment, records), and the answer says all three confirmed, after C's lag. The log
    records the webhook's source, event, model and entry."""
    (delivery,) = deliveries("entry.publish", secret=site.secret)
    body = delivery.json()
    page = f"classic/{body['entry']['slug']}"
    site.serve_everywhere(page, site.origin.version(body["entry"]["slug"]))
    version = site.origin.bump(body["entry"]["slug"])
    cdn.path = page
    site.http.post(f"{site.replicas[PC]}/slow", params={"delay": "0.5"}).raise_for_status()
    try:
        answer = site.http.post(
            f"{site.replicas[PA]}/webhook",
            content=delivery.body,
            headers=[(k, v) for k, v in delivery.headers if k.lower() not in _HOP],
        )
    finally:
        site.http.post(f"{site.replicas[PC]}/slow", params={"delay": "0"}).raise_for_status()
    result = answer.json()
    assert answer.status_code == 200, result
    assert result["instances"]["confirmed"] == 3
    assert result["instances"]["missing"] == []
    assert result["instances"]["ms"] >= 450  # it did wait for C
    assert [r.method for r in cdn.requests] == ["PURGE"]
    assert cdn.seen == [{PA: version, PB: version, PC: version}]
    with isr.ISR(site.redis.url, namespace="coherence", heartbeat=None) as reader:
        log = reader.invalidation_log_sync(limit=10)
    from_hook = [e for e in log if e.source == "webhook"]
    assert from_hook
    assert all(
        dict(e.detail)
        == {"event": "entry.publish", "model": body["model"], "entry": _entry_id(body)}
        for e in from_hook
    )
    assert all(e.confirmation is not None and e.confirmation.complete for e in from_hook)


_HOP = {"host", "content-length", "connection"}


def _entry_id(body: dict[str, Any]) -> str:
    entry = body["entry"]
    return str(entry.get("documentId") or entry["id"])


def test_a_frozen_replica_is_reported_missing_and_the_purge_still_runs(
    site: Site, cdn: ObservingCDN
) -> None:
    """SIGSTOP: the replica keeps its connections but answers nothing. The webhook waits
    its confirm_timeout (1 s), not forever, answers 200 naming the replica as missing, and
    purges the CDN anyway."""
    mine = ids(site)
    freeze(site, PC)
    try:
        started = time.monotonic()
        _, answer = site.webhook(PA, {"tags": ["slug:frozen"], "mode": "expire"})
        took = time.monotonic() - started
    finally:
        thaw(site, PC)
    result = answer.json()
    assert answer.status_code == 200, result
    assert result["instances"]["confirmed"] == 2
    assert result["instances"]["missing"] == [mine[PC]]
    assert 1.0 <= took < 5.0
    assert [r.method for r in cdn.requests] == ["PURGE"]
    assert _xkey(cdn.requests[0]) == "slug:frozen"


def _xkey(request: Recorded) -> str:
    return request.headers.get("xkey", "")


def test_a_killed_replica_is_missing_then_disappears(tmp_path: Path) -> None:
    """SIGKILL: no goodbye. A confirmation made at once reports the killed replica
    missing; once its heartbeat lapses (three heartbeats of 0.3 s, real time: other
    processes), the others no longer list it, and a confirmation is complete again."""
    with running_site(tmp_path, namespace="killed", env={"HEARTBEAT": "0.3"}) as site:
        mine = ids(site)
        site.processes[PC].proc.kill()
        site.processes[PC].proc.wait()
        _, answer = site.invalidate(PA, key="page:x")
        assert answer.status_code == 200
        done = site.http.post(f"{site.replicas[PA]}/confirm", params={"timeout": "0.3"}).json()
        assert done["missing"] == [mine[PC]]
        assert sorted(done["confirmed"]) == sorted([mine[PA], mine[PB]])
        deadline = time.monotonic() + 15
        while True:
            listed = [
                i["id"] for i in site.http.get(f"{site.replicas[PB]}/instances").json()["instances"]
            ]
            if mine[PC] not in listed:
                break
            assert time.monotonic() < deadline, "the killed replica is still listed"
            time.sleep(0.1)
        assert sorted(listed) == sorted([mine[PA], mine[PB]])
        _, answer = site.invalidate(PA, key="page:y")
        done = site.http.post(f"{site.replicas[PA]}/confirm", params={"timeout": "2"}).json()
        assert (done["missing"], len(done["confirmed"])) == ([], 2)


def test_records_an_attacker_wrote_in_redis_are_dropped(
    redis_server: RedisServer, namespace: str
) -> None:
    """Whoever can write the store can make the registry and the log say nothing useful,
    never run code here or break the listing: malformed records are left out (and the
    registry's are deleted), the others are read."""
    with (
        isr.ISR(redis_server.url, namespace=namespace) as rt,
        Redis.from_url(redis_server.url) as client,
    ):
        assert rt.wait_ready_sync(5)
        rt.invalidate_sync("k")
        client.hset(
            f"{namespace}:n",
            mapping={
                "r:evil": b"\x80\x04cos\nsystem\n(S'touch /tmp/pwned'\ntR.",
                "r:odd": json.dumps({"id": "other", "host": "h"}),
                "a:evil": "not a number",
                "a:orphan": "5",
            },
        )
        client.xadd(f"{namespace}:log", {"r": b"\x80\x04K\x01."})
        client.xadd(f"{namespace}:log", {"x": "no record"})
        client.hset(f"{namespace}:logc", "0-1", "{not json")
        assert [i.id for i in rt.instances_sync()] == [rt.instance_id]
        assert client.hkeys(f"{namespace}:n") == [f"r:{rt.instance_id}".encode()]
        assert [e.name for e in rt.invalidation_log_sync()] == ["k"]
    assert not Path("/tmp/pwned").exists()


def test_an_invalidation_made_while_redis_was_down_is_logged_once_applied(
    namespace: str,
) -> None:
    with RedisServer() as server:
        rt = isr.ISR(f"{server.url}?timeout=0.2&breaker_cooldown=0.2", namespace=namespace)
        try:
            assert rt.wait_ready_sync(5)
            server.stop()
            with invalidation_source("cli"), pytest.raises(isr.StoreUnavailable):
                rt.invalidate_sync("while-down")
            assert rt.stats().outbox == 1
            server.start()
            deadline = time.monotonic() + 10
            while rt.stats().outbox:
                assert time.monotonic() < deadline, "the outbox was not applied"
                time.sleep(0.05)
            (logged,) = rt.invalidation_log_sync()
            assert (logged.name, logged.source) == ("while-down", "cli")
        finally:
            rt.close()


class BrokenLog(DictStore):
    """A third-party store whose log raises (a bug, a full disk)."""

    def log_invalidation(self, entry: LoggedInvalidation, keep: int) -> str | None:
        raise OSError("disk full")


def test_a_log_that_fails_never_fails_the_invalidation(caplog: pytest.LogCaptureFixture) -> None:
    with isr.ISR(BrokenLog()) as rt:
        before = rt.stats().store_errors
        rt.invalidate_sync("a")
        rt.invalidate_sync("b")
        assert rt.stats().invalidations == 2
        assert rt.stats().store_errors == before + 2
        assert rt.invalidation_log_sync() == []
    logged = [r for r in caplog.records if "invalidation log could not be written" in r.message]
    assert len(logged) == 1  # once


@pytest.mark.anyio
async def test_the_webhook_s_confirmation_can_be_turned_off_and_is_checked() -> None:
    body = json.dumps({"tags": ["posts"]}).encode()
    headers = {"authorization": "Bearer s3cret-value", "content-type": "application/json"}
    async with isr.ISR() as rt:
        on = await Webhook(rt, secret="s3cret-value").handle(headers, body)
        assert on.status == 200
        assert on.body["instances"]["confirmed"] == 1
        assert on.body["instances"]["missing"] == []
        off = await Webhook(rt, secret="s3cret-value", confirm_timeout=0).handle(headers, body)
        assert off.status == 200
        assert "instances" not in off.body
        for bad in (-1, float("nan"), 61, True, "1"):
            with pytest.raises(isr.ConfigError, match="confirm_timeout"):
                Webhook(rt, secret="s3cret-value", confirm_timeout=bad)  # type: ignore[arg-type]
        log = await rt.invalidation_log()
        assert [(e.source, e.confirmation is not None) for e in log] == [
            ("webhook", False),
            ("webhook", True),
        ]
