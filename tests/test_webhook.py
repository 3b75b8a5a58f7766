"""The CMS webhook, through httpx.ASGITransport on a memory runtime: Strapi v4/v5 events and
the generic body become the right invalidations; authentication, signatures and bad input
are refused with a clear JSON error and change nothing; CDN purges follow, and their
failures show in the answer. A hypothesis fuzz holds the last two promises on random input."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import isr
from isr import Status
from isr.cdn import PurgeResult
from isr.webhook import StrapiEvent, Webhook, WebhookApp, WebhookResponse, sign

from ._strapi5 import entry as captured
from .conftest import FakeClock

pytestmark = pytest.mark.anyio

SECRET = "s3cret-token"
HKEY = "hmac-key"
NOW = 1_700_000_000
AUTH = {"authorization": f"Bearer {SECRET}"}


class Site:
    """Articles and pages cached through the runtime; the origin can be updated or taken down."""

    def __init__(self, rt: isr.ISR) -> None:
        self.rt = rt
        self.version = 1
        self.down = False

        @rt.with_revalidate("article:{slug}", ttl=600, tags=["article", "article:{slug}"])
        async def article(slug: str) -> str:
            return self._origin(f"article {slug}")

        @rt.with_revalidate("page:{slug}", ttl=600, tags=["page", "page:{slug}"])
        async def page(slug: str) -> str:
            return self._origin(f"page {slug}")

        self.article = article
        self.page = page

    def _origin(self, what: str) -> str:
        if self.down:
            raise OSError("origin down")
        return f"{what} v{self.version}"

    async def warm(self) -> None:
        for slug in ("hello", "other"):
            await self.article(slug)
        await self.page("about")

    async def statuses(self) -> dict[str, Status]:
        """Each entry's status on its next read (the read refills what it misses)."""
        return {
            "article:hello": (await self.article.lookup("hello")).status,
            "article:other": (await self.article.lookup("other")).status,
            "page:about": (await self.page.lookup("about")).status,
        }

    @property
    def invalidations(self) -> int:
        return self.rt.stats().invalidations


ALL_HIT = {"article:hello": Status.HIT, "article:other": Status.HIT, "page:about": Status.HIT}


class FakePurger:
    """A Purger that records its calls (and what the runtime had done by then)."""

    def __init__(self, rt: isr.ISR, name: str = "fake", *, fail: bool = False) -> None:
        self.rt = rt
        self.name = name
        self.fail = fail
        self.calls: list[tuple[list[str], bool, int]] = []
        self.closed = False

    async def purge(self, tags: Sequence[str], *, soft: bool = False) -> PurgeResult:
        self.calls.append((list(tags), soft, self.rt.stats().invalidations))
        if self.fail:
            return PurgeResult(self.name, soft, failed=tuple(tags), error="HTTP 503")
        return PurgeResult(self.name, soft, tuple(tags))

    def stats(self) -> dict[str, int]:
        return {"purged": len(self.calls), "failed": 0}

    async def aclose(self) -> None:
        self.closed = True


class RaisingPurger(FakePurger):
    async def purge(self, tags: Sequence[str], *, soft: bool = False) -> PurgeResult:
        raise RuntimeError("purger bug")


@pytest.fixture
async def runtime() -> AsyncIterator[isr.ISR]:
    async with isr.ISR() as rt:
        yield rt


@pytest.fixture
async def site(runtime: isr.ISR) -> Site:
    site = Site(runtime)
    await site.warm()
    return site


Post = Callable[..., Awaitable[httpx.Response]]


def poster(app: WebhookApp) -> Post:
    async def post(
        payload: object = None,
        *,
        headers: dict[str, Any] | None = None,
        content: bytes | None = None,
        method: str = "POST",
    ) -> httpx.Response:
        if content is None:
            content = json.dumps(payload).encode()
        sent = {"content-type": "application/json", **AUTH, **(headers or {})}
        sent = {k: v for k, v in sent.items() if v is not None}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://isr.test") as client:
            return await client.request(method, "/hooks/cms", content=content, headers=sent)

    return post


@pytest.fixture
def app(runtime: isr.ISR) -> WebhookApp:
    return WebhookApp(runtime=runtime, secret=SECRET)


@pytest.fixture
def post(app: WebhookApp) -> Post:
    return poster(app)


def strapi_v4(event: str, model: str = "article", **entry: Any) -> dict[str, Any]:
    """A Strapi v4 webhook as it is sent (the whole entry, ``model`` without ``uid``)."""
    return {
        "event": event,
        "createdAt": "2024-05-02T10:00:00.000Z",
        "model": model,
        "entry": {
            "id": 7,
            "title": "Hello",
            "slug": "hello",
            "body": "Lorem ipsum",
            "createdAt": "2024-05-01T09:00:00.000Z",
            "updatedAt": "2024-05-02T10:00:00.000Z",
            "publishedAt": "2024-05-02T10:00:00.000Z",
            **entry,
        },
    }


DOCUMENT = "x4m1o86wd67fakx053pumr4h"  # the captured article's documentId


def strapi_v5(event: str, model: str = "article", **entry: Any) -> dict[str, Any]:
    """A Strapi 5 webhook as a real Strapi 5.54 sent it (``tests/fixtures/strapi5``: ``uid``,
    a ``documentId``, no ``locale`` on a type without i18n, ``publishedAt`` as the event
    leaves it), for ``model``, with the entry's ``slug`` "hello" unless ``entry`` says."""
    payload = captured(event)
    payload["model"], payload["uid"] = model, f"api::{model}.{model}"
    payload["entry"].update({"slug": "hello", "documentId": DOCUMENT, **entry})
    return payload


# ------------------------------------------------------------------ Strapi events

EVENTS = [
    ("entry.create", "expire"),
    ("entry.update", "expire"),
    ("entry.publish", "expire"),
    ("entry.unpublish", "purge"),
    ("entry.delete", "purge"),
]


