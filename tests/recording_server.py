"""A real HTTP server on a free loopback port that records every request and answers from
a script: the CDN APIs' stand-in (the purgers' HTTP path runs for real, no mock transport).

    with RecordingServer() as server:
        server.script(Reply(503), Reply(429, {"Retry-After": "1"}))  # the next two answers
        ... FastlyPurger(..., base_url=server.url) ...
        server.requests  # [Recorded(method, path, headers, body, at), ...]
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ._started import Started

__all__ = ["LoopbackServer", "Recorded", "RecordingServer", "Reply"]


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    """Lower-cased names; values decoded as UTF-8."""
    body: bytes
    at: float
    """``time.monotonic()`` when the request arrived."""
    raw: tuple[tuple[str, str], ...] = ()
    """Every header line as sent, repeated names included (names lower-cased)."""

    def json(self) -> Any:
        return json.loads(self.body)

    def values(self, name: str) -> list[str]:
        """Every value sent under ``name`` (lower-case), in order."""
        return [value for key, value in self.raw if key == name]


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"success": true, "errors": []}'
    delay: float = 0.0
    """Seconds to wait before answering (to make a client time out)."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is expected here


class LoopbackServer(Started):
    """A ``ThreadingHTTPServer`` on ``127.0.0.1`` and a free port, in a thread, answering
    every method with ``respond(handler) -> (status, headers, body)``."""

    def __init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a CDN API answers
            disable_nagle_algorithm = True  # else headers and body meet delayed ACKs: 40 ms

            def _any(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, payload = owner.respond(self, body)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PURGE = do_HEAD = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def respond(
        self, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class RecordingServer(LoopbackServer):
    """Records requests; answers with the scripted replies first, then ``default``."""

    def __init__(self, default: Reply | None = None) -> None:
        super().__init__()
        self.default = default or Reply()
        self.requests: list[Recorded] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, in order."""
        with self._lock:
            self._script.extend(replies)

    def respond(
        self, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        raw = tuple((k.lower(), v) for k, v in _raw_headers(handler))
        recorded = Recorded(handler.command, handler.path, dict(raw), body, time.monotonic(), raw)
        with self._lock:
            self.requests.append(recorded)
            reply = self._script.popleft() if self._script else self.default
        if reply.delay:
            time.sleep(reply.delay)
        return reply.status, {"Content-Type": "application/json", **reply.headers}, reply.body


def _raw_headers(handler: BaseHTTPRequestHandler) -> list[tuple[str, str]]:
    # http.server decodes header lines as latin-1; the purgers send UTF-8 tags.
    return [
        (name, value.encode("latin-1", "replace").decode("utf-8", "replace"))
        for name, value in handler.headers.items()
    ]
