"""A real gunicorn serving a WSGI app on a free loopback port, for the WSGI edge's tests.

with Gunicorn("tests._wsgi_sites:flask_app()") as server:
    httpx.get(server.url + "/posts/hi")
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ._started import Started, stop_process

__all__ = ["Gunicorn"]

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gunicorn(Started):
    """``gunicorn`` with one ``gthread`` worker (4 threads), as a small production site
    runs it; ``url`` is its base URL once started."""

    def __init__(self, app: str, *, threads: int = 4, probe: str = "/_seen") -> None:
        self.app = app
        self.threads = threads
        self.probe = probe
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.printed = ""

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                "1",
                "--worker-class",
                "gthread",
                "--threads",
                str(self.threads),
                "--log-level",
                "warning",
                "--graceful-timeout",
                "5",
                self.app,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited at startup:\n{self.output()}")
            try:
                if httpx.get(self.url + self.probe, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gunicorn did not answer within 30 s:\n{self.output()}")

    def output(self) -> str:
        """What gunicorn printed (it is stopped first)."""
        self.stop()
        return self.printed[-5000:]

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 10)
            stdout = self.proc.stdout
            if stdout is not None and not stdout.closed:
                self.printed += stdout.read().decode(errors="replace")
                stdout.close()
