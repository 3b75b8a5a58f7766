"""What the test servers share: ``with Server() as s`` starts one and closes it, and the
child processes they run are stopped the same way."""

from __future__ import annotations

import subprocess
from types import TracebackType

from typing_extensions import Self

__all__ = ["Started", "reap", "stop_process"]


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
