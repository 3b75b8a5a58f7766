"""The ``isr`` command: warm over HTTP, invalidate a store or a webhook, show a store."""

from __future__ import annotations

import contextlib
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
        answer = b'{"ok":true}'
        if self.path == "/echo":  # a debugging endpoint that shows what it was sent
            answer = json.dumps(dict(self.headers)).encode()
        else:
            self.posted.append((dict(self.headers), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def site() -> Iterator[tuple[str, type[Site]]]:
    handler = type("Handler", (Site,), {"seen": [], "posted": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
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
    assert report["adapter"] == "DiskAdapter"
    assert report["generation"]["expire"] == report["generation"]["current"] > 0
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


# ------------------------------------------------------------------ secrets

SECRET = "cli-s3cret-9f2e7d41"


def run_all(*argv: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``isr argv``, in-process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(list(argv), out=out)
    return code, out.getvalue(), err.getvalue()


def test_help_says_where_secrets_come_from() -> None:
    top = subprocess.run(
        [sys.executable, "-m", "isr", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "ISR_CACHE_URL" in top
    assert "ISR_WEBHOOK_SECRET" in top
    invalidate = subprocess.run(
        [sys.executable, "-m", "isr", "invalidate", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--secret-file" in invalidate
    assert "ISR_WEBHOOK_SECRET" in invalidate
    assert "ISR_CACHE_URL" in invalidate


def test_the_secret_from_the_environment_or_a_file_without_a_warning(
    site: tuple[str, type[Site]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, handler = site
    monkeypatch.setenv("ISR_WEBHOOK_SECRET", SECRET)
    code, _, err = run_all("invalidate", "--webhook", f"{base}/hooks/isr", "--tag", "posts")
    assert (code, err) == (0, "")
    monkeypatch.delenv("ISR_WEBHOOK_SECRET")
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")  # as an editor or `echo` leaves it
    code, _, err = run_all(
        "invalidate", "--webhook", f"{base}/hooks/isr", "--secret-file", str(secret_file),
        "--tag", "posts",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert [h["Authorization"] for h, _ in handler.posted] == [f"Bearer {SECRET}"] * 2


def test_a_secret_on_the_command_line_works_with_a_warning(site: tuple[str, type[Site]]) -> None:
    base, handler = site
    code, out, err = run_all(
        "invalidate", "--webhook", f"{base}/hooks/isr", "--secret", SECRET, "--tag", "posts"
    )
    assert code == 0
    assert "--secret on the command line can be read by every local user" in err
    assert "ISR_WEBHOOK_SECRET" in err
    assert SECRET not in out + err
    assert handler.posted[0][0]["Authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize("where", ["--secret", "ISR_WEBHOOK_SECRET", "--secret-file"])
@pytest.mark.parametrize(
    "bad", [SECRET + "\n\n", SECRET + "\r\n" + "x", f" {SECRET}", "é" + SECRET]
)
def test_a_secret_that_cannot_travel_is_refused_unseen(
    site: tuple[str, type[Site]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    bad: str,
) -> None:
    base, handler = site
    argv = ["invalidate", "--webhook", f"{base}/hooks/isr", "--tag", "posts"]
    if where == "--secret":
        argv += ["--secret", bad]
    elif where == "--secret-file":
        (tmp_path / "secret").write_text(bad)
        argv += ["--secret-file", str(tmp_path / "secret")]
    else:
        monkeypatch.setenv("ISR_WEBHOOK_SECRET", bad)
    code, out, err = run_all(*argv)
    assert code == 2
    assert "the secret in" in err
    assert SECRET not in out + err
    assert handler.posted == []  # nothing was sent


def test_a_webhook_echoing_the_request_does_not_make_the_cli_print_the_secret(
    site: tuple[str, type[Site]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _ = site
    monkeypatch.setenv("ISR_WEBHOOK_SECRET", SECRET)
    code, out, err = run_all("invalidate", "--webhook", f"{base}/echo", "--tag", "posts")
    assert code == 0
    assert '"Authorization": "[redacted]"' in out  # the server did echo it
    assert SECRET not in out + err


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"valkey://:{SECRET}@127.0.0.1:1/0", "unknown scheme"),
        ("redis://:p/ss#" + SECRET + "@127.0.0.1:1/0", "does not parse"),
        (f"redis+sentinel://u:{SECRET}@127.0.0.1:1/0", "unknown scheme"),
    ],
)
def test_a_store_url_with_a_password_is_never_printed(
    url: str, problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run_all("invalidate", "--store", url, "--tag", "posts")
    assert code == 2
    assert "--store URL with a password" in err  # the command line: a warning ...
    assert problem in err
    assert "Traceback" not in err
    assert SECRET not in out + err
    assert "p/ss" not in err
    monkeypatch.setenv("ISR_CACHE_URL", url)  # ... the environment: none
    code, out, err = run_all("stats")
    assert code == 2
    assert "warning" not in err
    assert SECRET not in out + err
