"""A real Varnish (xkey) in front of a tagged origin: a CMS publish reaching the webhook
purges exactly the tagged pages from Varnish, hard or soft."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from urllib.parse import quote, unquote

import anyio
import httpx
import pytest

import isr
from isr._tags import encode_tags
from isr.cdn import VarnishPurger
from isr.webhook import WebhookApp

from ._strapi5 import entry as captured
from .recording_server import LoopbackServer
from .varnish_server import VarnishServer

pytestmark = pytest.mark.anyio

SECRET = "varnish-test-secret"


class Origin(LoopbackServer):
    """The site behind Varnish: ``/articles/<slug>`` tagged by an ``xkey`` header,
    ``/pages/<slug>`` by ``Surrogate-Key``, ``/items/<slug>`` by ``Surrogate-Key:
    item item:<slug, percent-decoded>`` as the page middleware sends it (`encode_tag`);
    each page shows its version."""

    def __init__(self) -> None:
        super().__init__()
        self.versions: Counter[str] = Counter()
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()

    def bump(self, path: str) -> None:
        with self._lock:
            self.versions[path] += 1

    def respond(
        self, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        path = handler.path
        kind, _, slug = path.strip("/").partition("/")
        with self._lock:
            self.hits[path] += 1
            version = self.versions[path] + 1
        headers = {"Content-Type": "text/plain", "Cache-Control": "public, max-age=300"}
        if kind == "articles":
            headers["xkey"] = f"article article:{slug}"
        elif kind == "pages":
            headers["Surrogate-Key"] = f"page page:{slug}"
        elif kind == "items":
            headers["Surrogate-Key"] = " ".join(encode_tags(["item", f"item:{unquote(slug)}"]))
        else:
            return 404, {}, b"not found"
        return 200, headers, f"{path} v{version}".encode()


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    with Origin() as server:
        yield server


@pytest.fixture(scope="module")
def varnish(origin: Origin) -> Iterator[VarnishServer]:
    with VarnishServer(origin.port) as server:
        yield server


async def webhook(varnish: VarnishServer, payload: object) -> httpx.Response:
    """POST ``payload`` to a WebhookApp that purges ``varnish``."""
    async with isr.ISR() as rt, VarnishPurger(varnish.url + "/", retries=0) as purger:
        app = WebhookApp(runtime=rt, secret=SECRET, purgers=[purger])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.post(
                "/hooks/cms", json=payload, headers={"authorization": f"Bearer {SECRET}"}
            )


async def warm(web: httpx.AsyncClient, path: str) -> None:
    first = await web.get(path)
    assert first.headers["x-cache"] == "MISS"
    second = await web.get(path)
    assert second.headers["x-cache"] == "HIT"
    assert len(second.headers["x-varnish"].split()) == 2  # this request's id, the object's
    assert second.text == first.text
    assert "xkey" not in second.headers


async def test_a_publish_purges_the_tagged_pages(
    origin: Origin, varnish: VarnishServer, anyio_backend: str
) -> None:
    article = f"/articles/hello-{anyio_backend}"
    page = f"/pages/about-{anyio_backend}"
    async with httpx.AsyncClient(base_url=varnish.url) as web:
        await warm(web, article)
        await warm(web, page)
        origin.bump(article)
        cached = await web.get(article)
        assert cached.text == f"{article} v1"  # the editor's change is not visible yet

        publish = captured("entry.publish")  # as a real Strapi 5 sent it, for this slug
        publish["entry"]["slug"] = f"hello-{anyio_backend}"
        response = await webhook(varnish, publish)
        assert response.status_code == 200, response.text
        assert response.json()["cdn"] == [
            {
                "purger": "varnish",
                "ok": True,
                "soft": False,
                "purged": [
                    "article",
                    f"article:hello-{anyio_backend}",
                    "article:x4m1o86wd67fakx053pumr4h",
                ],
                "failed": [],
                "error": None,
            }
        ]

        fresh = await web.get(article)
        assert fresh.text == f"{article} v2"
        assert fresh.headers["x-cache"] == "MISS"
        assert origin.hits[article] == 2
        untouched = await web.get(page)  # another model's page stays cached
        assert untouched.headers["x-cache"] == "HIT"
        assert origin.hits[page] == 1


async def test_revalidate_soft_purges(
    origin: Origin, varnish: VarnishServer, anyio_backend: str
) -> None:
    page = f"/pages/soft-{anyio_backend}"
    async with httpx.AsyncClient(base_url=varnish.url) as web:
        await warm(web, page)
        origin.bump(page)
        response = await webhook(
            varnish, {"tags": [f"page:soft-{anyio_backend}"], "mode": "revalidate"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["cdn"][0]["soft"] is True

        # Soft: the old page is served at once (within its grace) while Varnish refetches.
        stale = await web.get(page)
        assert stale.text == f"{page} v1"
        deadline = time.monotonic() + 5
        while (current := await web.get(page)).text != f"{page} v2":
            assert time.monotonic() < deadline, "Varnish never served the new page"
            await anyio.sleep(0.02)
        assert current.headers["x-cache"] == "HIT"
        assert origin.hits[page] == 2


async def test_a_tag_with_a_space_and_a_comma_purges_its_own_page_only(
    origin: Origin, varnish: VarnishServer, anyio_backend: str
) -> None:
    """``/items/a b,c``'s tag ``item:a b,c`` reaches Varnish as one key, in the page's header
    and in the purge alike: the page is purged by its own tag, and the pages whose tags
    its pieces would name (``item:a``, ``b,c``) stay cached."""
    odd = f"/items/{quote(f'a b,c-{anyio_backend}')}"
    piece = "/items/a"
    async with httpx.AsyncClient(base_url=varnish.url) as web:
        await warm(web, odd)
        if origin.hits[piece] == 0:
            await warm(web, piece)
        origin.bump(odd)
        async with VarnishPurger(varnish.url + "/", retries=0) as purger:
            result = await purger.purge([f"item:a b,c-{anyio_backend}"])
        assert result.ok, result.error
        assert result.purged == (f"item:a b,c-{anyio_backend}",)
        fresh = await web.get(odd)
        assert fresh.headers["x-cache"] == "MISS"
        assert fresh.text.endswith(" v2")
        assert (await web.get(piece)).headers["x-cache"] == "HIT"


async def test_an_unreachable_varnish_is_reported(anyio_backend: str) -> None:
    async with VarnishPurger("http://127.0.0.1:9/", retries=0) as purger:
        result = await purger.purge(["article"])
    assert result.failed == ("article",)
    assert result.error is not None
    assert result.error.startswith("ConnectError")
