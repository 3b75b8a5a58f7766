"""Take the documentation's screenshot of the status page from a real run:

    .venv/bin/python -m tests.status_screenshot docs/pages/img/status-page.png

A real redis-server on a free loopback port, three instances of a blog (each with an L1 and
the bus), some traffic on decorated functions and on pages (the WSGI page middleware),
three invalidations (a Strapi publish to the blog's webhook, ``isr invalidate`` and code),
each confirmed, then the status
page (the WSGI app under wsgiref) signed into and asked to explain a page, in a headless
Chromium. Also prints ``isr explain --key``'s output for the README.
"""

from __future__ import annotations

import base64
import io
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.wait import WebDriverWait

import isr
from isr.cli import main as cli
from isr.wsgi import ISRMiddleware, Rule, StatusApp, WebhookApp

from ._browser import chromium, wsgiref_serving
from .redis_server import RedisServer

SECRET = "screenshot-secret-0123456789abcdef"


def blog(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    path = environ["PATH_INFO"]
    body = f"<h1>{path}</h1>".encode()
    start_response("200 OK", [("content-type", "text/html"), ("content-length", str(len(body)))])
    return [body]


def take(target: Path) -> str:
    with RedisServer("redis") as server:
        url = server.url
        runtimes = [isr.ISR(url, namespace="blog", l1=True, heartbeat=0.5) for _ in range(3)]
        rt = runtimes[0]
        try:
            for runtime in runtimes:
                assert runtime.wait_ready_sync(10)

            def get_post(slug: str) -> dict[str, str]:
                return {"slug": slug}

            def get_menu(lang: str) -> list[str]:
                return ["home", "posts", lang]

            for fn in (get_post, get_menu):  # named as a blog module's functions would be
                fn.__qualname__ = f"blog.{fn.__name__}"
            get_post = rt.with_revalidate(
                "post:{slug}", ttl=60, swr=600, tags=["posts", "post:{slug}"]
            )(get_post)
            get_menu = rt.with_revalidate("menu:{lang}", ttl=300, swr=3600, tags=["menu"])(get_menu)

            pages = ISRMiddleware(
                blog,
                rt,
                [
                    Rule("/posts/{slug}", ttl=60, swr=600, tags=["posts", "post:{slug}"]),
                    Rule("/", ttl=30, swr=300, tags=["home"]),
                ],
                origin="https://blog.example",
            )
            with httpx.Client(transport=httpx.WSGITransport(pages), base_url="http://t") as web:
                for round_ in range(40):
                    for slug in ("hello", "isr", "redis", "cms"):
                        get_post(slug)
                    get_menu("en" if round_ % 3 else "de")
                    for path in ("/", "/posts/hello", "/posts/isr"):
                        web.get(path)
            while len(rt.instances_sync()) < 3:
                time.sleep(0.05)

            time.sleep(2)  # the pages have an age when their invalidations come

            # A CMS publish, as Strapi sends it, to the blog's webhook (which waits for the
            # instances' confirmation before it answers).
            hook = WebhookApp(runtime=rt, secret=SECRET)
            publish = {
                "event": "entry.publish",
                "model": "post",
                "uid": "api::post.post",
                "entry": {"id": 42, "documentId": "k3v9t2", "slug": "hello", "title": "Hello"},
            }
            with httpx.Client(transport=httpx.WSGITransport(hook), base_url="http://t") as cms:
                answer = cms.post(
                    "/hooks/isr",
                    json=publish,
                    headers={
                        "Authorization": f"Bearer {SECRET}",
                        "X-Strapi-Event": "entry.publish",
                    },
                )
                assert answer.status_code == 200, answer.text
            time.sleep(1)
            os.environ["ISR_CACHE_URL"] = url
            os.environ["ISR_NAMESPACE"] = "blog"
            quiet = io.StringIO()
            cli(["invalidate", "--key", "menu:en", "--mode", "revalidate"], out=quiet)
            rt.invalidate_tag_sync("home", mode="revalidate")
            rt.confirm_sync(1.0)
            get_post("isr")
            web_again = httpx.Client(transport=httpx.WSGITransport(pages), base_url="http://t")
            with web_again:
                web_again.get("/")  # STALE: revalidated
            time.sleep(1)

            out = io.StringIO()
            cli(["explain", "--key", "post:hello"], out=out)
            example = out.getvalue()

            with wsgiref_serving(StatusApp(rt, secret=SECRET)) as base, chromium(1280, 900) as d:
                d.get(f"{base}/status")
                field = d.find_element(By.NAME, "secret")
                field.send_keys(SECRET)
                field.submit()
                WebDriverWait(d, 10).until(staleness_of(field))
                box = d.find_element(By.NAME, "q")
                box.send_keys("/posts/hello")
                box.submit()
                WebDriverWait(d, 10).until(staleness_of(box))
                shot = d.execute_cdp_cmd(
                    "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
                )
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(base64.b64decode(shot["data"]))
        finally:
            for runtime in runtimes:
                runtime.close()
    return example


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/pages/img/status-page.png")
    print(take(path))
    print(f"wrote {path}", file=sys.stderr)