@pytest.mark.parametrize("sample", [strapi_v4, strapi_v5], ids=["v4", "v5"])
@pytest.mark.parametrize(("strapi_event", "mode"), EVENTS)
async def test_strapi_events_invalidate_the_entry_and_expire_the_collection(
    site: Site, post: Post, sample: Callable[..., dict[str, Any]], strapi_event: str, mode: str
) -> None:
    response = await post(sample(strapi_event))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["ok"] is True
    assert answer["event"] == strapi_event
    assert answer["model"] == "article"
    assert answer["mode"] == mode
    tags = {"article": 2, "article:hello": 1}
    if sample is strapi_v5:
        tags[f"article:{DOCUMENT}"] = 0  # no loader tags by it here
    assert answer["tags"] == tags
    # The entry's own tags get the event's mode; the model tag, on every article, is only
    # expired, whatever the event.
    assert answer["modes"] == {tag: "expire" if tag == "article" else mode for tag in tags}
    assert answer["cdn"] == []

    site.down = True  # what is left of the old values shows the modes
    assert (await site.page.lookup("about")).status == Status.HIT
    other = await site.article.lookup("other")
    assert (other.status, other.value) == (Status.STALE_IF_ERROR, "article other v1")
    hello = site.article.lookup("hello")
    if mode == "expire":
        assert (await hello).status == Status.STALE_IF_ERROR  # old copy kept as a fallback
    else:
        with pytest.raises(OSError, match="origin down"):
            await hello  # purged: never served again


async def test_strapi_v5_with_uid_only(site: Site, post: Post) -> None:
    payload = strapi_v5("entry.publish")
    del payload["model"]
    response = await post(payload)
    assert response.json()["model"] == "article"
    assert response.json()["tags"] == {"article": 2, "article:hello": 1, f"article:{DOCUMENT}": 0}


async def test_previous_slug_is_invalidated_too(site: Site, post: Post) -> None:
    payload = strapi_v5("entry.update", slug="hello-world")
    payload["previous"] = {"slug": "hello"}
    response = await post(payload)
    assert list(response.json()["tags"]) == [
        "article",
        "article:hello-world",
        f"article:{DOCUMENT}",
        "article:hello",
    ]
    assert (await site.article.lookup("hello")).status == Status.MISS


async def test_entry_without_slug_invalidates_the_model(site: Site, post: Post) -> None:
    response = await post(strapi_v4("entry.update", slug=None))
    assert response.json()["tags"] == {"article": 2}


async def test_media_events(site: Site, post: Post) -> None:
    payload = {"event": "media.delete", "media": {"id": 3, "name": "a.png", "hash": "a_1"}}
    response = await post(payload)
    assert response.status_code == 200
    assert response.json()["tags"] == {"media": 0, "media:3": 0}
    assert response.json()["modes"] == {"media": "expire", "media:3": "purge"}
    assert response.json()["mode"] == "purge"


@pytest.mark.parametrize(
    "payload",
    [
        {"event": "trigger-test", "createdAt": "2024-05-02T10:00:00.000Z"},
        {"event": "entry.draft-discard", "model": "article", "entry": {"id": 1}},
        {"event": "review-workflows.updateEntryStage", "model": "article"},
    ],
)
async def test_other_events_are_acknowledged_and_ignored(
    site: Site, post: Post, payload: dict[str, Any]
) -> None:
    before = site.invalidations
    response = await post(payload)
    assert response.status_code == 200
    assert response.json()["ignored"]
    assert site.invalidations == before
    assert await site.statuses() == ALL_HIT


async def test_tag_map_templates_callables_and_none(runtime: isr.ISR, site: Site) -> None:
    def page_tags(e: StrapiEvent) -> Iterable[str]:
        return ["page", f"page:{e.entry['slug']}", f"{e.event}"]

    app = WebhookApp(
        runtime=runtime,
        secret=SECRET,
        tag_map={
            "api::article.article": ["article:{locale}:{slug}", "doc:{documentId}"],
            "page": page_tags,
            "author": None,
        },
    )
    post = poster(app)
    # No i18n on the captured article: Strapi sends no "locale", so that template is skipped.
    article = (await post(strapi_v5("entry.publish"))).json()
    assert list(article["tags"]) == [f"doc:{DOCUMENT}"]
    localized = captured("entry.publish.i18n")
    localized["model"], localized["uid"] = "article", "api::article.article"
    assert list((await post(localized)).json()["tags"]) == [
        "article:fr:a-propos",
        "doc:c4s2r5dpbztki51ojp9fvrxq",
    ]
    page = (await post(strapi_v4("entry.update", model="page", slug="about"))).json()
    assert list(page["tags"]) == ["page", "page:about", "entry.update"]
    author = await post(strapi_v4("entry.update", model="author"))
    assert author.status_code == 200
    assert author.json()["ignored"]
    assert await site.statuses() == {
        "article:hello": Status.HIT,  # its tags here are not the loader's tags
        "article:other": Status.HIT,
        "page:about": Status.MISS,
    }


async def test_a_rule_callable_may_return_one_tag_as_a_string(runtime: isr.ISR, site: Site) -> None:
    """A string is one tag, as a string template is: never its characters one by one."""
    app = WebhookApp(
        runtime=runtime, secret=SECRET, tag_map={"page": lambda e: f"page:{e.entry['slug']}"}
    )
    response = await poster(app)(strapi_v4("entry.update", model="page", slug="about"))
    assert response.status_code == 200
    assert list(response.json()["tags"]) == ["page:about"]
    assert await site.statuses() == {
        "article:hello": Status.HIT,
        "article:other": Status.HIT,
        "page:about": Status.MISS,
    }


