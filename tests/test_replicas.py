"""Three replicas behind nginx, one Redis: an invalidation that reaches one reaches them all.

The scenario users report, with real processes and nothing faked: a redis-server, three
uvicorn processes running ``examples/replicas/app.py`` (each with its memory L1 and its bus
subscription), and nginx spreading requests over them round-robin with the example's own
``nginx.conf``. A revalidation posted through nginx lands on one replica; every replica must
then serve the new page, also when the subscriptions were cut just before. CI installs nginx
and redis-server; without them these tests fail with a clear message rather than skip.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from ._started import Process, wait_answering
from .redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "replicas"
INSTANCES = ("replica-1", "replica-2", "replica-3")
#: Seconds any process gets to answer after it is started.
STARTUP = 20.0
#: The documented bounds: an invalidation reaches the other replicas within a pub/sub
#: round trip; a lost one within the epoch poll (1 s) plus a reconnect.
PROPAGATION = 2.0
RESYNC = 3.0
#: One page per test, so that each starts from v1 whatever ran before it.
SLUGS = ("home", "about", "contact", "news")


@dataclass
class Site:
    """The running stack: nginx's URL, each replica's URL, the origin file, Redis."""

    url: str
    replicas: dict[str, str]
    origin: Path
    redis: RedisServer

    def publish(self, pages: dict[str, str]) -> None:
        """Change the origin (atomically: a fetch never reads a half-written file)."""
        tmp = self.origin.with_suffix(".tmp")
        tmp.write_text(json.dumps(pages), encoding="utf-8")
        os.replace(tmp, self.origin)

    def edit(self, slug: str, text: str) -> None:
        pages = json.loads(self.origin.read_text(encoding="utf-8"))
        self.publish({**pages, slug: text})


def nginx_binary() -> str:
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if binary is None:
        raise RuntimeError(
            "nginx is not installed: the replica tests run a real one (apt-get install -y nginx)"
        )
    return binary


def nginx_conf(ports: list[int], listen: int) -> str:
    """The example's nginx.conf with this test's ports."""
    conf = (EXAMPLE / "nginx.conf").read_text(encoding="utf-8")
    for i, port in enumerate(ports, start=1):
        conf = conf.replace(f"127.0.0.1:800{i};", f"127.0.0.1:{port};")
    conf = conf.replace("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{listen};")
    assert all(f":{port};" in conf for port in [*ports, listen]), conf
    return conf


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("replicas")
    nginx = nginx_binary()
    with ExitStack() as stack:
        server = stack.enter_context(RedisServer())
        origin = tmp / "pages.json"
        ports = [free_port() for _ in INSTANCES]
        replicas: dict[str, tuple[str, Process]] = {}
        for name, port in zip(INSTANCES, ports, strict=True):
            env = {
                **os.environ,
                "ISR_CACHE_URL": server.url,
                "ISR_NAMESPACE": "replicas",
                "INSTANCE": name,
                "ORIGIN": str(origin),
            }
            args = [sys.executable, "-m", "uvicorn", "examples.replicas.app:app"]
            args += ["--host", "127.0.0.1", "--port", str(port), "--lifespan", "on"]
            args += ["--no-access-log"]
            process = Process(name, args, tmp / f"{name}.log", cwd=ROOT, env=env)
            stack.callback(process.stop)
            replicas[name] = (f"http://127.0.0.1:{port}", process)
        listen = free_port()
        (tmp / "nginx.conf").write_text(nginx_conf(ports, listen), encoding="utf-8")
        args = [nginx, "-p", f"{tmp}/", "-c", str(tmp / "nginx.conf"), "-g", "daemon off;"]
        proxy = Process("nginx", args, tmp / "nginx.out")
        stack.callback(proxy.stop)
        url = f"http://127.0.0.1:{listen}"

        site = Site(url, {name: base for name, (base, _) in replicas.items()}, origin, server)
        site.publish({slug: f"{slug.title()} (v1)" for slug in SLUGS})
        deadline = time.monotonic() + STARTUP
        for base, process in replicas.values():
            wait_answering(f"{base}/stats", process, deadline)
        wait_answering(f"{url}/stats", proxy, deadline)
        yield site


@pytest.fixture
def client(site: Site) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site.url, timeout=5.0, trust_env=False) as http:
        yield http


Answer = tuple[str, str, str]
"""(instance, X-Cache, page text) of one response."""


def get(client: httpx.Client, slug: str) -> Answer:
    response = client.get(f"/page/{slug}")
    assert response.status_code == 200, response.text
    return response.headers["x-instance"], response.headers["x-cache"], response.text


def until_all_serve(client: httpx.Client, slug: str, text: str, within: float) -> list[Answer]:
    """Read ``slug`` through nginx until every replica has served ``text``; the answers."""
    deadline = time.monotonic() + within
    answers: list[Answer] = []
    while True:
        answers.append(get(client, slug))
        if {i for i, _, body in answers if text in body} == set(INSTANCES):
            return answers
        if time.monotonic() > deadline:
            pytest.fail(f"not every replica served {text!r} within {within} s: {answers}")
        time.sleep(0.005)


def revalidate(client: httpx.Client, query: str) -> dict[str, Any]:
    response = client.post(f"/revalidate?{query}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def stats(site: Site) -> dict[str, dict[str, int]]:
    """Each replica's store counters, asked of it directly (not through nginx)."""
    with httpx.Client(timeout=5.0, trust_env=False) as http:
        return {
            name: http.get(f"{base}/stats").json()["store"] for name, base in site.replicas.items()
        }


