"""The webhook against what a real Strapi 5.54 sent (``tests/fixtures/strapi5``): each
captured request is replayed as it was sent (method, headers in their order, the body's
bytes), to the ASGI app and to the WSGI app alike, and the site behind the real page
middleware shows what the editor's action should have done to it."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

import isr
from isr import Status
from isr.asgi import ISRMiddleware, Rule
from isr.webhook import DEFAULT_MAX_BODY, WebhookApp, WebhookWSGIApp

from ._strapi5 import FIXTURES, Delivery, deliveries, replay_asgi, replay_wsgi

pytestmark = pytest.mark.anyio

SECRET = "strapi5-test-secret"
ALL = sorted(path.stem for path in FIXTURES.glob("*.json"))


@pytest.fixture(params=["asgi", "wsgi"])
def server(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Hook:
    """A webhook (ASGI or WSGI) on ``runtime``, and ``send`` to replay a delivery into it."""

    runtime: isr.ISR
    kind: str
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        options = {"runtime": self.runtime, "secret": SECRET, **self.options}
        self.asgi = WebhookApp(**options)
        self.wsgi = WebhookWSGIApp(**options)

    async def send(self, delivery: Delivery) -> tuple[int, dict[str, Any]]:
        if self.kind == "asgi":
            return await replay_asgi(self.asgi, delivery)
        return replay_wsgi(self.wsgi, delivery)

    async def replay(self, name: str) -> list[dict[str, Any]]:
        """Every delivery of a fixture, in order; each must be answered 200."""
        answers = []
        for delivery in deliveries(name, secret=SECRET):
            status, answer = await self.send(delivery)
            assert status == 200, answer
            answers.append(answer)
        return answers

    def close(self) -> None:
        self.wsgi.close()


@pytest.fixture
def hooks(server: str) -> Iterator[Callable[..., Hook]]:
    made: list[Hook] = []

    def make(runtime: isr.ISR, **options: Any) -> Hook:
        made.append(Hook(runtime, server, options))
        return made[-1]

    yield make
    for hook in made:
        hook.close()


# ------------------------------------------------------------------ the site


class CMS:
    """The origin: published entries by (model, locale, slug); ``down`` makes it fail."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str, str], str] = {}
        self.down = False
        self.renders = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        self.renders += 1
        match = re.fullmatch(r"/(\w+)s/(?:(\w\w)/)?([\w-]*)", scope["path"])
        assert match is not None, scope["path"]
        model, locale, slug = match[1], match[2] or "-", match[3]
        if self.down:
            status, text = 502, "the CMS is down"
        elif not slug:  # the list of the model's entries
            items = sorted(body for (m, _, _), body in self.entries.items() if m == model)
            status, text = 200, " | ".join(items)
        elif (model, locale, slug) in self.entries:
            status, text = 200, self.entries[model, locale, slug]
        else:
            status, text = 404, "not found"
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": text.encode()})


RULES = [
    Rule("/articles/", ttl=600, swr=None, tags=["article"]),
    Rule("/articles/{slug}", ttl=600, swr=None, tags=["article", "article:{slug}"]),
    Rule("/pages/{locale}/{slug}", ttl=600, swr=None, tags=["page", "page:{slug}"]),
]


@dataclass
class Site:
    cms: CMS
    runtime: isr.ISR
    reader: httpx.AsyncClient

    async def read(self, path: str) -> tuple[int, str, str]:
        response = await self.reader.get(path)
        return response.status_code, response.headers.get("x-cache", ""), response.text


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    cms = CMS()
    cms.entries = {
        ("article", "-", "first-post"): "First Post",
        ("article", "-", "second-post"): "Second Post",
        ("page", "en", "about"): "About us (en)",
        ("page", "fr", "a-propos"): "A propos (fr)",
    }
    async with isr.ISR("memory://") as rt:
        app = ISRMiddleware(cms, runtime=rt, rules=RULES)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://blog") as reader:
            yield Site(cms, rt, reader)


async def warm(site: Site, *paths: str) -> None:
    for path in paths:
        assert (await site.read(path))[:2] == (200, "MISS"), path
        assert (await site.read(path))[:2] == (200, "HIT"), path


# ------------------------------------------------------------------ every capture


@pytest.mark.parametrize("name", ALL)
async def test_every_captured_delivery_is_answered_200(
    name: str, hooks: Callable[..., Hook]
) -> None:
    """Method, headers and body exactly as Strapi sent them, the large body included."""
    async with isr.ISR() as rt:
        answers = await hooks(rt).replay(name)
    for answer, delivery in zip(answers, deliveries(name, secret=SECRET), strict=True):
        assert answer["ok"] is True
        assert answer["event"] == delivery.event
        if delivery.event in ("trigger-test", "entry.draft-discard"):
            assert answer["ignored"] == "not an invalidating event"
        else:
            assert answer["tags"]