@pytest.mark.parametrize("rule", ["template", "callable"])
async def test_a_tag_that_is_not_text_is_dropped(runtime: isr.ISR, site: Site, rule: str) -> None:
    """JSON may carry a lone surrogate in a slug: no page has such a tag, and neither a store
    nor a CDN header could take it; the rule's other tags are invalidated all the same."""

    def page_tags(e: StrapiEvent) -> list[str]:
        return ["page", f"page:{e.entry['slug']}"]

    tag_map: dict[str, Any] = {"page": ["page", "page:{slug}"] if rule == "template" else page_tags}
    purger = FakePurger(runtime)
    app = WebhookApp(runtime=runtime, secret=SECRET, tag_map=tag_map, purgers=[purger])
    response = await poster(app)(strapi_v4("entry.update", model="page", slug="\ud800x"))
    assert response.status_code == 200
    assert list(response.json()["tags"]) == ["page"]
    assert [call[0] for call in purger.calls] == [["page"]]
    assert (await site.page.lookup("about")).status == Status.MISS  # tagged "page"


async def test_modes_are_configurable(runtime: isr.ISR, site: Site) -> None:
    app = WebhookApp(runtime=runtime, secret=SECRET, modes={"entry.publish": "revalidate"})
    response = await poster(app)(strapi_v4("entry.publish"))
    assert response.json()["mode"] == "revalidate"
    assert response.json()["modes"] == {"article": "revalidate", "article:hello": "revalidate"}
    assert (await site.article.lookup("hello")).status == Status.STALE


async def test_each_part_of_an_events_modes_is_configurable(runtime: isr.ISR, site: Site) -> None:
    """A single mode never purges the collection; the mapping form can say anything."""
    app = WebhookApp(
        runtime=runtime,
        secret=SECRET,
        modes={
            "entry.update": "purge",
            "entry.delete": {"collection": "revalidate"},
            "entry.unpublish": {"own": "expire", "collection": "purge"},
        },
    )
    post = poster(app)
    update = (await post(strapi_v4("entry.update"))).json()
    assert update["modes"] == {"article": "expire", "article:hello": "purge"}
    delete = (await post(strapi_v4("entry.delete"))).json()
    assert delete["modes"] == {"article": "revalidate", "article:hello": "purge"}
    await site.warm()
    unpublish = (await post(strapi_v4("entry.unpublish"))).json()
    assert unpublish["modes"] == {"article": "purge", "article:hello": "expire"}
    site.down = True
    with pytest.raises(OSError, match="origin down"):
        await site.article.lookup("other")  # the collection purged, as asked


async def test_the_tag_table_says_which_tags_are_the_entrys_own(
    runtime: isr.ISR, site: Site
) -> None:
    """Templates naming an entry field are its own, others the collection's; the mapping
    form and a callable's mapping say it outright."""

    def page_tags(e: StrapiEvent) -> dict[str, list[str]]:
        return {"own": [f"page:{e.entry['slug']}"], "collection": ["page", "sitemap"]}

    purger = FakePurger(runtime)
    app = WebhookApp(
        runtime=runtime,
        secret=SECRET,
        tag_map={
            "article": ["home", "{model}", "{model}:{slug}", "by-id:{id}"],
            "author": {"own": ["author:{slug}", "bio"], "collection": "authors"},
            "page": page_tags,
        },
        purgers=[purger],
    )
    post = poster(app)
    article = (await post(strapi_v4("entry.unpublish"))).json()
    assert article["modes"] == {
        "home": "expire",
        "article": "expire",
        "article:hello": "purge",
        "by-id:7": "purge",
    }
    author = (await post(strapi_v4("entry.delete", model="author"))).json()
    assert author["modes"] == {"author:hello": "purge", "bio": "purge", "authors": "expire"}
    page = (await post(strapi_v4("entry.delete", model="page", slug="about"))).json()
    assert page["modes"] == {"page:about": "purge", "page": "expire", "sitemap": "expire"}
    # Expired and purged tags alike are purged hard from the CDN: in one request.
    assert purger.calls[0][:2] == (list(article["modes"]), False)


async def test_revalidated_and_purged_tags_go_to_the_cdn_soft_and_hard(
    runtime: isr.ISR, site: Site
) -> None:
    purger = FakePurger(runtime)
    app = WebhookApp(
        runtime=runtime,
        secret=SECRET,
        purgers=[purger],
        modes={"entry.delete": {"own": "purge", "collection": "revalidate"}},
    )
    response = await poster(app)(strapi_v4("entry.delete"))
    assert sorted((tags, soft) for tags, soft, _ in purger.calls) == [
        (["article"], True),
        (["article:hello"], False),
    ]
    assert [(c["purged"], c["soft"]) for c in response.json()["cdn"]] == [
        (["article:hello"], False),
        (["article"], True),
    ]


# ------------------------------------------------------------------ the generic body


async def test_generic_tags_with_revalidate(site: Site, post: Post) -> None:
    response = await post({"tags": ["article:hello"], "mode": "revalidate"})
    assert response.status_code == 200
    assert response.json()["tags"] == {"article:hello": 1}
    assert await site.statuses() == {
        "article:hello": Status.STALE,  # served at once, one refresh in the background
        "article:other": Status.HIT,
        "page:about": Status.HIT,
    }


async def test_generic_keys_default_to_expire(site: Site, post: Post) -> None:
    response = await post({"keys": ["page:about", "page:nope"]})
    answer = response.json()
    assert answer["mode"] == "expire"
    assert answer["keys"] == {"page:about": True, "page:nope": False}
    assert (await site.statuses())["page:about"] == Status.MISS


async def test_generic_purge(site: Site, post: Post) -> None:
    await post({"tags": ["article"], "keys": ["page:about"], "mode": "purge"})
    site.down = True
    for read in (site.article.lookup("hello"), site.page.lookup("about")):
        with pytest.raises(OSError, match="origin down"):
            await read


