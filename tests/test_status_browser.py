"""The status page in a real headless Chromium, served by a real uvicorn (ASGI) and by
wsgiref (its WSGI twin) on free loopback ports: it loads behind its secret, shows an
invalidation made here with its confirmation, runs explain from its form, and a tag
holding markup stays text (no script runs, the CSP blocks nothing the page needs)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.wait import WebDriverWait

import isr
from isr.asgi import ISRMiddleware, Rule, StatusApp
from isr.wsgi import StatusApp as WSGIStatusApp

from ._browser import chromium, wsgiref_serving
from .test_asgi_uvicorn import serving

SECRET = "browser-status-secret-0123456789"
EVIL = "<script>alert(1)</script>"


class Site:
    """Two instances on one disk store; the first serves the pages and the status page."""

    def __init__(self, directory: Path) -> None:
        url = f"disk://{directory}"
        self.rt = isr.ISR(url, heartbeat=0.2)
        self.other = isr.ISR(url, heartbeat=0.2)

        @self.rt.with_revalidate("post:{slug}", ttl=60, swr=600, tags=["posts", EVIL])
        def get_post(slug: str) -> str:
            return f"post {slug}"

        async def app(scope: Any, receive: Any, send: Any) -> None:
            raise AssertionError("no page is rendered in this test")

        self.get_post = get_post
        self.pages = ISRMiddleware(
            app, self.rt, [Rule("/posts/{slug}", ttl=60)], origin="https://blog.example"
        )

    def both_registered(self) -> None:
        """Wait (bounded) until both instances' first heartbeats are in the registry."""
        deadline = time.monotonic() + 10
        while len(self.rt.instances_sync()) < 2:
            assert time.monotonic() < deadline, "the second instance never registered"
            time.sleep(0.02)

    def close(self) -> None:
        self.other.close()
        self.rt.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    made = Site(tmp_path / "cache")
    made.both_registered()
    yield made
    made.close()


def _served(kind: str, site: Site) -> AbstractContextManager[str]:
    if kind == "asgi":
        return serving(StatusApp(site.rt, secret=SECRET), "h11")
    return wsgiref_serving(WSGIStatusApp(site.rt, secret=SECRET))


def _sign_in(driver: WebDriver, url: str, secret: str) -> None:
    driver.get(url)
    field = driver.find_element(By.NAME, "secret")
    field.send_keys(secret)
    field.submit()
    WebDriverWait(driver, 10).until(staleness_of(field))  # the next page has loaded


def _search(driver: WebDriver, text: str) -> str:
    """Explain ``text`` from the page's form; the answer's next read."""
    box = driver.find_element(By.NAME, "q")
    box.clear()
    box.send_keys(text)
    box.submit()
    WebDriverWait(driver, 10).until(staleness_of(box))  # the answer has loaded
    return str(driver.find_element(By.ID, "next-read").text)


def _no_alert(driver: WebDriver) -> None:
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018 - raises when no script opened one


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_the_page_in_a_real_browser(kind: str, site: Site) -> None:
    site.get_post("hello")
    with isr.invalidation_source("webhook", event="entry.publish", model="post", entry="7"):
        site.rt.invalidate_tag_sync("posts", mode="revalidate")
    confirmation = site.rt.confirm_sync(timeout=1.0)
    assert sorted(confirmation.confirmed) == sorted([site.rt.instance_id, site.other.instance_id])
    site.rt.invalidate_tag_sync(EVIL, mode="expire")  # after the confirmation: none yet

    with _served(kind, site) as base, chromium() as driver:
        url = f"{base}/ops/status"
        driver.get(url)
        assert driver.find_elements(By.NAME, "secret")
        assert "post:hello" not in driver.page_source
        assert site.rt.instance_id not in driver.page_source

        _sign_in(driver, url, "not-the-secret")
        assert "Wrong secret." in driver.find_element(By.TAG_NAME, "main").text

        _sign_in(driver, url, SECRET)
        assert driver.current_url == url  # the redirect after signing in: the page itself
        assert driver.execute_script("return document.cookie") == ""  # HttpOnly
        instances = driver.find_element(By.ID, "instances").text
        assert site.rt.instance_id in instances
        assert site.other.instance_id in instances

        rows = driver.find_elements(By.CSS_SELECTOR, "#log tbody tr")
        texts = [row.text for row in rows]
        assert len(rows) == 2
        assert EVIL in texts[0]  # newest first; the markup shown as text
        assert "not yet known" in texts[0]
        assert "revalidate" in texts[1]
        assert "webhook (event=entry.publish, model=post, entry=7)" in texts[1]
        assert "2 confirmed in" in texts[1]
        _no_alert(driver)
        background = driver.find_element(By.TAG_NAME, "header").value_of_css_property(
            "background-color"
        )
        assert background == "rgba(29, 35, 42, 1)"  # the style sheet its CSP hash allows

        assert _search(driver, "post:hello") == "MISS"
        explanation = driver.find_element(By.ID, "explanation").text
        assert "key         post:hello" in explanation
        assert f"tags        posts, {EVIL}" in explanation
        assert "mark        expire (by tag)" in explanation
        assert f"set by      expire of tag {EVIL!r}" in explanation

        assert _search(driver, "/posts/hello") == "MISS"
        assert "Page key page:/posts/hello" in driver.find_element(By.ID, "explain").text
        _no_alert(driver)

        problems = [
            entry["message"]
            for entry in driver.get_log("browser")  # type: ignore[no-untyped-call]
            if entry["level"] == "SEVERE" and "status of 401" not in entry["message"]
        ]
        assert problems == [], problems  # no CSP violation, no error (the login form is a 401)

        button = driver.find_element(By.CSS_SELECTOR, "header button")
        button.click()
        WebDriverWait(driver, 10).until(staleness_of(button))
        driver.get(url)
        assert driver.find_elements(By.NAME, "secret")  # signed out: the cookie is gone
