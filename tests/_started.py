"""What the test servers share: ``with Server() as s`` starts one and closes it, and the
child processes they run are stopped the same way (a `Process` logs its output to a file,
quoted when it fails)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from types import TracebackType

import httpx
from typing_extensions import Self

__all__ = ["Process", "Started", "reap", "stop_process", "wait_answering"]


class Started:
    """A server used as ``with Server() as s``: `start` on entry, `close` on exit."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop; a server that leaves files behind removes them here too."""
        self.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def reap(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Wait for a terminated child to exit; kill it after ``grace`` seconds."""
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop_process(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Terminate a child if it still runs, and reap it (`reap`)."""
    if proc.poll() is None:
        proc.terminate()
        reap(proc, grace)


class Process:
    """A child process whose output goes to a log file, quoted when it fails."""

    def __init__(
        self,
        name: str,
        args: list[str],
        log: Path,
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env
            )

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with status {self.proc.returncode}:\n{self.output()}"
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        stop_process(self.proc, 10)


def wait_answering(url: str, process: Process, deadline: float) -> None:
    """Until ``url`` answers 200, with a clear error if the process dies or the time is up
    (``deadline``, on `time.monotonic`)."""
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        while True:
            process.check_alive()
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{process.name} did not answer {url} in time:\n{process.output()}"
                )
            time.sleep(0.05)
