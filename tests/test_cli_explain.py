"""``isr explain``: a key on a store, a page by URL (served by a real uvicorn), its JSON, and
its refusals (exit status 2, a clear message, nothing shown that is secret)."""

from __future__ import annotations

import importlib
import io
import json
import textwrap
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

import isr
from isr.cli import main

from .test_asgi_uvicorn import serving


def run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    code = main(argv, out=out)
    return code, out.getvalue()


def test_a_key_in_plain_words_and_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"disk://{tmp_path / 'cache'}"
    with isr.ISR(url) as rt:

        @rt.with_revalidate("post:{slug}", ttl=60, swr=600, tags=["posts", "post:{slug}"])
        def get_post(slug: str) -> str:
            return slug

        get_post("hello")
        rt.invalidate_tag_sync("posts", mode="revalidate")
    monkeypatch.setenv("ISR_CACHE_URL", url)
    code, text = run(["explain", "--key", "post:hello"])
    assert code == 0
    assert "tags        posts, post:hello" in text
    assert "mark        revalidate (by tag)" in text
    assert "set by      revalidate of tag 'posts'" in text
    assert "next read   STALE + background refresh" in text
    code, data = run(["explain", "--key", "post:hello", "--json"])
    explained = json.loads(data)["explanation"]
    assert (code, explained["next_read"], explained["mark"]) == (0, "STALE", "revalidate")
    code, text = run(["explain", "--key", "post:other"])
    assert code == 0
    assert "next read   MISS: the store holds no entry" in text
    assert "store disk://" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["explain"], "--key KEY or --url URL"),
        (["explain", "--key", "a", "--url", "http://x/"], "--key KEY or --url URL"),
        (["explain", "--url", "ftp://x/y", "--store", "disk:///tmp/x"], "http:// or https://"),
        (["explain", "--key", "a", "--store", "memory://"], "memory:// lives inside one process"),
        (["explain", "--key", "a", "--app", "nothing_here"], "--app takes module:attr"),
        (["explain", "--key", "a", "--app", "no_such_module_x:rt"], "ModuleNotFoundError"),
        (["explain", "--key", "a", "--app", "json:dumps"], "name the app's isr.ISR runtime"),
        (["explain", "--key", "", "--store", "disk:///tmp/isr-explain-x"], "--key KEY or"),
        (["explain", "--key", "k", "--header", "A: b"], "--header goes with --url"),
        (["explain", "--url", "http://x/", "--header", "no colon"], "'Name: value'"),
        (["explain", "--url", "http://x/", "--header", "Bad Name: v"], "'Name: value'"),
        (["explain", "--url", "http://x/", "--header", "X: a\rb"], "control character"),
    ],
)
def test_bad_input_is_a_clear_error_with_status_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run(argv)
    assert code == 2
    assert message in capsys.readouterr().err


def test_a_url_password_never_shows(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(["explain", "--url", "ftp://user:hunter2secret@x/", "--store", "disk:///tmp/q"])
    assert code == 2
    err = capsys.readouterr().err
    assert "hunter2secret" not in err
    assert "[redacted]" in err


SITE = """
import isr
from isr.asgi import ISRMiddleware, Rule

class App:
    async def __call__(self, scope, receive, send):
        body = f"page {{scope['path']}} {{scope['query_string'].decode()}}".encode()
        await send({{"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]}})
        await send({{"type": "http.response.body", "body": body}})

rt = isr.ISR({url!r})
app = ISRMiddleware(App(), rt, [
    Rule("/posts/{{slug}}", ttl=60, swr=600, tags=["posts", "post:{{slug}}"]),
    Rule("/list", ttl=30, query=["page"]),
    Rule("/news/{{slug}}", ttl=30, vary=["accept-language"]),
], origin="https://blog.example")
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An app module in the working directory, as a user's would be (``--app name:rt``)."""
    name = f"site_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(SITE.format(url=f"disk://{tmp_path / 'cache'}"))
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    yield module
    module.rt.close()


def test_a_page_by_url_with_the_apps_rules(site: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with serving(site.app, "h11") as base:
        assert httpx.get(f"{base}/posts/hello").headers["x-cache"] == "MISS"
        app = f"{site.__name__}:rt"
        code, text = run(["explain", "--url", f"{base}/posts/hello", "--app", app])
        assert code == 0
        assert "x-cache: HIT" in text
        assert "cache-control: public, s-maxage=60, stale-while-revalidate=600" in text
        assert "page key    page:/posts/hello (the app's page rules)" in text
        assert "loader      /posts/{slug} (page rule" in text
        assert "next read   HIT" in text

        # A rule keying a query parameter: only the rules know the key's hash.
        httpx.get(f"{base}/list?page=2&utm_source=x")
        code, data = run(
            ["explain", "--url", f"{base}/list?utm_source=y&page=2", "--app", app, "--json"]
        )
        report = json.loads(data)
        assert code == 0
        assert report["key"] == site.app.page_key("/list?page=2")
        assert report["key"].startswith("page:/list#")
        assert report["explanation"]["found"] is True
        assert report["headers"]["x-cache"] == "HIT"

        code, text = run(["explain", "--url", f"{base}/elsewhere", "--app", app])
        assert code == 1
        assert "no page rule of the app caches this URL" in text


def test_a_page_by_url_without_the_app_guesses_from_the_path(site: Any) -> None:
    with serving(site.app, "h11") as base:
        httpx.get(f"{base}/posts/hello%20world")
        store = ["--store", f"disk://{Path.cwd() / 'cache'}"]
        code, text = run(["explain", "--url", f"{base}/posts/hello%20world", *store])
        assert code == 0
        assert "page key    page:/posts/hello%20world (from the path" in text
        assert "the one the store holds" in text
        assert "loader      none registered here" in text  # no rules known: no rule's name
        assert "next read   HIT" in text
        code, text = run(["explain", "--url", f"{base}/not-cached", *store])
        assert code == 0
        assert "not in the store" in text


def test_an_unreachable_url_fails_with_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ["--store", f"disk://{tmp_path / 'cache'}"]
    code, _ = run(["explain", "--url", "http://127.0.0.1:9/x", "--timeout", "2", *store])
    assert code == 1
    assert "did not answer" in capsys.readouterr().err


def test_vary_headers_given_with_the_url_select_the_pages_variant(site: Any) -> None:
    with serving(site.app, "h11") as base:
        german = {"Accept-Language": "de"}
        assert httpx.get(f"{base}/news/one", headers=german).headers["x-cache"] == "MISS"
        app = f"{site.__name__}:rt"
        argv = ["explain", "--url", f"{base}/news/one", "--app", app, "--json"]
        code, data = run([*argv, "--header", "Accept-Language: de"])
        report = json.loads(data)
        assert code == 0
        assert report["key"] == site.app.page_key("/news/one", german)
        assert report["headers"]["x-cache"] == "HIT"
        assert report["explanation"]["next_read"] == "HIT"
        code, data = run(argv)  # no Accept-Language: another variant, not cached yet
        report = json.loads(data)
        assert report["key"] != site.app.page_key("/news/one", german)
        assert report["headers"]["x-cache"] == "MISS"