async def test_the_large_body_fits_the_default_limit_with_room_to_spare(
    hooks: Callable[..., Hook],
) -> None:
    """A 70 KB article made a 70,337-byte delivery; 64 KiB (the former default) lost it."""
    (delivery,) = deliveries("entry.publish.large_body", secret=SECRET)
    assert len(delivery.body) == 70_337
    assert 10 * len(delivery.body) <= DEFAULT_MAX_BODY
    async with isr.ISR() as rt:
        assert (await hooks(rt).send(delivery))[0] == 200
        status, answer = await hooks(rt, max_body=64 * 1024).send(delivery)
    assert (status, answer["error"]) == (413, "body larger than 65536 bytes")


# ------------------------------------------------------------------ unpublish and delete


async def test_an_unpublish_purges_its_page_and_every_other_article_keeps_its_fallback(
    site: Site, hooks: Callable[..., Hook]
) -> None:
    """The article tag is on every article page and on the list: one unpublish must not
    take their stale-if-error fallback away. With the CMS down afterwards, the other
    article and the list are served STALE-IF-ERROR, never a 5xx; the unpublished page is
    never served again."""
    await warm(site, "/articles/first-post", "/articles/second-post", "/articles/")
    del site.cms.entries["article", "-", "first-post"]  # the editor unpublishes it
    (answer,) = await hooks(site.runtime).replay("entry.unpublish")
    assert answer["mode"] == "purge"
    assert answer["modes"] == {
        "article": "expire",
        "article:first-post": "purge",
        "article:x4m1o86wd67fakx053pumr4h": "purge",
    }
    site.cms.down = True
    assert await site.read("/articles/second-post") == (200, "STALE-IF-ERROR", "Second Post")
    assert await site.read("/articles/") == (200, "STALE-IF-ERROR", "First Post | Second Post")
    status, cache, text = await site.read("/articles/first-post")
    assert (status, cache) == (502, "MISS")
    assert "First Post" not in text
    site.cms.down = False
    assert await site.read("/articles/first-post") == (404, "MISS", "not found")


async def test_a_deleted_published_document_sends_two_deletes_both_answered(
    site: Site, hooks: Callable[..., Hook]
) -> None:
    await warm(site, "/articles/second-post", "/articles/first-post")
    del site.cms.entries["article", "-", "second-post"]
    draft, published = await hooks(site.runtime).replay("entry.delete")
    assert draft["tags"]["article:second-post"] == 1  # the first one purges the page
    assert published["tags"]["article:second-post"] == 0  # the second finds it gone
    assert draft["modes"] == published["modes"]
    assert (await site.read("/articles/second-post"))[:2] == (404, "MISS")
    site.cms.down = True
    assert (await site.read("/articles/first-post"))[:2] == (200, "STALE-IF-ERROR")


# ------------------------------------------------------------------ publish


@pytest.mark.parametrize("order", ["as received", "reversed"])
@pytest.mark.parametrize("read_between", [False, True])
async def test_update_and_publish_in_either_order_end_on_the_published_page(
    site: Site, hooks: Callable[..., Hook], order: str, read_between: bool
) -> None:
    """A publish with changes sends ``entry.update`` (the draft row) then ``entry.publish``
    (the new published row), in either order on arrival; a reader may come in between."""
    await warm(site, "/articles/first-post")
    site.cms.entries["article", "-", "first-post"] = "First Post, third version"
    pair = deliveries("entry.publish.with_preceding_update", secret=SECRET)
    assert [d.event for d in pair] == ["entry.update", "entry.publish"]
    hook = hooks(site.runtime)
    for delivery in pair if order == "as received" else pair[::-1]:
        status, _ = await hook.send(delivery)
        assert status == 200
        if read_between:
            assert (await site.read("/articles/first-post"))[1] == "MISS"
    assert await site.read("/articles/first-post") == (
        200,
        "HIT" if read_between else "MISS",
        "First Post, third version",
    )
    assert (await site.read("/articles/first-post"))[:2] == (200, "HIT")


async def test_publish_and_update_reach_a_loader_tagged_by_document_id(
    hooks: Callable[..., Hook],
) -> None:
    """``entry.publish`` carries the new published row's ``id`` (6), ``entry.update`` the
    draft's (3): only ``documentId`` names the document in both."""
    update, publish = deliveries("entry.publish.with_preceding_update", secret=SECRET)
    assert (update.json()["entry"]["id"], publish.json()["entry"]["id"]) == (3, 6)
    async with isr.ISR() as rt:
        calls: list[str] = []

        @rt.with_revalidate("doc:{doc}", ttl=600, tags=["article:{doc}"])
        async def article(doc: str) -> str:
            calls.append(doc)
            return doc

        hook = hooks(rt)
        for delivery in (update, publish):
            await article("x4m1o86wd67fakx053pumr4h")
            assert (await article.lookup("x4m1o86wd67fakx053pumr4h")).status == Status.HIT
            status, answer = await hook.send(delivery)
            assert (status, answer["tags"]["article:x4m1o86wd67fakx053pumr4h"]) == (200, 1)
            assert (await article.lookup("x4m1o86wd67fakx053pumr4h")).status == Status.MISS
    assert len(calls) == 3  # the first read, and one after each delivery