def test_round_robin_reaches_every_replica(site: Site, client: httpx.Client) -> None:
    answers = [get(client, "home") for _ in range(6)]
    assert {instance for instance, _, _ in answers} == set(INSTANCES)
    assert all("Home (v1)" in body for _, _, body in answers)
    assert [status for _, status, _ in answers].count("MISS") <= 1  # one fetch for all three


def test_an_expire_through_one_replica_reaches_them_all(site: Site, client: httpx.Client) -> None:
    until_all_serve(client, "about", "About (v1)", PROPAGATION)
    site.edit("about", "About (v2)")
    done = revalidate(client, "key=page:about&mode=expire")
    assert done["invalidated"] == 1
    until_all_serve(client, "about", "About (v2)", PROPAGATION)
    received = {name: counters["bus_received"] for name, counters in stats(site).items()}
    others = [name for name in INSTANCES if name != done["instance"]]
    assert all(received[name] >= 1 for name in others), received


def test_a_lost_invalidation_is_caught_by_the_resync(site: Site, client: httpx.Client) -> None:
    until_all_serve(client, "contact", "Contact (v1)", PROPAGATION)
    before = stats(site)
    raw = redis.Redis.from_url(site.redis.url)
    try:
        killed = raw.client_kill_filter(_type="pubsub")
    finally:
        raw.close()
    assert killed == len(INSTANCES)
    # Published while the subscribers are away (or reconnecting): some never get it.
    site.edit("contact", "Contact (v2)")
    revalidate(client, "key=page:contact")
    until_all_serve(client, "contact", "Contact (v2)", RESYNC)
    after = stats(site)
    # Every subscription was cut, and a replica that resubscribes always drops its L1.
    resynced = {name: after[name]["bus_resyncs"] - before[name]["bus_resyncs"] for name in after}
    assert all(n >= 1 for n in resynced.values()), resynced


def test_a_tag_revalidation_serves_stale_once_then_the_new_page(
    site: Site, client: httpx.Client
) -> None:
    until_all_serve(client, "news", "News (v1)", PROPAGATION)
    site.edit("news", "News (v2)")
    done = revalidate(client, "tag=pages&mode=revalidate")
    assert done["invalidated"] >= 1  # the news page, and whichever others were read
    answers = until_all_serve(client, "news", "News (v2)", PROPAGATION)
    # Nothing refreshes the page before a read finds it marked: that read is served the old
    # page at once, STALE, and starts the one refresh the new page comes from.
    first_new = next(n for n, (_, _, body) in enumerate(answers) if "News (v2)" in body)
    assert any(
        status == "STALE" and "News (v1)" in body for _, status, body in answers[:first_new]
    ), answers
    # From then on, a replica still waiting for its refresh to see the new page lands may
    # serve the old one, but only as STALE.
    assert all(
        status == "STALE" for _, status, body in answers[first_new:] if "News (v1)" in body
    ), answers


def test_bad_input_gets_a_clear_error(client: httpx.Client) -> None:
    response = client.post("/revalidate?key=page:home&mode=later")
    assert response.status_code == 400
    assert "mode must be one of" in response.json()["error"]
    response = client.post("/revalidate?key=page:home&tag=pages")
    assert response.status_code == 400
    assert "exactly one" in response.json()["error"]
    assert client.get("/page/missing").status_code == 404
