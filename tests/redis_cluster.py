"""A real three-node Redis (or Valkey) Cluster on loopback for the tests: started on free
ports, joined with ``redis-cli --cluster create``, stopped after.

No fakes, as with `tests.redis_server.RedisServer`: the adapter's ``cluster=true`` mode is
tested against the slot routing (MOVED replies, keys of one command on one node) it will
meet in production. Three masters, no replicas: every slot is served, which is all the
adapter needs.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ._started import Started, reap
from .redis_server import Flavour, free_port, server_binary, server_info

__all__ = ["RedisCluster"]

#: How long the nodes may take to answer, and the cluster to agree it is ``ok``.
START_DEADLINE = 20.0


def _command(port: int, *args: str, timeout: float = 0.5) -> bytes | None:
    """One command sent to the node on ``port`` (RESP), its raw reply; None if it did not
    answer. Enough for PING and CLUSTER INFO without a client library."""
    request = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args
    )
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.sendall(request)
            reply = b""
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                reply += chunk
                if reply.startswith((b"+", b"-", b":")) and reply.endswith(b"\r\n"):
                    break
                if reply.startswith(b"$"):  # a bulk string: its length, then the bytes
                    head, _, body = reply.partition(b"\r\n")
                    if len(body) >= int(head[1:]) + 2:
                        break
            return reply
    except (OSError, ValueError):
        return None


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (`free_port` may hand one out twice)."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


class RedisCluster(Started):
    """``with RedisCluster() as cluster: cluster.url`` (``redis://…/0?cluster=true``).

    Three redis-server processes in cluster mode, each in its own temporary directory (a
    node writes its ``nodes.conf`` there), joined into one cluster of three masters that
    share the 16384 slots. ``ports`` lists the nodes' ports, the first being the one the
    URL names (redis-py's cluster client finds the others from it).
    """

    def __init__(self, flavour: Flavour = "redis", nodes: int = 3) -> None:
        cli = shutil.which("redis-cli")  # Debian's redis-cli joins Valkey nodes as well
        if cli is None:
            raise RuntimeError(
                "redis-cli is not installed: the Cluster tests need it to join the nodes "
                "(apt-get install -y redis-server)"
            )
        self.flavour = flavour
        self.binary, self.cli = server_binary(flavour), cli
        # Each node needs a client port and a cluster bus port, chosen here too: the default
        # bus port (client port + 10000) may be taken, or past 65535 for a high free port.
        ports = _free_ports(2 * nodes)
        self.ports, self._bus_ports = ports[:nodes], ports[nodes:]
        # A command timeout for a loaded CI machine (three nodes and the runtime on 2 cores):
        # these tests check what the store does on a cluster, not how fast it answers, and
        # assert no store errors; the default 0.25 s was seen exceeded under load.
        self.url = f"redis://127.0.0.1:{self.ports[0]}/0?cluster=true&timeout=2"
        self._dirs: list[tempfile.TemporaryDirectory[str]] = []
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        """Start the nodes, join them, and wait for every node to report ``cluster_state:ok``;
        raise RuntimeError (having stopped what was started) if that takes past the
        deadline."""
        deadline = time.monotonic() + START_DEADLINE
        try:
            for port, bus in zip(self.ports, self._bus_ports, strict=True):
                self._start_node(port, bus)
            for port in self.ports:
                self._wait(deadline, port, "answer PING", self._pong)
            self._create(deadline)
            for port in self.ports:
                self._wait(deadline, port, "report cluster_state:ok", self._ok)
            for port in self.ports:  # none exited meanwhile (e.g. its port taken after all)
                self._wait(deadline, port, "keep running", lambda _: True)
            for port in self.ports:
                self._wait(deadline, port, f"say it is {self.flavour}", self._flavoured)
        except BaseException:
            self.stop()
            raise

    def _start_node(self, port: int, bus: int) -> None:
        folder = tempfile.TemporaryDirectory(prefix=f"isr-redis-cluster-{port}-")
        self._dirs.append(folder)
        self._procs.append(
            subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(port),
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    str(bus),
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--bind",
                    "127.0.0.1",
                    "--protected-mode",
                    "no",
                    "--dir",
                    folder.name,
                    "--logfile",
                    "redis.log",  # in --dir; its tail is shown if the node does not come up
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    def _create(self, deadline: float) -> None:
        """``redis-cli --cluster create``: assign the slots and make the nodes meet."""
        left = max(1.0, deadline - time.monotonic())
        try:
            done = subprocess.run(
                [
                    self.cli,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{port}" for port in self.ports),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                capture_output=True,
                text=True,
                timeout=left,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"redis-cli --cluster create did not finish within {START_DEADLINE:g} s"
            ) from None
        if done.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed ({done.returncode}):\n"
                f"{done.stdout}\n{done.stderr}"
            )

    def _wait(self, deadline: float, port: int, what: str, ready: Callable[[int], bool]) -> None:
        """Poll ``ready(port)`` until it holds; RuntimeError (with the node's log) once past
        ``deadline`` or should the node's process have exited."""
        index = self.ports.index(port)
        while True:
            exited = self._procs[index].poll()
            if exited is None and ready(port):
                return
            if exited is not None or time.monotonic() > deadline:
                why = f"exited ({exited})" if exited is not None else f"within {START_DEADLINE:g} s"
                raise RuntimeError(
                    f"{self.flavour} cluster on ports {self.ports}: "
                    f"node {port} did not {what}: {why}\n"
                    f"its log ends:\n{self._log_tail(index)}"
                )
            time.sleep(0.05)

    def _log_tail(self, index: int, lines: int = 10) -> str:
        path = Path(self._dirs[index].name) / "redis.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"

    def _pong(self, port: int) -> bool:
        reply = _command(port, "PING")
        return reply is not None and reply.startswith(b"+PONG")

    def _flavoured(self, port: int) -> bool:
        return server_info(port).get("server_name", "redis") == self.flavour

    def _ok(self, port: int) -> bool:
        reply = _command(port, "CLUSTER", "INFO")
        return reply is not None and b"cluster_state:ok" in reply

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after 5 s) and remove their directories."""
        procs, self._procs = self._procs, []
        for proc in procs:
            proc.terminate()
        for proc in procs:
            reap(proc, 5)
        dirs, self._dirs = self._dirs, []
        for folder in dirs:
            folder.cleanup()
