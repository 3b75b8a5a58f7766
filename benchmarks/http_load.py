"""Whole pages over HTTP: requests per second of a cached page, against the floor and a peer.

Two uvicorn processes (one worker each, no access log, loopback, free ports), each serving
the app as a deployment would hand it to uvicorn, answer the same ~1 KB JSON document:

- the floor's server (`floor_app`), a pure ASGI app: ``/floor`` sends the document's bytes
  and two headers, all built once: the least a route can cost under uvicorn, the ceiling
  for any cache in front of an app; in the full run also ``/floor-headers``, the same with
  the seven headers an isr hit sends (what the server's writing of them costs, apart from
  the middleware's work; informational);
- the site's server (`server_app`): a FastAPI app wrapped in `isr.asgi.ISRMiddleware`, the
  middleware being what uvicorn calls, as in a site's ``asgi.py``. ``/isr`` is a FastAPI
  route under a rule (ttl 1 h) with a canonical ``origin`` (the recommended set-up;
  ``ISR_BENCH_ORIGIN=off`` keys scheme and host instead), always a fresh hit: the
  middleware answers from the memory store, FastAPI is not called. ``/fastapi-cache2`` is
  the same route under fastapi-cache2's ``@cache(expire=60)`` with its
  ``InMemoryBackend``, always a hit (FastAPI's route machinery runs, the function does
  not); in the full run ``/fastapi`` is the route uncached (informational). These pass
  through the middleware, as in a site.

Each contender is the app uvicorn calls: no dispatching layer in front of one that the
other does not pay. Load comes from ``wrk`` (one thread, 10 keep-alive connections) in runs
of a fixed duration (wrk takes whole seconds), one route after another, the starting route
rotating from round to round, the two servers alternating in the same run; a route's
figure is its median requests/s over the rounds and its ratio the median of its per-round
ratios to the floor (higher is better here). With two cores or more, the servers run on
one and wrk on the others (`_cpus`), as a server and its load balancer would not share a
core: left to the scheduler, wrk and the server measured took turns on both cores, and
the ratio moved by several hundredths from run to run.

uvicorn runs with httptools and uvloop when both are installed (``uvicorn[standard]``, the
usual production install), else with h11 and asyncio (plain ``uvicorn``); the section's title
says which, and ``ISR_BENCH_HTTP=h11`` forces the latter. The server's own cost per request
differs about fourfold between the two, so the ratios do too.

Targets: the isr cached page at least 0.8x the floor, and at least 3x fastapi-cache2.
Without ``wrk`` (Debian: ``apt-get install wrk``), uvicorn or FastAPI the section prints a
note; a fastapi-cache2 that cannot be imported is reported as such.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ._harness import (
    Row,
    Samples,
    Section,
    Settings,
    _rotated,
    median,
    paired_ratio,
    progress,
)

__all__ = ["floor_app", "run", "server_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]

ROOT = Path(__file__).resolve().parent.parent
TITLE = "9. whole pages over HTTP (uvicorn, 1 worker, wrk, loopback)"
BASELINE = "requests/s over the floor's in the same round (higher is better)"
FLOOR = "floor: constant response, pure ASGI"
ISR_PAGE = "isr ISRMiddleware fresh hit"
PEER = "fastapi-cache2 @cache, InMemoryBackend"
FLOOR_HEADERS = "floor + an isr hit's 7 headers"
FASTAPI = "FastAPI route, uncached"
PATHS = {
    FLOOR: "/floor",
    ISR_PAGE: "/isr",
    PEER: "/fastapi-cache2",
    FLOOR_HEADERS: "/floor-headers",
    FASTAPI: "/fastapi",
}
#: The contenders the floor's server answers; the site's server answers the others.
ON_FLOOR_SERVER = frozenset({FLOOR, FLOOR_HEADERS})
TARGET_VS_FLOOR = 0.8
TARGET_VS_PEER = 3.0
#: wrk's settings: it takes whole seconds only.
THREADS, CONNECTIONS = 1, 10
#: Seconds the server gets to start answering.
STARTUP = 30.0

#: The document every route answers: a blog post as a headless CMS would send it.
DOCUMENT: dict[str, Any] = {
    "slug": "hello",
    "title": "Hello, world",
    "author": {"name": "Ada", "slug": "ada"},
    "tags": ["news", "python", "caching"],
    "body": "Incremental static regeneration keeps pages fresh without a rebuild. " * 12,
}


@dataclass(frozen=True)
class _Plan:
    rounds: int
    seconds: int
    contenders: tuple[str, ...]

    @classmethod
    def make(cls, settings: Settings, peer: bool) -> _Plan:
        names = [FLOOR, ISR_PAGE] + ([PEER] if peer else [])
        if settings.quick:
            return cls(rounds=2, seconds=1, contenders=tuple(names))
        return cls(rounds=9, seconds=1, contenders=(*names, FLOOR_HEADERS, FASTAPI))


# ---------------------------------------------------------------- the server's app


def _floor_body() -> bytes:
    """The document as FastAPI's ``JSONResponse`` renders it."""
    return json.dumps(
        DOCUMENT, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode()


def server_app() -> ASGIApp:
    """The site's server: FastAPI inside `ISRMiddleware` (``uvicorn --factory
    benchmarks.http_load:server_app``)."""
    from fastapi import FastAPI

    import isr
    from isr.asgi import ISRMiddleware, Rule

    runtime = isr.ISR("memory://")
    try:
        from fastapi_cache import FastAPICache
        from fastapi_cache.backends.inmemory import InMemoryBackend
        from fastapi_cache.decorator import cache
    except ImportError:
        peer = False
    else:
        peer = True

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if peer:
            FastAPICache.init(InMemoryBackend(), prefix="bench")
        async with runtime:
            yield

    api = FastAPI(lifespan=lifespan)

    @api.get("/isr")
    async def isr_page() -> dict[str, Any]:
        return DOCUMENT

    @api.get("/fastapi")
    async def plain_page() -> dict[str, Any]:
        return DOCUMENT

    if peer:

        @api.get("/fastapi-cache2")
        @cache(expire=60)
        async def peer_page() -> dict[str, Any]:
            return DOCUMENT

    # The recommended set-up: a canonical origin (ISR_BENCH_ORIGIN=off: scheme and host keyed).
    origin = None if os.environ.get("ISR_BENCH_ORIGIN") == "off" else "http://127.0.0.1"
    return ISRMiddleware(api, runtime, [Rule("/isr", ttl=3600)], origin=origin)


def floor_app() -> ASGIApp:
    """The floor's server: a pure ASGI app answering constants, built once."""
    body = _floor_body()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    # What an isr hit adds, as constants: etag, last-modified, cache-control, age, x-cache.
    isr_headers = [
        *headers,
        (b"etag", b'"0123456789abcdef0123456789abcdef"'),
        (b"last-modified", b"Mon, 01 Jan 2024 00:00:00 GMT"),
        (
            b"cache-control",
            b"public, s-maxage=3600, stale-while-revalidate=31536000, stale-if-error=86400",
        ),
        (b"age", b"0"),
        (b"x-cache", b"HIT"),
    ]
    starts = {
        "/floor": {"type": "http.response.start", "status": 200, "headers": headers},
        "/floor-headers": {"type": "http.response.start", "status": 200, "headers": isr_headers},
    }
    end = {"type": "http.response.body", "body": body}

    missing = {
        "type": "http.response.start",
        "status": 404,
        "headers": [(b"content-length", b"0")],
    }

    async def app(
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        start = starts.get(scope["path"])
        if start is not None:
            await send(start)
            await send(end)
            return
        await send(missing)
        await send({"type": "http.response.body"})

    return app


# ---------------------------------------------------------------- the run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_impl() -> tuple[str, str]:
    """uvicorn's (HTTP implementation, event loop): see the module docstring."""
    fast = all(importlib.util.find_spec(m) is not None for m in ("httptools", "uvloop"))
    if fast and os.environ.get("ISR_BENCH_HTTP", "") != "h11":
        return "httptools", "uvloop"
    return "h11", "asyncio"


class _Server:
    """The server child (uvicorn, or the ``command`` given): started, checked, stopped."""

    def __init__(
        self,
        factory: str,
        probe: str,
        http: str,
        loop: str,
        cpus: set[int] | None,
        command: Callable[[int], list[str]] | None = None,
    ) -> None:
        self.probe = probe
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            command(self.port)
            if command is not None
            else [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                f"benchmarks.http_load:{factory}",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--no-access-log",
                "--log-level",
                "warning",
                "--lifespan",
                "on",
                "--http",
                http,
                "--loop",
                loop,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"},
            preexec_fn=_pinned(cpus),
        )

    def wait(self) -> None:
        deadline = time.monotonic() + STARTUP
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited at startup:\n{self.output()}")
            try:
                if httpx.get(self.base + self.probe, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the server did not answer within {STARTUP:g} s:\n{self.output()}")

    def output(self) -> str:
        self.stop()
        assert self.proc.stdout is not None
        return self.proc.stdout.read().decode(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _check(urls: dict[str, str]) -> None:
    """Every route answers the document, and the cached ones answer from their cache."""
    with httpx.Client(timeout=5.0) as client:
        for name, url in urls.items():
            for _ in range(2):  # the first fills the cache, the second must be a hit
                r = client.get(url)
            if r.status_code != 200 or r.json() != DOCUMENT:
                raise RuntimeError(f"{name}: {r.status_code} {r.text[:200]!r}")
            if name == ISR_PAGE and r.headers.get("x-cache") != "HIT":
                raise RuntimeError(f"{name}: X-Cache {r.headers.get('x-cache')}, not HIT")
            if name == PEER and r.headers.get("x-fastapi-cache") != "HIT":
                raise RuntimeError(f"{name}: not a hit: {dict(r.headers)}")


_RATE = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.MULTILINE)
_BAD = re.compile(r"^\s*(Non-2xx or 3xx responses|Socket errors):.*$", re.MULTILINE)


def _cpus() -> tuple[set[int], set[int]] | None:
    """The cores for the servers (one) and for wrk (the rest), or None: one core, or a
    platform without CPU affinity."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return {cpus[0]}, set(cpus[1:])


def _pinned(cpus: set[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` running a child on ``cpus`` (no pinning when None)."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def _wrk(wrk: str, url: str, seconds: int, cpus: set[int] | None) -> float:
    """Requests/s of one wrk run; errors and non-2xx answers fail the benchmark."""
    out = subprocess.run(
        [wrk, f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
        preexec_fn=_pinned(cpus),
    ).stdout
    bad = _BAD.search(out)
    rate = _RATE.search(out)
    if bad is not None or rate is None:
        raise RuntimeError(f"wrk {url}: {bad.group(0).strip() if bad else 'no rate'}\n{out}")
    return float(rate.group(1))


def _measure(wrk: str, urls: dict[str, str], plan: _Plan, cpus: set[int] | None) -> Samples:
    samples: Samples = {name: [] for name in plan.contenders}
    for r in range(plan.rounds):
        progress(f"http load: round {r + 1}/{plan.rounds}")
        for name in _rotated(plan.contenders, r):
            samples[name].append(_wrk(wrk, urls[name], plan.seconds, cpus))
    return samples


def _rows(samples: Samples, peer_missing: str) -> list[Row]:
    vs_floor = paired_ratio(samples, ISR_PAGE, FLOOR)
    rows = [
        Row(FLOOR, round(median(samples[FLOOR])), "req/s", 1.0),
        Row(
            ISR_PAGE,
            round(median(samples[ISR_PAGE])),
            "req/s",
            vs_floor,
            f">= {TARGET_VS_FLOOR}x floor",
            vs_floor >= TARGET_VS_FLOOR,
        ),
    ]
    if PEER in samples:
        vs_peer = paired_ratio(samples, ISR_PAGE, PEER)
        rows.append(
            Row(
                PEER,
                round(median(samples[PEER])),
                "req/s",
                paired_ratio(samples, PEER, FLOOR),
                f"isr >= {TARGET_VS_PEER}x this",
                vs_peer >= TARGET_VS_PEER,
                f"isr = {vs_peer:.2f}x this",
            )
        )
    else:
        rows.append(Row(PEER, None, "req/s", note=peer_missing))
    rows.extend(  # informational, full run only
        Row(
            name,
            round(median(samples[name])),
            "req/s",
            paired_ratio(samples, name, FLOOR),
            note=f"isr = {paired_ratio(samples, ISR_PAGE, name):.2f}x this",
        )
        for name in (FLOOR_HEADERS, FASTAPI)
        if name in samples
    )
    return rows


def _peer_missing() -> str | None:
    """Why fastapi-cache2 cannot run here (it imports Jinja2 through Starlette), or None."""
    try:
        import fastapi_cache.decorator  # noqa: F401
    except ImportError as exc:
        return f"cannot import: {exc} (pip install fastapi-cache2 jinja2)"
    return None


def run(settings: Settings) -> list[Section]:
    wrk = shutil.which("wrk")
    missing = [
        note
        for note, ok in (
            ("wrk not installed (apt-get install wrk)", wrk is not None),
            ("uvicorn not installed", importlib.util.find_spec("uvicorn") is not None),
            ("FastAPI not installed", importlib.util.find_spec("fastapi") is not None),
        )
        if not ok
    ]
    if missing or wrk is None:
        return [Section(TITLE, BASELINE, [Row(ISR_PAGE, None, "req/s", note="; ".join(missing))])]
    peer_missing = _peer_missing()
    plan = _Plan.make(settings, peer_missing is None)
    http, loop = _server_impl()
    cpus = _cpus()
    server_cpus, wrk_cpus = cpus if cpus is not None else (None, None)
    progress(f"http load: starting two uvicorn servers ({http}, {loop})")
    floor = _Server("floor_app", PATHS[FLOOR], http, loop, server_cpus)
    site = _Server("server_app", PATHS[ISR_PAGE], http, loop, server_cpus)
    try:
        floor.wait()
        site.wait()
        urls = {
            name: (floor if name in ON_FLOOR_SERVER else site).base + PATHS[name]
            for name in plan.contenders
        }
        _check(urls)
        samples = _measure(wrk, urls, plan, wrk_cpus)
    finally:
        floor.stop()
        site.stop()
    pinning = "" if cpus is None else ", servers on one core and wrk on the others"
    title = f"{TITLE[:-1]}; uvicorn with {http} and {loop}{pinning})"
    return [Section(title, BASELINE, _rows(samples, peer_missing or ""))]