# ------------------------------------------------------------------ CDN purges


async def test_cdn_is_purged_after_the_local_invalidation(runtime: isr.ISR, site: Site) -> None:
    first, second = FakePurger(runtime, "one"), FakePurger(runtime, "two")
    app = WebhookApp(runtime=runtime, secret=SECRET, purgers=[first, second])
    before = site.invalidations
    response = await poster(app)(strapi_v5("entry.publish"))
    assert response.status_code == 200
    # Called once each, with the same tags, hard, after the three local invalidations.
    tags = ["article", "article:hello", f"article:{DOCUMENT}"]
    assert first.calls == [(tags, False, before + 3)]
    assert second.calls == first.calls
    assert response.json()["cdn"] == [
        {
            "purger": name,
            "ok": True,
            "soft": False,
            "purged": tags,
            "failed": [],
            "error": None,
        }
        for name in ("one", "two")
    ]


async def test_revalidate_soft_purges(runtime: isr.ISR, site: Site) -> None:
    purger = FakePurger(runtime)
    app = WebhookApp(runtime=runtime, secret=SECRET, purgers=[purger])
    await poster(app)({"tags": ["article:hello"], "mode": "revalidate"})
    assert purger.calls[0][:2] == (["article:hello"], True)


async def test_keys_alone_purge_no_cdn(runtime: isr.ISR, site: Site) -> None:
    purger = FakePurger(runtime)
    app = WebhookApp(runtime=runtime, secret=SECRET, purgers=[purger])
    response = await poster(app)({"keys": ["page:about"]})
    assert response.status_code == 200
    assert response.json()["cdn"] == []
    assert purger.calls == []


@pytest.mark.parametrize("failing", [FakePurger, RaisingPurger])
async def test_a_failed_purge_answers_502_after_the_local_invalidation(
    runtime: isr.ISR, site: Site, failing: type[FakePurger]
) -> None:
    good, bad = FakePurger(runtime, "good"), failing(runtime, "bad", fail=True)
    app = WebhookApp(runtime=runtime, secret=SECRET, purgers=[good, bad])
    response = await poster(app)({"tags": ["article:hello"]})
    assert response.status_code == 502
    answer = response.json()
    assert answer["ok"] is False
    assert "CDN purge failed" in answer["error"]
    assert answer["tags"] == {"article:hello": 1}  # done locally all the same
    assert answer["cdn"][0]["ok"] is True
    assert answer["cdn"][1]["ok"] is False
    assert answer["cdn"][1]["failed"] == ["article:hello"]
    assert answer["cdn"][1]["error"] in ("HTTP 503", "RuntimeError: purger bug")
    assert (await site.article.lookup("hello")).status == Status.MISS


class HangingPurger(FakePurger):
    async def purge(self, tags: Sequence[str], *, soft: bool = False) -> PurgeResult:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


async def test_a_purger_that_hangs_is_given_up(runtime: isr.ISR, site: Site) -> None:
    purgers = [FakePurger(runtime, "quick"), HangingPurger(runtime, "hung")]
    app = WebhookApp(runtime=runtime, secret=SECRET, purgers=purgers, purge_timeout=0.05)
    response = await poster(app)({"tags": ["article:hello"]})
    assert response.status_code == 502
    cdn = response.json()["cdn"]
    assert [(c["purger"], c["ok"]) for c in cdn] == [("quick", True), ("hung", False)]
    assert cdn[1]["error"] == "no answer within purge_timeout=0.05 s"


async def test_lifespan_shutdown_closes_the_purgers(runtime: isr.ISR, site: Site) -> None:
    purger = FakePurger(runtime)
    app = WebhookApp(runtime=runtime, secret=SECRET, purgers=[purger])
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: Any) -> None:
        sent.append(dict(message))

    await app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert purger.closed


# ------------------------------------------------------------------ authentication


@pytest.mark.parametrize(
    ("authorization", "error"),
    [
        (None, "missing authorization header"),
        ("Bearer wrong", "wrong secret"),
        (f"Bearer {SECRET}x", "wrong secret"),
        (f"Basic {SECRET}", "expected Authorization: Bearer <secret>"),
        (SECRET, "expected Authorization: Bearer <secret>"),
        ("Bearer café", "wrong secret"),
    ],
)
async def test_wrong_or_missing_secret_is_401(
    site: Site, post: Post, authorization: str | None, error: str
) -> None:
    before = site.invalidations
    headers: dict[str, Any] = {"authorization": authorization}
    if authorization == "Bearer café":
        headers["authorization"] = authorization.encode()  # httpx sends bytes as they are
    response = await post({"tags": ["article"]}, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"ok": False, "error": error}
    assert response.headers["www-authenticate"] == "Bearer"
    assert site.invalidations == before
    assert await site.statuses() == ALL_HIT


async def test_bearer_scheme_is_case_insensitive(post: Post) -> None:
    response = await post({"tags": ["x"]}, headers={"authorization": f"bearer  {SECRET}"})
    assert response.status_code == 200


async def test_secret_in_a_named_header(runtime: isr.ISR, site: Site) -> None:
    app = WebhookApp(runtime=runtime, secret=SECRET, header="X-Webhook-Secret")
    post = poster(app)
    ok = await post({"tags": ["page"]}, headers={"authorization": None, "x-webhook-secret": SECRET})
    assert ok.status_code == 200
    bearer = await post({"tags": ["page"]})  # Authorization is not the configured header
    assert bearer.status_code == 401
    assert bearer.json()["error"] == "missing x-webhook-secret header"
    assert "www-authenticate" not in bearer.headers


async def test_a_repeated_authorization_header_is_refused(app: WebhookApp, site: Site) -> None:
    status, _, _ = await call(
        app,
        "POST",
        [
            (b"authorization", f"Bearer {SECRET}".encode()),
            (b"authorization", b"Bearer other"),
            (b"content-type", b"application/json"),
        ],
        b'{"tags": ["article"]}',
    )
    assert status == 401
    assert await site.statuses() == ALL_HIT


