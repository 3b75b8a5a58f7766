"""A minimal Django project for the edge's framework tests: settings, URLs and views in one
module (it is its own ``ROOT_URLCONF``). Django's settings are process-wide, so the views read
the ``Site`` the running test installs in ``SITE``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import path

from ._sites import Site

SITE = Site()


async def post(request: HttpRequest, slug: str) -> HttpResponse:
    return HttpResponse(SITE.post(request.path, slug), content_type="text/plain")


async def feed(request: HttpRequest) -> StreamingHttpResponse:
    async def items() -> AsyncIterator[bytes]:
        for piece in SITE.feed(request.path):
            yield piece

    return StreamingHttpResponse(items(), content_type="text/plain")


async def echo(request: HttpRequest, slug: str) -> HttpResponse:
    body = SITE.echo(request.build_absolute_uri(), request.headers)
    return HttpResponse(body, content_type="text/plain")


def login(request: HttpRequest) -> HttpResponse:  # a sync view: Django runs it in a thread
    response = HttpResponse(SITE.login(request.path), content_type="text/plain")
    response.set_cookie("sid", "abc")
    return response


urlpatterns = [
    path("posts/<str:slug>", post),
    path("feed", feed),
    path("echo/<str:slug>", echo),
    path("login", login),
]


def application() -> Any:
    """Django's ASGI handler for this project (settings configured on first use)."""
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=__name__,
            SECRET_KEY="tests-only",
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
            USE_TZ=True,
        )
        django.setup()
    from django.core.asgi import get_asgi_application

    return get_asgi_application()
