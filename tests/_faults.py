"""The fault suite's site: one real redis-server, three uvicorn replicas (each with its L1)
running ``tests/_fault_app.py``, an origin whose every value is a version number, and readers
that record which version each request got, when.

Every assertion of the suite is on those records: "after the invalidation returned at t0, no
read that started later than t0 + bound got an older version", "every replica served the new
version". Times are `time.monotonic` seconds, taken in this process.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from redis import Redis

from ._started import Process, wait_answering
from .redis_server import RedisServer, free_port

__all__ = [
    "INSTANCES",
    "Origin",
    "Read",
    "Readers",
    "Site",
    "Findings",
    "old_reads",
    "running_site",
]

ROOT = Path(__file__).resolve().parent.parent
INSTANCES = ("replica-1", "replica-2", "replica-3")
#: Seconds the replicas get to start, and to settle after a fault.
STARTUP = 30.0
SETTLE = 15.0
#: Seconds a reader's request may take before it counts as an error (far above any bound).
REQUEST_TIMEOUT = 10.0


@dataclass(frozen=True)
class Read:
    """One request a reader made: to which replica, for what, when, and what it got."""

    instance: str
    path: str
    started: float
    ended: float
    http: int
    version: int | None
    status: str | None

    @property
    def took(self) -> float:
        return self.ended - self.started

    def __str__(self) -> str:
        got = f"v{self.version} {self.status}" if self.http == 200 else f"HTTP {self.http}"
        return f"{self.instance} {self.path} at {self.started:.3f} (+{self.took:.3f} s): {got}"


class Origin:
    """The origin the replicas fetch from: a JSON file ``{slug: version}``, replaced
    atomically (a fetch never reads a half-written file). A slug not listed is at 1."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._versions: dict[str, int] = {}
        self._write()

    def version(self, slug: str) -> int:
        return self._versions.get(slug, 1)

    def bump(self, *slugs: str) -> int:
        """Publish a new version of each slug; the new version of the last one."""
        for slug in slugs:
            self._versions[slug] = self.version(slug) + 1
        self._write()
        return self.version(slugs[-1])

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._versions), encoding="utf-8")
        os.replace(tmp, self.path)


def _read(client: httpx.Client, instance: str, base: str, path: str) -> Read:
    started = time.monotonic()
    try:
        response = client.get(f"{base}/{path}")
    except httpx.TransportError:
        return Read(instance, path, started, time.monotonic(), 0, None, None)
    ended = time.monotonic()
    if response.status_code != 200:
        return Read(instance, path, started, ended, response.status_code, None, None)
    body = response.json()
    return Read(instance, path, started, ended, 200, body["version"], body["status"])


@dataclass
class Site:
    """The running replicas, their Redis and their origin."""

    redis: RedisServer
    origin: Origin
    replicas: dict[str, str]
    """Each replica's base URL, by name."""
    namespace: str
    secret: str
    processes: dict[str, Process]

    def __post_init__(self) -> None:
        self.http = httpx.Client(timeout=REQUEST_TIMEOUT, trust_env=False)

    def close(self) -> None:
        self.http.close()

    # ------------------------------------------------------------------ requests

    def read(self, instance: str, path: str) -> Read:
        return _read(self.http, instance, self.replicas[instance], path)

    def invalidate(self, instance: str, **params: str) -> tuple[float, httpx.Response]:
        """POST /invalidate on one replica: when it returned, and its answer."""
        response = self.http.post(f"{self.replicas[instance]}/invalidate", params=params)
        return time.monotonic(), response

    def webhook(self, instance: str, body: dict[str, Any]) -> tuple[float, httpx.Response]:
        """POST the library's webhook on one replica: when it returned, and its answer."""
        response = self.http.post(
            f"{self.replicas[instance]}/webhook",
            content=json.dumps(body),
            headers={
                "authorization": f"Bearer {self.secret}",
                "content-type": "application/json",
            },
        )
        return time.monotonic(), response

    def stats(self, instance: str) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get(f"{self.replicas[instance]}/stats").json()
        return body

    # ------------------------------------------------------------------ waiting

    def redis_client(self) -> Redis:
        return Redis(port=self.redis.port, socket_timeout=5)

    def subscribers(self) -> int:
        """Replicas whose invalidation bus is subscribed right now."""
        channel = f"{self.namespace}:bus"
        with self.redis_client() as client:
            return int(dict(client.pubsub_numsub(channel)).get(channel.encode(), 0))

    def settle(self, within: float = SETTLE) -> None:
        """Until Redis runs (thawed, restarted if a test left it down), every replica says
        it is ready, and every bus is subscribed."""
        if self.redis.running:
            self.redis.thaw()
        else:
            self.redis.start()
        deadline = time.monotonic() + within
        while True:
            for process in self.processes.values():
                process.check_alive()
            ready = all(
                self.http.get(f"{base}/ready").status_code == 200 for base in self.replicas.values()
            )
            if ready and self.subscribers() == len(self.replicas):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the replicas did not settle within {within} s")
            time.sleep(0.05)

    def serve_everywhere(self, path: str, version: int, within: float = 5.0) -> None:
        """Read ``path`` on every replica until each serves ``version`` (a test's start)."""
        deadline = time.monotonic() + within
        for instance in self.replicas:
            while (read := self.read(instance, path)).version != version:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{path} not at v{version} within {within} s: {read}")
                time.sleep(0.01)


