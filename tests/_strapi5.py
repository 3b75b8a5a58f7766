"""The webhook requests a real Strapi 5.54 sent (``tests/fixtures/strapi5/``), ready to
replay exactly: method, path, headers in the order sent, the body's bytes.

    for delivery in deliveries("entry.unpublish", secret=SECRET):
        delivery.asgi_headers  # [(b"host", ...), (b"authorization", b"Bearer <SECRET>"), ...]

The captured ``Authorization`` value is redacted; the test's secret takes its place.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

__all__ = [
    "FIXTURES",
    "Delivery",
    "deliveries",
    "entry",
    "replay_asgi",
    "replay_wsgi",
    "wsgi_environ",
]

FIXTURES = Path(__file__).with_name("fixtures") / "strapi5"


@dataclass(frozen=True)
class Delivery:
    """One request as Strapi sent it."""

    name: str
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    """As sent: names in their case, in their order."""
    body: bytes

    @property
    def event(self) -> str:
        """What the ``X-Strapi-Event`` header says."""
        return next(v for k, v in self.headers if k.lower() == "x-strapi-event")

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def asgi_headers(self) -> list[tuple[bytes, bytes]]:
        return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers]

    def with_body(self, body: bytes) -> Delivery:
        """The same request with another body (and its Content-Length)."""
        headers = tuple(
            (k, str(len(body)) if k.lower() == "content-length" else v) for k, v in self.headers
        )
        return Delivery(self.name, self.method, self.path, headers, body)


@cache
def _load(name: str) -> tuple[dict[str, Any], ...]:
    data = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return tuple(data["requests"])


def deliveries(name: str, *, secret: str) -> list[Delivery]:
    """The requests of ``tests/fixtures/strapi5/<name>.json``, in the order received."""
    out = []
    for i, request in enumerate(_load(name)):
        headers = tuple(
            (k, f"Bearer {secret}" if k.lower() == "authorization" else v)
            for k, v in request["headers"]
        )
        body = request["body_raw"].encode("utf-8")
        out.append(Delivery(f"{name}[{i}]", request["method"], request["path"], headers, body))
    return out


def entry(name: str, index: int = 0) -> dict[str, Any]:
    """The JSON body of one captured request (a fresh copy, to edit)."""
    body: dict[str, Any] = json.loads(_load(name)[index]["body_raw"])
    return body


async def replay_asgi(app: Any, delivery: Delivery) -> tuple[int, dict[str, Any]]:
    """``delivery`` into the ASGI app as the server hands it over: raw headers, one body."""
    inbox = [{"type": "http.request", "body": delivery.body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0) if inbox else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": delivery.method,
        "scheme": "http",
        "path": delivery.path,
        "raw_path": delivery.path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": delivery.asgi_headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 20002),
    }
    await app(scope, receive, send)
    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def wsgi_environ(delivery: Delivery) -> dict[str, Any]:
    """The environ a WSGI server builds for ``delivery``."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": delivery.method,
        "PATH_INFO": delivery.path,
        "wsgi.input": io.BytesIO(delivery.body),
    }
    for name, value in delivery.headers:
        key = name.upper().replace("-", "_")
        key = key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    setup_testing_defaults(environ)
    return environ


def replay_wsgi(app: Any, delivery: Delivery) -> tuple[int, dict[str, Any]]:
    started: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        started.append(status)
        assert ("cache-control", "no-store") in headers

    body = b"".join(app(wsgi_environ(delivery), start_response))
    return int(started[0].split()[0]), json.loads(body)