async def test_refuses_to_start_without_a_secret(runtime: isr.ISR) -> None:
    with pytest.raises(isr.ConfigError, match="insecure=True"):
        WebhookApp(runtime=runtime)
    with pytest.raises(isr.ConfigError, match="secret"):
        WebhookApp(runtime=runtime, secret="")
    with pytest.raises(isr.ConfigError, match="ASCII"):
        WebhookApp(runtime=runtime, secret="clé")
    WebhookApp(runtime=runtime, insecure=True)
    WebhookApp(runtime=runtime, hmac_secret=HKEY)  # a signature is a secret too
    WebhookApp(runtime=runtime, hmac_secret=b"\x00raw key bytes\n")  # bytes are a raw key


@pytest.mark.parametrize(
    "options",
    [
        {"secret": SECRET + "\n"},
        {"secret": SECRET + "\r\n"},
        {"secret": f" {SECRET}"},
        {"secret": f"{SECRET}\x00"},
        {"hmac_secret": SECRET + "\n"},
        {"secret": "ok", "header": f"X-{SECRET}\n"},
    ],
)
async def test_a_secret_read_with_its_newline_is_refused_unseen(
    runtime: isr.ISR, options: dict[str, Any]
) -> None:
    """The CMS sends the secret without the newline a file left on it: every delivery would
    be refused. Refused at start instead, and the message does not show it."""
    with pytest.raises(isr.ConfigError) as refused:
        WebhookApp(runtime=runtime, **options)
    assert SECRET not in str(refused.value)