@contextmanager
def running_site(
    tmp: Path, namespace: str = "faults", env: Mapping[str, str] | None = None
) -> Iterator[Site]:
    """Start Redis and the three replicas (``env``: more of their environment, see
    ``tests/_fault_app.py``); stop them all on leaving."""
    with ExitStack() as stack:
        server = stack.enter_context(RedisServer())
        origin = Origin(tmp / "origin.json")
        secret = "fault-suite-webhook-secret"
        replicas: dict[str, str] = {}
        processes: dict[str, Process] = {}
        for name in INSTANCES:
            port = free_port()
            env = {
                **os.environ,
                "ISR_CACHE_URL": server.url,
                "ISR_NAMESPACE": namespace,
                "INSTANCE": name,
                "ORIGIN": str(origin.path),
                "WEBHOOK_SECRET": secret,
                **(env or {}),
            }
            args = [sys.executable, "-m", "uvicorn", "tests._fault_app:app"]
            args += ["--host", "127.0.0.1", "--port", str(port), "--lifespan", "on"]
            args += ["--no-access-log"]
            process = Process(name, args, tmp / f"{name}.log", cwd=ROOT, env=env)
            stack.callback(process.stop)
            replicas[name] = f"http://127.0.0.1:{port}"
            processes[name] = process
        deadline = time.monotonic() + STARTUP
        for name, base in replicas.items():
            wait_answering(f"{base}/ready", processes[name], deadline)
        site = Site(server, origin, replicas, namespace, secret, processes)
        stack.callback(site.close)
        site.settle()
        yield site


class Readers:
    """Threads reading continuously, one per replica named in ``plan`` (its paths, read in
    turn; a path holding ``{n}`` gets a new number each time: a key never read before).
    ``with Readers(site, plan) as readers:`` ... ``readers.reads``, every read made."""

    def __init__(self, site: Site, plan: Mapping[str, Sequence[str]], pause: float = 0.01):
        self.site = site
        self.plan = plan
        self.pause = pause
        self.reads: list[Read] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(name, paths), daemon=True)
            for name, paths in plan.items()
        ]
        self._lock = threading.Lock()

    def _run(self, instance: str, paths: Sequence[str]) -> None:
        base = self.site.replicas[instance]
        counter = itertools.count()
        with httpx.Client(timeout=REQUEST_TIMEOUT, trust_env=False) as client:
            for path in itertools.cycle(paths):
                if self._stop.is_set():
                    return
                read = _read(client, instance, base, path.format(n=next(counter)))
                with self._lock:
                    self.reads.append(read)
                time.sleep(self.pause)

    def __enter__(self) -> Readers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT + 5)

    def snapshot(self) -> list[Read]:
        with self._lock:
            return list(self.reads)


def old_reads(
    reads: Iterable[Read],
    path: str,
    newer_than: int,
    since: float,
    *,
    instances: Iterable[str] = INSTANCES,
    stale_ok: bool = False,
) -> list[Read]:
    """Reads of ``path`` on ``instances`` that started after ``since`` and got a version
    older than ``newer_than`` (``stale_ok``: except as STALE, which a revalidate allows)."""
    names = set(instances)
    return [
        r
        for r in reads
        if r.path == path
        and r.instance in names
        and r.started > since
        and r.version is not None
        and r.version < newer_than
        and not (stale_ok and r.status == "STALE")
    ]


class Findings:
    """The promises a scenario found broken, each with the reads that show it. Checked all
    together at the end (`assert_none`), so that a failure names every broken promise."""

    def __init__(self) -> None:
        self.broken: list[str] = []

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.broken.append(what)

    def reads(self, what: str, reads: Sequence[Read]) -> None:
        """Broken if there is any read in ``reads`` (those that show ``what``)."""
        if reads:
            shown = "; ".join(map(str, reads[:3]))
            self.broken.append(f"{what}: {len(reads)} read(s), the first: {shown}")

    def errors(self, reads: Iterable[Read]) -> None:
        self.reads(
            "answered other than 200 (a 5xx, or no answer)", [r for r in reads if r.http != 200]
        )

    def served(
        self,
        reads: Iterable[Read],
        path: str,
        version: int,
        *,
        after: float = -float("inf"),
        instances: Iterable[str] = INSTANCES,
    ) -> None:
        """Broken unless every replica in ``instances`` served ``path`` at ``version`` (or
        later) in a read that started after ``after``."""
        reads = [r for r in reads if r.path == path and r.started > after]
        for name in instances:
            mine = [r for r in reads if r.instance == name]
            if not any(r.version is not None and r.version >= version for r in mine):
                last = "; ".join(map(str, mine[-3:])) or "none"
                self.broken.append(
                    f"{name} never served {path} at v{version}; its last reads: {last}"
                )

    def reached(
        self,
        reads: Sequence[Read],
        path: str,
        version: int,
        done: float,
        bound: float,
        what: str,
        *,
        stale_ok: bool = False,
    ) -> None:
        """Broken unless the invalidation ``what`` that returned at ``done`` (publishing
        ``version``) reached every replica within ``bound``: no read of ``path`` that
        started later got an older version, and every replica served ``version``."""
        self.reads(
            f"{path}: an older version than v{version} served {bound} s after {what}",
            old_reads(reads, path, version, done + bound, stale_ok=stale_ok),
        )
        self.served(reads, path, version, after=done)

    def assert_none(self) -> None:
        assert not self.broken, "\n".join(["broken:", *self.broken])
