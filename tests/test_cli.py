"""The ``isr`` command: warm over HTTP, invalidate a store or a webhook, show a store."""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis

import isr
from isr import Status
from isr.cli import main

from .redis_server import RedisServer


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
    report, confirmed = out.rsplit("instances: ", 1)
    assert (code, report) == (0, "tag 'posts': 2 entries (expire)\n")
    assert re.fullmatch(r"1 confirmed in [0-9.]+ ms\n", confirmed)  # rt, on the store
    assert post.lookup("a").status is Status.MISS
    code, out = run("invalidate", "--store", url, "--namespace", "blog", "--key", "post:a",
                    "--mode", "purge", "--confirm", "0")  # fmt: skip
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


# ------------------------------------------------------------------ an honest CLI

# The real console script the install made (python -m isr where there is none).
_SCRIPT = Path(sys.executable).with_name("isr")
ISR_COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "isr"]
_OURS = ("ISR_CACHE_URL", "ISR_TARGET", "ISR_CACHE_DIR", "ISR_NAMESPACE", "ISR_WEBHOOK_SECRET")


def isr_command(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``isr argv`` in its own process, with only the ``ISR_*`` variables given."""
    environ = {k: v for k, v in os.environ.items() if k not in _OURS}
    return subprocess.run(
        [*ISR_COMMAND, *argv],
        capture_output=True,
        text=True,
        env={**environ, **env},
        timeout=120,
        check=False,
    )


def fill(url: str, namespace: str, count: int, tag: str = "posts") -> None:
    """``count`` cached entries in ``namespace``, stored as an application would."""
    with isr.ISR(url, namespace=namespace) as rt:

        @rt.with_revalidate("post:{n}", ttl=600, tags=[tag])
        def post(n: int) -> int:
            return n

        for n in range(count):
            post(n)
        assert rt.stats().store_errors == 0


@pytest.mark.parametrize("command", [["stats"], ["invalidate", "--tag", "posts"]])
@pytest.mark.parametrize("env", [{}, {"ISR_TARGET": "development"}, {"ISR_NAMESPACE": "blog"}])
def test_without_a_store_the_command_says_how_to_name_one(
    command: list[str], env: dict[str, str]
) -> None:
    """No ``--store``, no ``ISR_CACHE_URL``: not an action on a memory store of the
    command's own (which no application sees), but usage error 2."""
    done = isr_command(*command, **env)
    assert done.returncode == 2, done.stderr
    assert "no store named" in done.stderr
    assert "--store" in done.stderr
    assert "ISR_CACHE_URL" in done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr


def test_a_store_the_environment_names_needs_no_flag(tmp_path: Path) -> None:
    fill(f"disk://{tmp_path}", "blog", 2)
    done = isr_command("stats", ISR_CACHE_URL=f"disk://{tmp_path}", ISR_NAMESPACE="blog")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["entries"] == 2
    cache = tmp_path / "home-cache"
    done = isr_command(
        "invalidate", "--tag", "posts", ISR_TARGET="single-host", ISR_CACHE_DIR=str(cache)
    )
    assert done.returncode == 0, done.stderr
    assert f"store disk://{cache}" in done.stderr


def test_invalidate_refuses_a_memory_store_even_when_named() -> None:
    for env in ({}, {"ISR_CACHE_URL": "memory://"}):
        argv = ["invalidate", "--tag", "posts"] + ([] if env else ["--store", "memory://"])
        done = isr_command(*argv, **env)
        assert done.returncode == 2, done.stderr
        assert "memory:// lives inside one process" in done.stderr
        assert done.stdout == ""
    done = isr_command("stats", "--store", "memory://")  # looking is harmless, and said so
    assert done.returncode == 0, done.stderr
    assert "this command's own store: it starts empty" in done.stderr
    assert json.loads(done.stdout)["entries"] == 0


def test_the_namespace_in_use_is_named_on_stderr(tmp_path: Path) -> None:
    url = f"disk://{tmp_path}"
    fill(url, "blog", 1)
    done = isr_command("invalidate", "--store", url, "--namespace", "blog", "--key", "post:0")
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"isr: store {url}, namespace 'blog'\n"
    assert done.stdout == (  # stdout stays the report
        "key 'post:0': invalidated (expire)\ninstances: none live (nothing to confirm)\n"
    )
    done = isr_command("stats", "--store", url, ISR_NAMESPACE="blog")
    assert "namespace 'blog'" in done.stderr
    assert json.loads(done.stdout)["namespace"] == "blog"
    done = isr_command("invalidate", "--store", url, "--key", "post:0")
    assert "namespace 'isr' (the default)" in done.stderr
    assert done.stdout.startswith("key 'post:0': not cached (expire)\n")  # blog's, not isr's


def test_warm_without_a_base_url_says_so(site: tuple[str, type[Site]]) -> None:
    base, handler = site
    done = isr_command("warm", "/posts/a", f"{base}/posts/b")
    assert done.returncode == 2
    assert "'/posts/a' is a path, not a URL: give the site's address with --base-url" in (
        done.stderr
    )
    assert handler.seen == []  # nothing was requested
    done = isr_command("warm", f"{base}/posts/a", f"{base}/posts/b")  # full URLs need none
    assert done.returncode == 0, done.stderr
    assert sorted(handler.seen) == ["/posts/a", "/posts/b"]


def test_version() -> None:
    done = isr_command("--version")
    assert done.returncode == 0
    assert done.stdout == f"isr-runtime {importlib.metadata.version('isr-runtime')}\n"
    assert done.stdout == f"isr-runtime {isr.__version__}\n"  # the two never drift apart


def test_stats_counts_the_namespaces_entries_on_disk(tmp_path: Path) -> None:
    url = f"disk://{tmp_path}"
    fill(url, "blog", 3)
    fill(url, "shop", 5)
    # Records beside the entries (generation, invalidation markers) are not entries.
    assert isr_command("invalidate", "--store", url, "--namespace", "blog", "--all").returncode == 0
    for namespace, entries in (("blog", 3), ("shop", 5), ("empty", 0)):
        done = isr_command("stats", "--store", url, "--namespace", namespace)
        report = json.loads(done.stdout)
        assert (report["entries"], report["entries_counted"]) == (entries, "exact")
    with isr.ISR(url, namespace="blog") as rt:
        rt.invalidate_sync("post:0", mode="purge")  # gone: no longer counted
    assert (
        json.loads(isr_command("stats", "--store", url, "--namespace", "blog").stdout)["entries"]
        == 2
    )


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    """A server of these tests' own: its key count is theirs to know."""
    with RedisServer("redis") as server:
        yield server


@pytest.fixture
def empty_redis(own_redis: RedisServer) -> RedisServer:
    with redis.Redis(port=own_redis.port) as client:
        client.flushall()
        client.execute_command("ACL", "DELUSER", "app")
    return own_redis


def test_stats_counts_the_namespaces_entries_on_redis(empty_redis: RedisServer) -> None:
    url = empty_redis.url
    fill(url, "blog", 3)
    fill(url, "bag", 4)  # "b*g" as a SCAN pattern would match these too
    fill(url, "b*g", 2)
    for namespace, entries in (("blog", 3), ("bag", 4), ("b*g", 2), ("b?g", 0)):
        done = isr_command("stats", "--namespace", namespace, ISR_CACHE_URL=url)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["entries"] == entries, namespace
        assert report["entries_counted"].startswith("exact: a SCAN of the database's")


def test_stats_estimates_a_large_redis_count_and_says_so(empty_redis: RedisServer) -> None:
    url = empty_redis.url
    fill(url, "blog", 300)
    fill(url, "shop", 300)
    with redis.Redis(port=empty_redis.port) as client:
        keys = client.dbsize()
    done = isr_command("stats", "--namespace", "blog", "--scan-limit", "100", ISR_CACHE_URL=url)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    counted = report["entries_counted"]
    assert counted.startswith("estimated: ")
    assert f"of the database's {keys} are this namespace's entries" in counted
    # 1,000 samples of a share near 1/2: the estimate is off by far less than 20 %.
    assert 240 <= report["entries"] <= 360
    low, high = map(int, re.findall(r"95 % interval (\d+) to (\d+)", counted)[0])
    assert low <= report["entries"] <= high


def test_a_stopped_redis_is_an_error_not_zeros() -> None:
    with RedisServer("redis") as server:
        url = server.url
        fill(url, "blog", 1)
    for argv in (["stats"], ["invalidate", "--tag", "posts"]):
        done = isr_command(*argv, "--wait", "0.5", ISR_CACHE_URL=url)
        assert done.returncode == 1, done.stderr
        assert f"the store {url} did not answer within 0.5 s" in done.stderr
        assert "ConnectionError" in done.stderr
        assert done.stdout == ""  # no generation record of zeros, no "0 entries"


def test_a_wrong_password_is_an_error_and_never_shown(empty_redis: RedisServer) -> None:
    password = "right-Pa55-4f1c"
    with redis.Redis(port=empty_redis.port) as client:
        client.execute_command(
            "ACL", "SETUSER", "app", "on", f">{password}", "~blog:*", "&blog:*", "+@all"
        )
    right = f"redis://app:{password}@127.0.0.1:{empty_redis.port}/0"
    fill(right, "blog", 2)
    done = isr_command("stats", "--namespace", "blog", ISR_CACHE_URL=right)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["entries"] == 2
    assert password not in done.stdout + done.stderr
    wrong = f"redis://app:wrong-{password}@127.0.0.1:{empty_redis.port}/0"
    for argv in (["stats"], ["invalidate", "--tag", "posts"]):
        done = isr_command(*argv, "--namespace", "blog", "--wait", "0.5", ISR_CACHE_URL=wrong)
        assert done.returncode == 1, done.stderr
        assert "did not answer within 0.5 s" in done.stderr
        assert "AuthenticationError" in done.stderr
        assert password not in done.stdout + done.stderr
        assert done.stdout == ""


def test_a_missing_extra_gives_the_install_hint(redis_server: RedisServer) -> None:
    """redis-py not installed: the hint, exit 2, no traceback."""
    code = (
        "import sys\n"
        "sys.modules['redis'] = None  # as if the extra were not installed\n"
        "from isr.cli import main\n"
        f"sys.exit(main(['stats', '--store', {redis_server.url!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr
    assert 'pip install "isr-runtime[redis]"' in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
