"""A real varnishd (with the xkey vmod of varnish-modules) on a free loopback port, in
front of a backend on loopback, running ``tests/varnish.vcl``.

No fakes: the Varnish purger is tested against the cache it will meet. CI installs the
Debian packages ``varnish`` and ``varnish-modules``; without them these tests fail with a
clear message rather than being skipped.

varnishd runs in the foreground (``-F``) in its own session, with a private working
directory (``-n``), no management port (``-T none``) and ``-j none``: started as root it
would otherwise drop to the ``varnish``/``vcache`` users, which cannot read the private
temporary directory holding the VCL. ``stop()`` (also on ``__exit__``) terminates the
session, then kills it after a deadline; on Linux the manager also gets SIGTERM if the test
process dies first (``PR_SET_PDEATHSIG``), so no varnishd outlives the tests.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._started import Started
from .redis_server import free_port

__all__ = ["VCL", "VarnishServer"]

VCL = Path(__file__).with_name("varnish.vcl")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    PR_SET_PDEATHSIG = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _binary() -> str:
    found = shutil.which("varnishd") or shutil.which("varnishd", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise RuntimeError(
            "varnishd is not installed: the Varnish tests need a real Varnish with the xkey "
            "vmod (apt-get install -y varnish varnish-modules)"
        )
    return found


class VarnishServer(Started):
    """``with VarnishServer(backend_port) as varnish: varnish.url``."""

    def __init__(self, backend_port: int, *, vcl: Path = VCL, start_within: float = 20.0) -> None:
        self.binary = _binary()
        self.backend_port = backend_port
        self.start_within = start_within
        self._dir = tempfile.TemporaryDirectory(prefix="isr-varnish-")
        self._vcl = Path(self._dir.name) / "test.vcl"
        self._vcl.write_text(vcl.read_text().replace("${BACKEND_PORT}", str(backend_port)))
        self._log = Path(self._dir.name) / "varnishd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.url = ""

    def start(self) -> None:
        deadline = time.monotonic() + self.start_within
        for _ in range(3):  # a free port may be taken between the check and the bind
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            if self._launch(deadline):
                return
        raise RuntimeError(f"varnishd did not start:\n{self._log.read_text()[-2000:]}")

    def _launch(self, deadline: float) -> bool:
        with self._log.open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    self.binary,
                    "-F",
                    "-j",
                    "none",
                    "-n",
                    str(Path(self._dir.name) / "work"),
                    "-f",
                    str(self._vcl),
                    "-a",
                    f"127.0.0.1:{self.port}",
                    "-T",
                    "none",
                    "-s",
                    "malloc,32m",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                return False
            if self._answers():
                return True
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"varnishd did not answer on port {self.port} within {self.start_within:g} s:\n"
            f"{self._log.read_text()[-2000:]}"
        )

    def _answers(self) -> bool:
        # A PURGE without a key header is answered by the VCL itself (400), no backend.
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=0.5)
        try:
            conn.request("PURGE", "/")
            return conn.getresponse().status == 400
        except OSError:
            return False
        finally:
            conn.close()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        # The cache child is in the same session: make sure it is gone too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()
