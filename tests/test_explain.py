"""`isr.ISR.explain`: every verdict of the next read, with its reason, on an injected clock;
and that explaining changes nothing a read would find."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

import isr
from isr._entry import Mode
from isr.adapters.l1 import L1Adapter
from tests.conftest import FakeClock

pytestmark = pytest.mark.anyio


class Origin(Exception):
    pass


def _loader(rt: isr.ISR, fail: list[bool] | None = None, **options: Any) -> Any:
    windows: dict[str, Any] = {"ttl": 10, "swr": 20, "stale_if_error": 100}
    windows.update(options)

    @rt.with_revalidate("post:{slug}", tags=["posts", "post:{slug}"], **windows)
    async def get_post(slug: str) -> str:
        if fail and fail[0]:
            raise Origin("the CMS is down")
        return f"post {slug}"

    return get_post


async def test_every_verdict_in_turn_on_every_store(rt: isr.ISR, clock: FakeClock) -> None:
    get_post = _loader(rt)
    before = await rt.explain("post:hello")
    assert (before.found, before.next_read, before.verdict) == (False, "MISS", "absent")
    assert before.windows_from == "function"
    assert (before.ttl, before.swr, before.stale_if_error) == (10, 20, 100)
    assert before.loader is not None
    assert before.loader.endswith("get_post")
    assert "no entry" in before.why

    await get_post("hello")
    clock.advance(4)
    hit = await rt.explain("post:hello")
    assert (hit.found, hit.next_read, hit.refresh, hit.phase) == (True, "HIT", False, "fresh")
    assert hit.age == pytest.approx(4)
    assert hit.fresh_left == pytest.approx(6)
    assert set(hit.tags) == {"posts", "post:hello"}
    assert hit.mark is None
    assert hit.windows_from == "entry"
    assert "6.0 s more" in hit.why

    clock.advance(10)  # 14 s: stale
    stale = await rt.explain("post:hello")
    assert (stale.next_read, stale.refresh, stale.phase) == ("STALE", True, "stale")
    assert stale.stale_left == pytest.approx(16)
    assert "one background refresh starts" in stale.why

    clock.advance(20)  # 34 s: past swr, within stale-if-error
    expired = await rt.explain("post:hello")
    assert (expired.next_read, expired.verdict, expired.phase) == (
        "MISS",
        "expired",
        "stale-if-error",
    )
    assert "STALE-IF-ERROR" in expired.why
    assert "96 s more" in expired.why

    clock.advance(100)  # past every window
    gone = await rt.explain("post:hello")
    assert gone.next_read == "MISS"
    assert gone.verdict == "absent"

    # Explaining changed nothing: no refresh ran, nothing was counted as a read.
    stats = rt.stats()
    assert (stats.loader_calls, stats.hits, stats.stale, stats.refreshes) == (1, 0, 0, 0)


@pytest.mark.parametrize(
    ("mode", "next_read", "verdict"),
    [("revalidate", "STALE", "stale"), ("expire", "MISS", "expired"), ("purge", "MISS", "absent")],
)
@pytest.mark.parametrize("scope", ["key", "tag", "all"])
async def test_marks_name_their_strength_and_whether_it_came_through_the_generation(
    clock: FakeClock, mode: str, next_read: str, verdict: str, scope: str
) -> None:
    async with isr.ISR("memory://", clock=clock) as rt:
        get_post = _loader(rt)
        await get_post("hello")
        clock.advance(1)
        if scope == "key":
            await rt.invalidate("post:hello", mode=mode)  # type: ignore[arg-type]
        elif scope == "tag":
            await rt.invalidate_tag("post:hello", mode=mode)  # type: ignore[arg-type]
        else:
            await rt.invalidate_all(mode=mode)  # type: ignore[arg-type]
        e = await rt.explain("post:hello")
        assert (e.next_read, e.verdict) == (next_read, verdict)
        if mode == "purge" and scope != "all":
            assert not e.found
            assert e.mark is None  # the entry is gone
            if scope == "key":  # the log still says what removed it
                assert e.invalidation is not None
                assert e.invalidation["mode"] == "purge"
                assert "last inval." in e.text()
            return
        assert e.mark == mode
        assert e.marked_by == scope  # the log says which: the key, a tag, or all
        assert f"marked {mode} (by {scope})" in e.why
        assert e.invalidation is not None
        assert (e.invalidation["scope"], e.invalidation["mode"]) == (scope, mode)
        assert e.refresh is (mode == "revalidate")
        if scope == "all":
            assert e.generation["entry"] < e.generation[mode]


async def test_backoff_stale_if_error_then_stale_without_refresh(clock: FakeClock) -> None:
    async with isr.ISR("memory://", clock=clock, backoff=5, max_backoff=60) as rt:
        fail = [False]
        get_post = _loader(rt, fail)
        await get_post("hello")
        clock.advance(35)  # past swr: the next read fetches
        fail[0] = True
        assert (await get_post.lookup("hello")).status is isr.Status.STALE_IF_ERROR
        e = await rt.explain("post:hello")
        assert e.next_read == "STALE-IF-ERROR"
        assert e.backoff is not None
        assert e.backoff["failures"] == 1
        assert e.backoff["retry_in"] == pytest.approx(5)
        assert "Origin: the CMS is down" in e.why
        assert "5.0 s" in e.why
        clock.advance(6)  # the backoff has ended: the next read fetches again
        e = await rt.explain("post:hello")
        assert e.next_read == "MISS"
        assert e.backoff is None

    async with isr.ISR("memory://", clock=clock, backoff=5, max_backoff=60) as rt:
        fail = [False]
        get_post = _loader(rt, fail, ttl=10, swr=100)
        await get_post("hello")
        clock.advance(15)
        fail[0] = True
        await get_post("hello")  # STALE: its refresh fails and backs off
        await rt.drain()
        e = await rt.explain("post:hello")
        assert (e.next_read, e.refresh) == ("STALE", False)
        assert "no refresh until the key's backoff ends" in e.why


async def test_a_fetch_in_progress_here_is_what_the_next_read_waits_for(clock: FakeClock) -> None:
    async with isr.ISR("memory://", clock=clock) as rt:
        release = anyio.Event()
        started = anyio.Event()

        @rt.with_revalidate("slow:{n}", ttl=10)
        async def slow(n: int) -> int:
            started.set()
            await release.wait()
            return n

        async with anyio.create_task_group() as tg:
            tg.start_soon(slow, 1)
            await started.wait()
            e = await rt.explain("slow:1")
            assert e.fetching == "this process"
            assert "waits for the fetch already running in this process" in e.why
            release.set()
        assert (await rt.explain("slow:1")).fetching is None


def test_another_process_holding_the_fetch_lock_is_seen(tmp_path: Path, clock: FakeClock) -> None:
    url = f"disk://{tmp_path / 'cache'}"
    with isr.ISR(url, clock=clock) as rt, isr.ISR(url, clock=clock) as other:
        assert other.adapter.acquire("post:hello", "their-token", 30)
        e = rt.explain_sync("post:hello")
        assert e.fetching == "another process"
        assert "another process is running (it holds the fetch lock)" in e.why
        other.adapter.release("post:hello", "their-token")
        assert rt.explain_sync("post:hello").fetching is None


def test_sync_explain_matches_the_most_specific_template(clock: FakeClock) -> None:
    with isr.ISR("memory://", clock=clock) as rt:

        @rt.with_revalidate("{anything}", ttl=1)
        def everything(anything: str) -> str:
            return anything

        @rt.with_revalidate("user:{uid}:profile", ttl=30, swr=None)
        def profile(uid: int) -> str:
            return str(uid)

        @rt.with_revalidate(lambda uid: f"cb:{uid}", ttl=5)
        def by_callable(uid: int) -> str:
            return str(uid)

        e = rt.explain_sync("user:7:profile")
        assert e.template == "user:{uid}:profile"
        assert e.swr is None
        assert "swr unbounded" in e.text()
        assert rt.explain_sync("user:7").template == "{anything}"
        # A key callable has no template: its keys match nothing (the catch-all here).
        assert rt.explain_sync("cb:7").template == "{anything}"
        profile(7)
        assert rt.explain_sync("user:7:profile").next_read == "HIT"


async def test_page_keys_get_their_rules_windows(clock: FakeClock) -> None:
    from isr.asgi import ISRMiddleware, Rule

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not called")

    async with isr.ISR("memory://", clock=clock) as rt:

        @rt.with_revalidate("{x}", ttl=1)
        async def catch_all(x: str) -> str:
            return x

        _keep = ISRMiddleware(
            app,
            rt,
            [Rule("/posts/{slug}", ttl=60, swr=600, stale_if_error=3600)],
            origin="https://example.com",
        )
        e = await rt.explain("page:/posts/hello")
        assert (e.windows_from, e.loader, e.ttl, e.swr) == ("page rule", "/posts/{slug}", 60, 600)
        assert (await rt.explain("page:/other")).template == "{x}"  # no rule: the function
        del _keep


async def test_bad_keys_are_refused_clearly(clock: FakeClock) -> None:
    async with isr.ISR("memory://", clock=clock) as rt:
        for bad in ("", None, 3, "\ud800"):
            with pytest.raises(isr.ConfigError):
                await rt.explain(bad)  # type: ignore[arg-type]


async def test_text_says_everything_in_plain_words(clock: FakeClock) -> None:
    async with isr.ISR("memory://", clock=clock) as rt:
        get_post = _loader(rt)
        await get_post("hello")
        clock.advance(12)
        await rt.invalidate_tag("posts", mode="revalidate")
        e = await rt.explain("post:hello")
        text = str(e)
        assert text == e.text()
        for line in (
            "key         post:hello",
            "tags        posts, post:hello",
            "mark        revalidate (by tag)",
            "set by      revalidate of tag 'posts' at ",
            "stands      stale by time",
            "next read   STALE + background refresh: marked revalidate",
            "backoff     none",
            "fetch       none in progress",
        ):
            assert line in text, line
        data = e.as_json()
        assert data["next_read"] == "STALE"
        assert data["tags"] == ["posts", "post:hello"]
        assert Mode.REVALIDATE.name.lower() == data["mark"]


def test_explain_from_another_thread_while_reads_go_on(clock: FakeClock) -> None:
    with isr.ISR("memory://", clock=clock) as rt:

        @rt.with_revalidate("n:{n}", ttl=10)
        def n(n: int) -> int:
            return n

        errors: list[BaseException] = []

        def explain() -> None:
            try:
                for i in range(200):
                    rt.explain_sync(f"n:{i % 7}")
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        thread = threading.Thread(target=explain)
        thread.start()
        for i in range(200):
            n(i % 7)
        thread.join()
        assert not errors


async def test_l1_copies_are_reported_and_never_made_by_explaining(
    redis_server: Any, namespace: str
) -> None:
    url = f"{redis_server.url}?timeout=5"
    async with (
        isr.ISR(url, namespace=namespace, l1=True) as a,
        isr.ISR(url, namespace=namespace, l1=True) as b,
    ):
        assert await a.wait_ready(10)
        assert await b.wait_ready(10)
        get_a, _ = _loader(a), _loader(b)
        await get_a("hello")
        seen_by_b = await b.explain("post:hello")
        assert seen_by_b.found
        assert seen_by_b.next_read == "HIT"
        assert seen_by_b.l1_here is False
        assert (await b.explain("post:hello")).l1_here is False  # explaining kept none
        assert seen_by_b.l1_holders == {a.instance_id: True}  # asked over the bus
        assert f"held by {a.instance_id}" in seen_by_b.l1_others
        seen_by_a = await a.explain("post:hello")
        assert seen_by_a.l1_here is True
        assert seen_by_a.l1_holders == {b.instance_id: False}
        assert "held by no other instance" in seen_by_a.l1_others
        await a.invalidate("post:hello")
        e = await a.explain("post:hello")
        assert (e.mark, e.next_read, e.l1_here) == ("expire", "MISS", True)


def test_the_instances_whose_l1_holds_a_key_are_asked_and_a_frozen_one_is_named(
    redis_server: Any, namespace: str
) -> None:
    """Three instances, each with its L1: the one explaining learns which of the two
    others hold the key, and names one that does not answer (its bus stopped) in time."""
    url = f"{redis_server.url}?timeout=5"
    with (
        isr.ISR(url, namespace=namespace, l1=True) as a,
        isr.ISR(url, namespace=namespace, l1=True) as b,
        isr.ISR(url, namespace=namespace, l1=True) as c,
    ):
        for rt in (a, b, c):
            assert rt.wait_ready_sync(10)

        @b.with_revalidate("n:{n}", ttl=60)
        def n_b(n: int) -> int:
            return n

        n_b(1)  # b holds n:1; c does not
        e = a.explain_sync("n:1")
        assert e.l1_holders == {b.instance_id: True, c.instance_id: False}
        assert e.l1_others == f"held by {b.instance_id}; not by {c.instance_id}"
        assert isinstance(c.adapter, L1Adapter)
        c.adapter.bus.close()  # c's bus hears nothing more (its heartbeat goes on)
        e = a.explain_sync("n:1")
        assert e.l1_holders == {b.instance_id: True}
        assert e.l1_others.endswith(f"{c.instance_id} did not answer")


async def test_the_mark_is_matched_to_the_invalidation_that_set_it(clock: FakeClock) -> None:
    async with isr.ISR("memory://", clock=clock) as rt:
        get_post = _loader(rt)
        await get_post("hello")
        await rt.invalidate_tag("posts", mode="expire")  # before the value below: not it
        await get_post("hello")  # fetched again, unmarked
        clock.advance(1)
        assert (await rt.explain("post:hello")).invalidation is None
        with isr.invalidation_source("webhook", event="entry.update", model="post", entry="7"):
            await rt.invalidate("post:hello", mode="revalidate")
        await rt.invalidate("post:other", mode="revalidate")  # another key: never it
        await rt.invalidate_tag("pages", mode="revalidate")  # a tag it does not carry
        confirmation = await rt.confirm(timeout=0.5)
        e = await rt.explain("post:hello")
        assert e.marked_by == "key"
        assert e.invalidation is not None
        assert e.invalidation["name"] == "post:hello"
        assert e.invalidation["source"] == "webhook"
        assert e.invalidation["detail"] == {"event": "entry.update", "model": "post", "entry": "7"}
        assert e.invalidation["confirmation"] == confirmation.as_json()
        assert "from webhook (event=entry.update, model=post, entry=7); confirmed by 1" in str(e)
        assert e.instances == (rt.instance_id,)


@pytest.mark.parametrize(
    ("template", "key", "matches"),
    [
        ("post:{slug}", "post:hello", True),
        ("post:{slug}", "post:", True),  # a field may format to ""
        ("post:{slug}", "posts:hello", False),
        ("a.b:{x}", "aXb:1", False),  # the literal is literal, not a pattern
        ("a.b:{x}", "a.b:1", True),
        ("p:{x}:{y:.2f}", "p:1:2.50", True),
        ("p:{x}:{y:.2f}", "p:1", False),
        ("{{literal}}:{x}", "{literal}:7", True),
        ("exact", "exact", True),
        ("exact", "exactly", False),
        ("bad {", "bad {", True),  # not a template str.format accepts: taken literally
    ],
)
def test_template_matching(template: str, key: str, matches: bool) -> None:
    from isr._explain import template_matches

    assert template_matches(template, key) is matches


def test_page_keys_of_urls_as_the_middleware_computes_them() -> None:
    from isr.asgi import ISRMiddleware, Rule

    rt = isr.ISR()
    rules = [Rule("/p/{x}", ttl=1, query=["page"], vary=["accept-language"])]
    keyed = ISRMiddleware(None, rt, rules, hosts=["a.example"])  # type: ignore[arg-type]
    assert keyed.page_key("/p/1") is None  # no host: the site keys it
    assert keyed.page_key("http://b.example/p/1") is None  # a host it may not cache
    plain = keyed.page_key("http://A.example:80/p/1")
    assert plain == "page:http://a.example/p/1"
    german = keyed.page_key("http://a.example/p/1", {"Accept-Language": "de"})
    assert german is not None
    assert german.startswith("page:http://a.example/p/1#")
    assert keyed.page_key("http://a.example/p/1?page=2&x=1") == keyed.page_key(
        "http://a.example/p/1?x=9&page=2"
    )
    assert keyed.page_key("http://a.example/p/1", {"Cookie": "s=1"}) is None
    assert rt.explain_sync(german).loader == "/p/{x}"  # a keyed host's page: its rule
    assert rt.explain_sync("page:/p/1").loader is None  # no origin-keyed site has it


async def test_where_the_cache_is_off_the_next_read_is_a_bypass(clock: FakeClock) -> None:
    async with isr.ISR("memory://", clock=clock) as rt:
        get_post = _loader(rt)
        await get_post("hello")
        assert (await rt.explain("post:hello")).next_read == "HIT"
        with isr.disabled():
            e = await rt.explain("post:hello")
        assert (e.next_read, e.refresh, e.verdict) == ("BYPASS", False, "fresh")
        assert "the cache is off here (isr.disabled)" in e.why
    with isr.ISR("memory://", clock=clock, enabled=False) as off:
        e = off.explain_sync("post:hello")
        assert e.next_read == "BYPASS"
        assert "ISR(enabled=False)" in e.why
