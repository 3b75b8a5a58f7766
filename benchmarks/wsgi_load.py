"""Whole pages over HTTP for WSGI: a cached page under gunicorn, against the floor and peers.

Three gunicorn servers (one worker each, loopback, free ports, on one core while wrk runs
on the other, as in `benchmarks.http_load`) answer the same ~1 KB JSON document:

- the floor's (`floor_app`): a constant WSGI app, the document's bytes and two headers built
  once: the least a route can cost under gunicorn, the ceiling for any cache in front;
- Flask's (`flask_app`): the Flask app wrapped in `isr.wsgi.ISRMiddleware`, as a site's
  ``wsgi.py`` does. ``/isr`` is a route under a rule (ttl 1 h), always a fresh hit: the
  middleware answers from the memory store, Flask is not called. ``/flask-caching`` is the
  same route under Flask-Caching's ``@cache.cached(timeout=60)`` (``SimpleCache``), always
  a hit (Flask's request handling runs, the view does not); ``/flask`` is the route
  uncached (informational). These pass through the middleware, as in a site;
- Django's (`django_app`): ``/django-cache-page``, a view under ``cache_page(60)`` with the
  local-memory cache, always a hit.

gunicorn's worker class is ``gthread`` (4 threads): what a production site serving pages
to keep-alive clients runs when its workers must also host background work in threads
(the runtime's refresh pool renders stale pages there); ``sync`` workers close every
connection after one answer, so wrk would measure TCP set-up, and ``gevent``/``eventlet``
need monkey-patching that not every app takes (``ISR_BENCH_WORKER=sync`` or ``gevent``
measures another class). Targets: the isr page at least 0.8x the
floor, and at least 3x the faster of Flask-Caching and ``cache_page``, same run, medians of
per-round ratios. Without ``wrk``, gunicorn, Flask, Flask-Caching or Django the section
prints a note.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable
from typing import Any

import httpx

from ._harness import Row, Samples, Section, Settings, _rotated, median, paired_ratio, progress
from .http_load import DOCUMENT, THREADS, _check, _cpus, _Server, _wrk

__all__ = ["django_app", "flask_app", "floor_app", "run"]

TITLE = "10. whole pages over WSGI (gunicorn gthread, 1 worker, wrk, loopback)"
BASELINE = "requests/s over the floor's in the same round (higher is better)"
FLOOR = "floor: constant response, plain WSGI"
ISR_PAGE = "isr wsgi ISRMiddleware fresh hit"
FLASK_CACHING = "Flask-Caching @cache.cached, SimpleCache"
CACHE_PAGE = "Django cache_page, LocMemCache"
FLASK = "Flask route, uncached"
PATHS = {
    FLOOR: "/floor",
    ISR_PAGE: "/isr",
    FLASK_CACHING: "/flask-caching",
    CACHE_PAGE: "/django-cache-page",
    FLASK: "/flask",
}
SERVERS = {FLOOR: "floor_app", ISR_PAGE: "flask_app", FLASK_CACHING: "flask_app"}
SERVERS |= {FLASK: "flask_app", CACHE_PAGE: "django_app"}
TARGET_VS_FLOOR = 0.8
TARGET_VS_PEER = 3.0
GUNICORN_THREADS = 4
WORKER = os.environ.get("ISR_BENCH_WORKER", "gthread")
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _body() -> bytes:
    return json.dumps(DOCUMENT, separators=(",", ":")).encode()


def floor_app() -> WSGIApp:
    """The floor's server: a plain WSGI app answering constants, built once."""
    body = _body()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/floor":
            start_response("200 OK", headers)
            return [body]
        start_response("404 Not Found", [("Content-Length", "0")])
        return []

    return app


def flask_app() -> WSGIApp:
    """Flask inside `isr.wsgi.ISRMiddleware` (``gunicorn 'benchmarks.wsgi_load:flask_app()'``)."""
    from flask import Flask, Response
    from flask_caching import Cache

    import isr
    from isr.wsgi import ISRMiddleware, Rule

    app = Flask(__name__)
    cache = Cache(app, config={"CACHE_TYPE": "SimpleCache"})
    body = _body()

    def page() -> Response:
        return Response(body, mimetype="application/json")

    app.add_url_rule("/isr", "isr", page)
    app.add_url_rule("/flask", "flask", page)
    app.add_url_rule("/flask-caching", "flask_caching", cache.cached(timeout=60)(page))
    runtime = isr.ISR("memory://")
    rules = [Rule("/isr", ttl=3600)]
    return ISRMiddleware(app.wsgi_app, runtime, rules, origin="http://127.0.0.1")