async def test_no_answer_or_log_line_carries_a_credential(
    runtime: isr.ISR, site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """Error texts from a store, a tag rule and a third-party purger are redacted before
    they reach the answer and the log: here each of them quotes a credential."""

    class Leaky(FakePurger):
        async def purge(self, tags: Sequence[str], *, soft: bool = False) -> PurgeResult:
            raise RuntimeError(f"could not send Fastly-Key: tok-{SECRET}")

    def leaky_rule(e: StrapiEvent) -> list[str]:
        raise ValueError(f"rule saw Authorization: Bearer {SECRET}")

    caplog.set_level(logging.DEBUG)
    app = WebhookApp(
        runtime=runtime, secret=SECRET, purgers=[Leaky(runtime)], tag_map={"page": leaky_rule}
    )
    post = poster(app)
    purge = await post({"tags": ["article:hello"]})
    rule = await post(strapi_v4("entry.update", model="page"))

    async def broken(tag: str, mode: str = "expire") -> int:
        raise ConnectionError(f"redis://:{SECRET}@cache:6379/0 refused the password {SECRET}")

    runtime.invalidate_tag = broken  # type: ignore[method-assign,assignment]
    store = await post({"tags": ["article:hello"]})
    assert [purge.status_code, rule.status_code, store.status_code] == [502, 500, 503]
    assert purge.json()["cdn"][0]["error"] == "RuntimeError: could not send Fastly-Key: [redacted]"
    assert rule.json()["error"] == (
        "a tag rule failed: ValueError: rule saw Authorization: [redacted]"
    )
    assert store.json()["error"] == (
        "local invalidation failed: ConnectionError: redis://:[redacted]@cache:6379/0 "
        "refused the password [redacted]"
    )
    for response in (purge, rule, store):
        assert SECRET not in response.text
    assert "[redacted]" in caplog.text
    assert "in leaky_rule" in caplog.text  # where the rule failed, for its author
    assert SECRET not in caplog.text


async def test_bad_configuration_is_refused(runtime: isr.ISR) -> None:
    with pytest.raises(isr.ConfigError, match="plain fields"):
        WebhookApp(runtime=runtime, secret=SECRET, tag_map={"a": "{entry.slug}"})
    with pytest.raises(isr.ConfigError, match="plain fields"):
        WebhookApp(runtime=runtime, secret=SECRET, tag_map={"a": "{slug:>9}"})
    with pytest.raises(isr.ConfigError, match="tag_map"):
        WebhookApp(runtime=runtime, secret=SECRET, tag_map={"a": 3})  # type: ignore[dict-item]
    with pytest.raises(isr.ConfigError, match="modes"):
        WebhookApp(runtime=runtime, secret=SECRET, modes={"entry.publish": "soft"})  # type: ignore[dict-item]
    with pytest.raises(isr.ConfigError, match="Purger"):
        WebhookApp(runtime=runtime, secret=SECRET, purgers=[object()])  # type: ignore[list-item]


async def test_insecure_accepts_anybody(runtime: isr.ISR, site: Site) -> None:
    app = WebhookApp(runtime=runtime, insecure=True)
    response = await poster(app)({"tags": ["page"]}, headers={"authorization": None})
    assert response.status_code == 200


# ------------------------------------------------------------------ HMAC signatures


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(float(NOW))


@pytest.fixture
def signed_app(runtime: isr.ISR, clock: FakeClock) -> WebhookApp:
    return WebhookApp(runtime=runtime, hmac_secret=HKEY, clock=clock, tolerance=300)


def signed(body: bytes, *, timestamp: int = NOW, key: str = HKEY) -> dict[str, Any]:
    return {"authorization": None, **sign(body, key, timestamp=timestamp)}


async def test_a_signed_body_is_accepted_once(signed_app: WebhookApp, site: Site) -> None:
    post = poster(signed_app)
    body = b'{"tags": ["article:hello"]}'
    first = await post(content=body, headers=signed(body))
    assert first.status_code == 200
    before = site.invalidations
    replay = await post(content=body, headers=signed(body))
    assert replay.status_code == 401
    assert replay.json()["error"] == "signature already used (replay)"
    assert site.invalidations == before
    # The same content signed again (a new timestamp) is a new delivery.
    again = await post(content=body, headers=signed(body, timestamp=NOW + 1))
    assert again.status_code == 200


async def test_a_retry_of_a_failed_delivery_is_not_a_replay(
    runtime: isr.ISR, clock: FakeClock, site: Site
) -> None:
    """A sender retries a 5xx with the very same signed request: it must get through."""
    purger = FakePurger(runtime, "cdn", fail=True)
    app = WebhookApp(runtime=runtime, hmac_secret=HKEY, clock=clock, purgers=[purger])
    post = poster(app)
    body = b'{"tags": ["article:hello"]}'
    headers = signed(body)
    assert (await post(content=body, headers=headers)).status_code == 502
    purger.fail = False  # the CDN is back
    retry = await post(content=body, headers=headers)
    assert retry.status_code == 200
    assert [call[0] for call in purger.calls] == [["article:hello"], ["article:hello"]]
    # Answered, it is spent: the same request again is a replay, and purges nothing.
    replay = await post(content=body, headers=headers)
    assert replay.status_code == 401
    assert replay.json()["error"] == "signature already used (replay)"
    assert len(purger.calls) == 2


async def test_a_copy_sent_while_the_first_runs_is_a_replay(
    runtime: isr.ISR, clock: FakeClock, site: Site
) -> None:
    class Held(FakePurger):
        async def purge(self, tags: Sequence[str], *, soft: bool = False) -> PurgeResult:
            await release.wait()
            return await super().purge(tags, soft=soft)

    release = anyio.Event()
    purger = Held(runtime, "cdn", fail=True)
    app = WebhookApp(runtime=runtime, hmac_secret=HKEY, clock=clock, purgers=[purger])
    body = b'{"tags": ["article:hello"]}'
    headers = {k: v for k, v in signed(body).items() if v is not None}
    headers["content-type"] = "application/json"
    answers: list[WebhookResponse] = []

    async def deliver() -> None:
        answers.append(await app.handle(headers, body))

    async with anyio.create_task_group() as tg:
        tg.start_soon(deliver)
        await anyio.wait_all_tasks_blocked()
        copy = await app.handle(headers, body)  # the first is still purging
        release.set()
    assert (copy.status, copy.body["error"]) == (401, "signature already used (replay)")
    assert [a.status for a in answers] == [502]
    assert len(purger.calls) == 1


async def test_a_refused_body_spends_its_signature(signed_app: WebhookApp, site: Site) -> None:
    """A 400 is final: the same request would be refused again, so it is a replay."""
    post = poster(signed_app)
    body = b'{"tags": []}'
    assert (await post(content=body, headers=signed(body))).status_code == 400
    again = await post(content=body, headers=signed(body))
    assert (again.status_code, again.json()["error"]) == (401, "signature already used (replay)")


@pytest.mark.parametrize(
    ("mangle", "error"),
    [
        (lambda h, b: (h, b + b" "), "bad signature"),
        (lambda h, b: ({**h, "x-isr-signature": "sha256=" + "0" * 64}, b), "bad signature"),
        (lambda h, b: (signed(b, key="other"), b), "bad signature"),
        (lambda h, b: (signed(b, timestamp=NOW - 301), b), "outside the 300 s window"),
        (lambda h, b: (signed(b, timestamp=NOW + 301), b), "outside the 300 s window"),
        (lambda h, b: ({**h, "x-isr-timestamp": None}, b), "malformed x-isr-timestamp"),
        (lambda h, b: ({**h, "x-isr-timestamp": "soon"}, b), "malformed x-isr-timestamp"),
        (lambda h, b: ({**h, "x-isr-signature": None}, b), "missing x-isr-signature"),
    ],
)
async def test_a_bad_signature_is_401(
    signed_app: WebhookApp,
    site: Site,
    mangle: Callable[[dict[str, Any], bytes], tuple[dict[str, Any], bytes]],
    error: str,
) -> None:
    body = b'{"tags": ["article"]}'
    headers, sent = mangle(signed(body), body)
    response = await poster(signed_app)(content=sent, headers=headers)
    assert response.status_code == 401
    assert error in response.json()["error"]
    assert await site.statuses() == ALL_HIT


async def test_signature_without_prefix_and_inside_the_window(
    signed_app: WebhookApp, clock: FakeClock
) -> None:
    body = b'{"tags": ["a"]}'
    headers = signed(body, timestamp=NOW - 200)
    headers["x-isr-signature"] = headers["x-isr-signature"].removeprefix("sha256=").upper()
    assert (await poster(signed_app)(content=body, headers=headers)).status_code == 200


async def test_spent_signatures_are_claimed_in_the_runtimes_store(
    runtime: isr.ISR, clock: FakeClock
) -> None:
    """The replay guard keeps no list of its own: a second webhook on the same runtime
    refuses the copy (on a shared store, every process sharing it does:
    tests/test_security_replay.py)."""
    body = b'{"tags": ["a"]}'
    headers = signed(body)
    first = WebhookApp(runtime=runtime, hmac_secret=HKEY, clock=clock)
    other = WebhookApp(runtime=runtime, hmac_secret=HKEY, clock=clock)
    assert (await poster(first)(content=body, headers=headers)).status_code == 200
    replay = await poster(other)(content=body, headers=headers)
    assert (replay.status_code, replay.json()["error"]) == (401, "signature already used (replay)")
    clock.advance(301)  # outside the window: refused by its timestamp, whatever the store
    late = await poster(other)(content=body, headers=headers)
    assert late.status_code == 401
    assert "outside the 300 s window" in late.json()["error"]


async def test_secret_and_signature_both_required(runtime: isr.ISR, clock: FakeClock) -> None:
    app = WebhookApp(runtime=runtime, secret=SECRET, hmac_secret=HKEY, clock=clock)
    post = poster(app)
    body = b'{"tags": ["a"]}'
    unsigned = await post(content=body)
    assert unsigned.status_code == 401
    no_secret = await post(content=body, headers=signed(body))
    assert no_secret.status_code == 401
    both = await post(content=body, headers={**sign(body, HKEY, timestamp=NOW), **AUTH})
    assert both.status_code == 200


# ------------------------------------------------------------------ bad requests


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "HEAD"])
async def test_only_post(site: Site, post: Post, method: str) -> None:
    response = await post({"tags": ["article"]}, method=method)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    if method != "HEAD":
        assert response.json() == {"ok": False, "error": f"method {method} not allowed: use POST"}
    assert await site.statuses() == ALL_HIT


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"],
)
async def test_wrong_content_type_is_415(site: Site, post: Post, content_type: str | None) -> None:
    response = await post({"tags": ["article"]}, headers={"content-type": content_type})
    assert response.status_code == 415
    assert "application/json" in response.json()["error"] or "UTF-8" in response.json()["error"]
    assert await site.statuses() == ALL_HIT