async def test_fields_are_taken_as_strapi_sends_them(hooks: Callable[..., Hook]) -> None:
    """No ``locale`` on a type without i18n (a template naming it is skipped, not "None");
    ``publishedAt`` set on unpublish and null on create does not choose the mode: the event
    does."""
    async with isr.ISR() as rt:
        hook = hooks(rt, tag_map={"article": ["{model}", "{model}:{locale}:{slug}"]})
        (create,) = await hook.replay("entry.create")
        (unpublish,) = await hook.replay("entry.unpublish")
    assert "locale" not in deliveries("entry.create", secret=SECRET)[0].json()["entry"]
    assert create["modes"] == unpublish["modes"] == {"article": "expire"}
    assert (create["mode"], unpublish["mode"]) == ("expire", "purge")


async def test_media_events(hooks: Callable[..., Hook]) -> None:
    async with isr.ISR() as rt:
        hook = hooks(rt)
        (update,) = await hook.replay("media.update")
        (delete,) = await hook.replay("media.delete")
    assert update["modes"] == {"media": "expire", "media:1": "expire"}
    assert delete["modes"] == {"media": "expire", "media:1": "purge"}


# ------------------------------------------------------------------ localized types


async def test_a_localized_unpublish_purges_that_locale_and_expires_the_others(
    site: Site, hooks: Callable[..., Hook]
) -> None:
    """Unpublishing the French page sends the document's other rows as ``localizations``:
    the English page (still published; it may link to the French one) is re-rendered, but
    keeps its fallback; the ``documentId`` tag, shared by both locales, is not purged."""
    await warm(site, "/pages/en/about", "/pages/fr/a-propos")
    del site.cms.entries["page", "fr", "a-propos"]
    (answer,) = await hooks(site.runtime).replay("entry.unpublish.i18n")
    assert answer["modes"] == {
        "page": "expire",
        "page:a-propos": "purge",
        "page:c4s2r5dpbztki51ojp9fvrxq": "expire",  # the English page carries it too
        "page:about": "expire",
    }
    site.cms.down = True
    assert await site.read("/pages/en/about") == (200, "STALE-IF-ERROR", "About us (en)")
    assert (await site.read("/pages/fr/a-propos"))[:2] == (502, "MISS")


async def test_a_localization_is_a_list_of_objects(hooks: Callable[..., Hook]) -> None:
    (delivery,) = deliveries("entry.unpublish.i18n", secret=SECRET)
    payload = delivery.json()
    payload["entry"]["localizations"] = [1, 2]
    async with isr.ISR() as rt:
        status, answer = await hooks(rt).send(delivery.with_body(json.dumps(payload).encode()))
        assert rt.stats().invalidations == 0
    assert (status, answer["field"]) == (400, "entry.localizations[0]")


# ------------------------------------------------------------------ X-Strapi-Event


def with_header(delivery: Delivery, name: str, value: str) -> Delivery:
    headers = tuple((k, value if k.lower() == name else v) for k, v in delivery.headers)
    return Delivery(delivery.name, delivery.method, delivery.path, headers, delivery.body)


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("entry.unpublish", "entry.publish"),  # a purge disguised as an expire, or back
        ("entry.publish", "entry.unpublish"),
        ("trigger-test", "entry.delete"),
    ],
)
async def test_an_event_header_that_disagrees_with_the_body_is_refused(
    site: Site, hooks: Callable[..., Hook], name: str, header: str
) -> None:
    await warm(site, "/articles/first-post")
    (delivery,) = deliveries(name, secret=SECRET)
    before = site.runtime.stats().invalidations
    status, answer = await hooks(site.runtime).send(with_header(delivery, "x-strapi-event", header))
    assert status == 400
    assert answer["field"] == "event"
    assert "X-Strapi-Event header says" in answer["error"]
    assert site.runtime.stats().invalidations == before
    assert (await site.read("/articles/first-post"))[:2] == (200, "HIT")


async def test_an_event_header_on_a_generic_body_is_refused(hooks: Callable[..., Hook]) -> None:
    (delivery,) = deliveries("entry.publish", secret=SECRET)
    generic = delivery.with_body(b'{"tags": ["article"], "mode": "purge"}')
    async with isr.ISR() as rt:
        status, answer = await hooks(rt).send(generic)
        assert rt.stats().invalidations == 0
    assert (status, answer["field"]) == (400, "event")