def django_app() -> WSGIApp:
    """A Django project with one ``cache_page`` view (``gunicorn '...:django_app()'``)."""
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        SECRET_KEY="benchmarks-only",
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
    )
    django.setup()
    from django.core.wsgi import get_wsgi_application
    from django.http import HttpRequest, HttpResponse
    from django.urls import path
    from django.views.decorators.cache import cache_page

    body = _body()

    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(body, content_type="application/json")

    urlpatterns.append(path("django-cache-page", cache_page(60)(view)))
    handler: WSGIApp = get_wsgi_application()
    return handler


urlpatterns: list[Any] = []


def _gunicorn(factory: str) -> Callable[[int], list[str]]:
    def command(port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--worker-class",
            WORKER,
            *(["--threads", str(GUNICORN_THREADS)] if WORKER == "gthread" else []),
            "--log-level",
            "warning",
            f"benchmarks.wsgi_load:{factory}()",
        ]

    return command


def _rows(samples: Samples) -> list[Row]:
    vs_floor = paired_ratio(samples, ISR_PAGE, FLOOR)
    peers = {name: median(samples[name]) for name in (FLASK_CACHING, CACHE_PAGE)}
    fastest = max(peers, key=lambda name: peers[name])
    vs_peer = paired_ratio(samples, ISR_PAGE, fastest)
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
    for name in (FLASK_CACHING, CACHE_PAGE):
        ratio = paired_ratio(samples, ISR_PAGE, name)
        rows.append(
            Row(
                name,
                round(peers[name]),
                "req/s",
                paired_ratio(samples, name, FLOOR),
                f"isr >= {TARGET_VS_PEER}x the faster" if name == fastest else "",
                vs_peer >= TARGET_VS_PEER if name == fastest else None,
                f"isr = {ratio:.2f}x this",
            )
        )
    if FLASK in samples:
        rows.append(
            Row(
                FLASK,
                round(median(samples[FLASK])),
                "req/s",
                paired_ratio(samples, FLASK, FLOOR),
                note=f"isr = {paired_ratio(samples, ISR_PAGE, FLASK):.2f}x this",
            )
        )
    return rows


def run(settings: Settings) -> list[Section]:
    wrk = shutil.which("wrk")
    missing = [
        note
        for note, module in (
            ("gunicorn not installed", "gunicorn"),
            ("Flask not installed", "flask"),
            ("Flask-Caching not installed", "flask_caching"),
            ("Django not installed", "django"),
        )
        if importlib.util.find_spec(module) is None
    ]
    if wrk is None:
        missing.insert(0, "wrk not installed (apt-get install wrk)")
    if missing or wrk is None:
        return [Section(TITLE, BASELINE, [Row(ISR_PAGE, None, "req/s", note="; ".join(missing))])]
    contenders = [FLOOR, ISR_PAGE, FLASK_CACHING, CACHE_PAGE]
    rounds = 2 if settings.quick else 9
    if not settings.quick:
        contenders.append(FLASK)
    cpus = _cpus()
    server_cpus, wrk_cpus = cpus if cpus is not None else (None, None)
    progress("wsgi load: starting three gunicorn servers")
    servers = {
        factory: _Server(factory, PATHS[probe], "", "", server_cpus, _gunicorn(factory))
        for factory, probe in (
            ("floor_app", FLOOR),
            ("flask_app", ISR_PAGE),
            ("django_app", CACHE_PAGE),
        )
    }
    try:
        for server in servers.values():
            server.wait()
        urls = {name: servers[SERVERS[name]].base + PATHS[name] for name in contenders}
        _check(urls)
        if httpx.get(urls[ISR_PAGE], timeout=5.0).headers.get("x-cache") != "HIT":
            raise RuntimeError(f"{ISR_PAGE}: not a hit")
        samples: Samples = {name: [] for name in contenders}
        for r in range(rounds):
            progress(f"wsgi load: round {r + 1}/{rounds}")
            for name in _rotated(contenders, r):
                samples[name].append(_wrk(wrk, urls[name], 1, wrk_cpus))
    finally:
        for server in servers.values():
            server.stop()
    pinning = "" if cpus is None else ", servers on one core and wrk on the other"
    title = f"{TITLE[:-1]}, {GUNICORN_THREADS} threads, wrk {THREADS} thread{pinning})"
    return [Section(title, BASELINE, _rows(samples))]