@pytest.mark.parametrize(
    "content_type",
    ["Application/JSON", "application/json; charset=UTF-8", 'application/json;charset="utf8"'],
)
async def test_json_content_types(post: Post, content_type: str) -> None:
    response = await post({"tags": ["x"]}, headers={"content-type": content_type})
    assert response.status_code == 200


async def test_body_over_the_limit_is_413(runtime: isr.ISR, site: Site) -> None:
    app = WebhookApp(runtime=runtime, secret=SECRET, max_body=1024)
    post = poster(app)
    small = {"tags": ["article"], "keys": ["k" * 900]}
    assert (await post(small)).status_code == 200
    await site.warm()
    big = {"tags": ["article"], "keys": ["k" * 1100]}
    response = await post(big)
    assert response.status_code == 413
    assert response.json() == {"ok": False, "error": "body larger than 1024 bytes"}
    assert await site.statuses() == ALL_HIT


async def test_body_is_read_incrementally_and_not_beyond_the_limit(
    app: WebhookApp, site: Site
) -> None:
    # No Content-Length, an endless body in 16 KiB chunks: answered after the 65th.
    received = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        return {"type": "http.request", "body": b" " * 16384, "more_body": True}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    headers = [
        (b"authorization", f"Bearer {SECRET}".encode()),
        (b"content-type", b"application/json"),
    ]
    await app(scope("POST", headers), receive, send)
    assert sent[0]["status"] == 413
    assert received == 65  # 1 MiB + 1 byte is enough to know
    assert await site.statuses() == ALL_HIT


async def test_a_client_that_hangs_up_gets_nothing_done(app: WebhookApp, site: Site) -> None:
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"tags": ["article"]}', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    headers = [
        (b"authorization", f"Bearer {SECRET}".encode()),
        (b"content-type", b"application/json"),
    ]
    await app(scope("POST", headers), receive, send)
    assert sent == []
    assert await site.statuses() == ALL_HIT


@pytest.mark.parametrize(
    ("content", "field", "error"),
    [
        (b"{not json", None, "not valid UTF-8 JSON"),
        (b"\xff\xfe{}", None, "not valid UTF-8 JSON"),
        (b"[" * 30_000 + b"]" * 30_000, None, "too deeply nested"),
        (b"[]", "body", "expected a JSON object"),
        (b'"tags"', "body", "expected a JSON object"),
        (b"{}", "tags", "nothing to invalidate"),
        (b'{"tags": []}', "tags", "nothing to invalidate"),
        (b'{"tags": "article"}', "tags", "expected a list of strings"),
        (b'{"tags": ["article", 3]}', "tags[1]", "expected a non-empty string"),
        (b'{"tags": [""]}', "tags[0]", "expected a non-empty string"),
        (b'{"tags": ["\\ud800"]}', "tags[0]", "expected a non-empty string"),
        (b'{"keys": {"a": 1}}', "keys", "expected a list of strings"),
        (b'{"tags": ["a"], "mode": "soft"}', "mode", "expected 'expire', 'revalidate'"),
        (b'{"tags": ["a"], "mode": null}', "mode", "expected 'expire', 'revalidate'"),
        (b'{"tag": ["a"]}', "tag", "unknown field"),
        (b'{"event": 3}', "event", "expected a string"),
        (b'{"event": "entry.publish", "entry": {"slug": "a"}}', "model", "expected the model"),
        (b'{"event": "entry.publish", "model": "article"}', "entry", "expected an object"),
        (b'{"event": "entry.publish", "model": "a", "entry": []}', "entry", "expected an object"),
        (b'{"event": "entry.publish", "uid": 5, "entry": {}}', "uid", "non-empty string"),
        (b'{"event": "entry.publish", "model": "", "entry": {}}', "model", "model name"),
        (
            b'{"event": "entry.update", "model": "a", "entry": {}, "previous": "x"}',
            "previous",
            "expected an object",
        ),
        (b'{"event": "media.create"}', "media", "expected an object"),
    ],
)
async def test_malformed_or_misshapen_bodies_are_400(
    site: Site, post: Post, content: bytes, field: str | None, error: str
) -> None:
    before = site.invalidations
    response = await post(content=content)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["ok"] is False
    assert error in answer["error"]
    assert answer.get("field") == field
    assert site.invalidations == before
    assert await site.statuses() == ALL_HIT


async def test_framework_neutral_handle(runtime: isr.ISR, site: Site) -> None:
    webhook = Webhook(runtime, secret=SECRET)
    headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    response = await webhook.handle(headers, b'{"tags": ["page:about"]}')
    assert (response.status, response.body["tags"]) == (200, {"page:about": 1})
    refused = await webhook.handle(headers, b'{"tags": ["page"]}', method="GET")
    assert (refused.status, refused.headers) == (405, {"allow": "POST"})
    too_big = await Webhook(runtime, secret=SECRET, max_body=10).handle(headers, b" " * 11)
    assert too_big.status == 413


