"""The WSGI webhook as a gunicorn worker loads it (``tests._wsgi_webhook:app``), for
tests/test_webhook_wsgi.py: the store from ``ISR_CACHE_URL`` / ``ISR_NAMESPACE``, the secret
from ``ISR_WEBHOOK_SECRET``, one Varnish purger at ``ISR_TEST_VARNISH``.

``/_threads`` is not the webhook: it answers the worker's pid and its threads' names, so
that the test can see that requests leave no thread behind."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

import isr
from isr.cdn import VarnishPurger
from isr.webhook import WebhookWSGIApp

runtime = isr.ISR.from_env()
webhook = WebhookWSGIApp(
    runtime=runtime,
    secret=os.environ["ISR_WEBHOOK_SECRET"],
    purgers=[VarnishPurger(os.environ["ISR_TEST_VARNISH"], retries=0)],
)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/_threads":
        names = sorted(thread.name for thread in threading.enumerate())
        body = json.dumps({"pid": os.getpid(), "threads": names}).encode()
        start_response("200 OK", [("content-type", "application/json")])
        return [body]
    return webhook(environ, start_response)
