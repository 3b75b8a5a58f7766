"""WSGI sites for the edge's gunicorn tests: the same site as a Flask app and as a Django
project, each wrapped in `isr.wsgi.ISRMiddleware` as a deployment would (``gunicorn
'tests._wsgi_sites:flask_app()'``). Besides the pages (a post per slug that prints its own
URL and request headers as a careless app does, a streamed feed, a login setting a cookie),
each serves what a test needs to see inside the server: ``GET /_seen`` (what every view
was given: path, query, URL, headers, client), ``POST /_cms`` (the CMS's content version
moves on) and ``POST /hooks/isr`` (the webhook: `isr.webhook.Webhook.handle`)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import anyio

import isr
from isr.webhook import Webhook
from isr.wsgi import ISRMiddleware, Rule, WSGIApp

SECRET = "wsgi-tests-secret"
ORIGIN = "http://www.example.test"
RULES = [
    Rule("/posts/{slug}", ttl=60, tags=["post:{slug}"]),
    Rule("/feed", ttl=60, tags=["feed"]),
    Rule("/login", ttl=60),
    Rule("/private/{slug}", ttl=60, private_ok=True),
    Rule("/broken", ttl=60),
]


def _broken() -> Iterator[bytes]:
    """A streamed page whose source fails after its first part."""
    yield b"the first part of the page, "
    raise RuntimeError("the page's data source went away")


class _State:
    """The content and what the views saw, shared by the server's threads."""

    def __init__(self) -> None:
        self.version = 1
        self.seen: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def saw(self, **what: Any) -> None:
        with self.lock:
            self.seen.append(what)


STATE = _State()
RUNTIME = isr.ISR("memory://")
HOOK = Webhook(runtime=RUNTIME, secret=SECRET)


def _post_body(slug: str, url: str, headers: dict[str, str]) -> str:
    lang = headers.get("Accept-Language", "-")
    agent = headers.get("User-Agent", "-")
    return f"post {slug} v{STATE.version} url={url} lang={lang} ua={agent}"


def _publish(headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    response = anyio.run(HOOK.handle, headers, body)
    return response.status, json.dumps(response.body).encode()


def _wrap(app: WSGIApp) -> WSGIApp:
    return ISRMiddleware(app, RUNTIME, RULES, origin=ORIGIN)


def flask_app() -> WSGIApp:
    """The site on Flask (``gunicorn 'tests._wsgi_sites:flask_app()'``)."""
    from flask import Flask, Response, request

    app = Flask(__name__)

    def seen() -> None:
        STATE.saw(
            path=request.path,
            query=request.query_string.decode(),
            url=request.url,
            headers=dict(request.headers),
            client=request.remote_addr,
        )

    @app.get("/posts/<slug>")
    def post(slug: str) -> Response:
        seen()
        body = _post_body(slug, request.url, dict(request.headers))
        return Response(body, mimetype="text/plain")

    @app.get("/private/<slug>")
    def private(slug: str) -> Response:
        seen()
        return Response(f"hello {request.cookies.get('sid', 'nobody')}", mimetype="text/plain")

    @app.get("/feed")
    def feed() -> Response:
        seen()

        def items() -> Iterator[bytes]:
            for n in range(3):
                yield f"item {n} v{STATE.version}\n".encode()

        return Response(items(), mimetype="text/plain")

    @app.get("/login")
    def login() -> Response:
        seen()
        response = Response("welcome", mimetype="text/plain")
        response.set_cookie("sid", "abc")
        return response

    @app.get("/broken")
    def broken() -> Response:
        seen()
        return Response(_broken(), mimetype="text/plain")

    @app.get("/_seen")
    def what() -> Response:
        return Response(json.dumps(STATE.seen), mimetype="application/json")

    @app.post("/_cms")
    def cms() -> Response:
        STATE.version += 1
        return Response(str(STATE.version))

    @app.post("/hooks/isr")
    def hook() -> Response:
        status, body = _publish(dict(request.headers), request.get_data())
        return Response(body, status=status, mimetype="application/json")

    return _wrap(app.wsgi_app)


# ---------------------------------------------------------------- Django


def _django_seen(request: Any) -> None:
    STATE.saw(
        path=request.path,
        query=request.META.get("QUERY_STRING", ""),
        url=request.build_absolute_uri(),
        headers=dict(request.headers),
        client=request.META.get("REMOTE_ADDR"),
    )


def _django_views() -> list[Any]:
    from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
    from django.urls import path

    def post(request: HttpRequest, slug: str) -> HttpResponse:
        _django_seen(request)
        body = _post_body(slug, request.build_absolute_uri(), dict(request.headers))
        return HttpResponse(body, content_type="text/plain")

    def private(request: HttpRequest, slug: str) -> HttpResponse:
        _django_seen(request)
        return HttpResponse(
            f"hello {request.COOKIES.get('sid', 'nobody')}", content_type="text/plain"
        )

    def feed(request: HttpRequest) -> StreamingHttpResponse:
        _django_seen(request)
        items = (f"item {n} v{STATE.version}\n".encode() for n in range(3))
        return StreamingHttpResponse(items, content_type="text/plain")

    def login(request: HttpRequest) -> HttpResponse:
        _django_seen(request)
        response = HttpResponse("welcome", content_type="text/plain")
        response.set_cookie("sid", "abc")
        return response

    def broken(request: HttpRequest) -> StreamingHttpResponse:
        _django_seen(request)
        return StreamingHttpResponse(_broken(), content_type="text/plain")

    def what(request: HttpRequest) -> HttpResponse:
        return HttpResponse(json.dumps(STATE.seen), content_type="application/json")

    def cms(request: HttpRequest) -> HttpResponse:
        STATE.version += 1
        return HttpResponse(str(STATE.version))

    def hook(request: HttpRequest) -> HttpResponse:
        status, body = _publish(dict(request.headers), request.body)
        return HttpResponse(body, status=status, content_type="application/json")

    from django.views.decorators.csrf import csrf_exempt

    return [
        path("posts/<str:slug>", post),
        path("private/<str:slug>", private),
        path("feed", feed),
        path("login", login),
        path("broken", broken),
        path("_seen", what),
        path("_cms", csrf_exempt(cms)),
        path("hooks/isr", csrf_exempt(hook)),
    ]


urlpatterns: list[Any] = []


def django_app() -> WSGIApp:
    """The site on Django's WSGI handler (``gunicorn 'tests._wsgi_sites:django_app()'``)."""
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["www.example.test", "127.0.0.1"],
        ROOT_URLCONF=__name__,
        SECRET_KEY="tests-only",
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    django.setup()
    urlpatterns[:] = _django_views()
    from django.core.wsgi import get_wsgi_application

    return _wrap(get_wsgi_application())