# ------------------------------------------------------------------ fuzz


def scope(method: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": "/hooks/cms",
        "raw_path": b"/hooks/cms",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("isr.test", 80),
    }


async def call(
    app: WebhookApp, method: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> tuple[int, dict[str, str], Any]:
    """One request straight into the ASGI app (raw header bytes, any method)."""
    inbox = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0) if inbox else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope(method, headers), receive, send)
    start, *rest = sent
    headers_out = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers_out, json.loads(b"".join(m["body"] for m in rest))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
names = st.sampled_from(["article", "page", "hello", "other", "about", "article:hello"]) | st.text(
    max_size=12
)
strapi_bodies = st.fixed_dictionaries(
    {
        "event": st.sampled_from([*(e for e, _ in EVENTS), "media.update", "trigger-test"])
        | json_values
    },
    optional={
        "model": names | json_values,
        "uid": st.just("api::article.article") | json_values,
        "entry": st.fixed_dictionaries(
            {}, optional={"slug": names | json_values, "id": json_values}
        )
        | json_values,
        "media": st.fixed_dictionaries({"id": json_values}) | json_values,
        "previous": st.fixed_dictionaries({}, optional={"slug": names}) | json_values,
    },
)
generic_bodies = st.fixed_dictionaries(
    {},
    optional={
        "tags": st.lists(names, max_size=4) | json_values,
        "keys": st.lists(st.sampled_from(["article:hello", "page:about"]) | names, max_size=3)
        | json_values,
        "mode": st.sampled_from(["expire", "revalidate", "purge"]) | json_values,
        "extra": json_values,
    },
)
some_names = st.sampled_from(["article", "article:hello", "page:about"]) | st.text(min_size=1)
valid_bodies = st.fixed_dictionaries(
    {"tags": st.lists(some_names, min_size=1, max_size=4)},
    optional={
        "keys": st.lists(some_names, max_size=3),
        "mode": st.sampled_from(["expire", "revalidate", "purge"]),
    },
) | st.builds(
    lambda sample, event, model, slug: sample(event, model, slug=slug),
    st.sampled_from([strapi_v4, strapi_v5]),
    st.sampled_from([e for e, _ in EVENTS]),
    st.sampled_from(["article", "page"]) | st.text(min_size=1, max_size=8),
    names | json_values,
)
payloads = valid_bodies | strapi_bodies | generic_bodies | json_values
bodies = payloads.map(lambda p: json.dumps(p).encode()) | st.binary(max_size=64)
header_text = st.binary(max_size=40)
BREAKABLE = ["method", "authorization", "content-type", "signature", "timestamp", "length"]


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, list[tuple[bytes, bytes]], bytes]:
    """A well-formed envelope (POST, secret, JSON content type, signature) around a random
    body, half the time with one or two parts of the envelope broken, plus random headers."""
    body = draw(bodies)
    broken = draw(st.sets(st.sampled_from(BREAKABLE), max_size=2)) if draw(st.booleans()) else set()
    method = "POST"
    if "method" in broken:
        method = draw(st.sampled_from(["GET", "PUT", "DELETE", "OPTIONS", "post"]))
    fields: dict[bytes, bytes | None] = {
        b"authorization": f"Bearer {SECRET}".encode(),
        b"content-type": draw(
            st.sampled_from(
                [b"application/json", b"application/json; charset=utf-8", b"Application/JSON"]
            )
        ),
        b"content-length": str(len(body)).encode(),
        **{k.encode(): v.encode() for k, v in sign(body, HKEY, timestamp=NOW).items()},
    }
    maybe_none = st.none() | header_text
    if "authorization" in broken:
        fields[b"authorization"] = draw(
            st.sampled_from([b"Bearer nope", SECRET.encode(), b"Basic x"]) | maybe_none
        )
    if "content-type" in broken:
        fields[b"content-type"] = draw(
            st.sampled_from([b"text/plain", b"application/json; charset=latin-1"]) | maybe_none
        )
    if "signature" in broken:
        other = sign(body, "other-key", timestamp=NOW)["x-isr-signature"].encode()
        fields[b"x-isr-signature"] = draw(st.just(other) | maybe_none)
    if "timestamp" in broken:
        stamp = draw(st.integers(0, 2 * NOW).map(lambda n: str(n).encode()) | maybe_none)
        fields[b"x-isr-timestamp"] = stamp
    if "length" in broken:
        fields[b"content-length"] = draw(maybe_none)
    headers = [(name, value) for name, value in fields.items() if value is not None]
    headers += draw(st.lists(st.tuples(header_text.map(bytes.lower), header_text), max_size=2))
    return method, draw(st.permutations(headers)), body


#: How the webhook's fuzz tests run (here and in test_webhook_wsgi.py).
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(request=requests())
async def test_fuzz_never_500_and_never_invalidates_when_refusing(
    runtime: isr.ISR, request: tuple[str, list[tuple[bytes, bytes]], bytes]
) -> None:
    purger = FakePurger(runtime)
    app = WebhookApp(
        runtime=runtime,
        secret=SECRET,
        hmac_secret=HKEY,
        clock=lambda: float(NOW),
        max_body=4096,
        purgers=[purger],
    )
    method, headers, body = request
    before = runtime.stats().invalidations
    status, headers_out, answer = await call(app, method, headers, body)
    event(f"status {status}")
    assert status in (200, 400, 401, 405, 413, 415), answer
    assert headers_out["content-type"] == "application/json"
    assert isinstance(answer, dict)
    assert isinstance(answer["ok"], bool)
    if status != 200:
        assert answer["ok"] is False
        assert answer["error"]
        assert runtime.stats().invalidations == before
        assert purger.calls == []
