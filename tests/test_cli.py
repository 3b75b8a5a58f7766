"""The ``isr`` command: warm over HTTP, invalidate a store or a webhook, show a store."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import isr
from isr import Status
from isr.cli import main


class Site(BaseHTTPRequestHandler):
    """A site behind the cache: known pages answer 200 (MISS, then HIT), others 404."""

    seen: list[str]
    posted: list[tuple[dict[str, str], bytes]]

    def do_GET(self) -> None:
        first = self.path not in self.seen
        self.seen.append(self.path)
        status = 404 if self.path.startswith("/missing") else 200
        self.send_response(status)
        self.send_header("X-Cache", "MISS" if first else "HIT")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.posted.append((dict(self.headers), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "11")
        self.end_headers()
        self.wfile.write(b'{"ok":true}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def site() -> Iterator[tuple[str, type[Site]]]:
    handler = type("Handler", (Site,), {"seen": [], "posted": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def test_warm_requests_every_page_once_and_reports_the_cache(
    site: tuple[str, type[Site]], tmp_path: Path
) -> None:
    base, handler = site
    listing = tmp_path / "paths.txt"
    listing.write_text("/posts/b\n\n/posts/c\n")
    code, out = run("warm", "--base-url", base, "/posts/a", "--file", str(listing))
    assert code == 0
    assert sorted(handler.seen) == ["/posts/a", "/posts/b", "/posts/c"]
    assert "warmed 3 pages" in out
    assert "3 x 200 MISS" in out
    code, out = run("warm", "--base-url", base, "/posts/a", "/missing")
    assert code == 1
    assert "1 x 200 HIT" in out
    assert "failed: /missing: HTTP 404" in out


def test_invalidate_a_store_directly(tmp_path: Path) -> None:
    url = f"disk://{tmp_path}"
    rt = isr.ISR(url, namespace="blog")

    @rt.with_revalidate("post:{slug}", ttl=600, tags=["posts"])
    def post(slug: str) -> str:
        return slug

    post("a")
    post("b")
    code, out = run("invalidate", "--store", url, "--namespace", "blog", "--tag", "posts")
    assert (code, out) == (0, "tag 'posts': 2 entries (expire)\n")
    assert post.lookup("a").status is Status.MISS
    code, out = run("invalidate", "--store", url, "--namespace", "blog", "--key", "post:a",
                    "--mode", "purge")  # fmt: skip
    assert (code, out) == (0, "key 'post:a': invalidated (purge)\n")
    code, out = run("invalidate", "--store", url, "--namespace", "blog", "--all")
    assert code == 0
    assert post.lookup("b").status is Status.MISS  # the generation moved on
    code, out = run("stats", "--store", url, "--namespace", "blog")
    report = json.loads(out)
    assert (report["adapter"], report["generation"]["expire"]) == ("DiskAdapter", 1)
    rt.close()


def test_an_explicit_store_wins_over_the_deployment_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ISR_TARGET picks a store when none is named; ``--store`` names one, so it is used
    (here a disk store on a multi-instance target, whose default would be Redis)."""
    monkeypatch.setenv("ISR_TARGET", "multi-instance")
    monkeypatch.setenv("ISR_NAMESPACE", "blog")
    code, out = run("stats", "--store", f"disk://{tmp_path}")
    assert code == 0
    assert json.loads(out)["adapter"] == "DiskAdapter"


def test_invalidate_through_a_running_webhook(site: tuple[str, type[Site]]) -> None:
    base, handler = site
    code, out = run("invalidate", "--webhook", f"{base}/hooks/isr", "--secret", "s3cret",
                    "--tag", "posts", "--key", "post:a", "--mode", "revalidate")  # fmt: skip
    assert code == 0
    assert out == 'HTTP 200 {"ok":true}\n'
    headers, body = handler.posted[0]
    assert headers["Authorization"] == "Bearer s3cret"
    assert json.loads(body) == {"tags": ["posts"], "keys": ["post:a"], "mode": "revalidate"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["invalidate", "--store", "memory://"], "say what to invalidate"),
        (["invalidate", "--store", "memcached://x", "--key", "k"], "unknown scheme"),
        (["warm", "--base-url", "http://127.0.0.1:9"], "nothing to warm"),
    ],
)
def test_bad_usage_says_what_is_wrong(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv, out=io.StringIO()) == 2
    assert message in capsys.readouterr().err


def test_python_dash_m_isr() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "isr", "--help"], capture_output=True, text=True, check=True
    )
    assert "warm" in result.stdout
    assert "invalidate" in result.stdout
