"""Concurrency for tests written once for async code and generated for sync code.

``AsyncTaskGroup`` (an anyio task group) and ``TaskGroup`` (threads, joined on exit) start
callers the same way; ``async_wait_until`` / ``wait_until`` poll a condition instead of
sleeping a guessed time. The generator (``python -m tests.unasync``) renames one to the other.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup as AnyioTaskGroup

__all__ = ["AsyncTaskGroup", "TaskGroup", "async_wait_until", "wait_until"]

#: How long a condition may take to come true before the test fails.
PATIENCE = 20.0


class AsyncTaskGroup:
    """An anyio task group: ``start_soon`` callers; leaving the block waits for them."""

    async def __aenter__(self) -> AsyncTaskGroup:
        self._group: AnyioTaskGroup = anyio.create_task_group()
        await self._group.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._group.__aexit__(exc_type, exc, tb)

    def start_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        self._group.start_soon(fn, *args)


class TaskGroup:
    """`AsyncTaskGroup` for threads: each caller runs in a thread of its own; leaving the
    block joins them and raises the first exception one of them raised."""

    def __enter__(self) -> TaskGroup:
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        for thread in self._threads:
            thread.join(PATIENCE)
            assert not thread.is_alive(), "a caller thread never finished"
        if self._errors and exc is None:
            raise self._errors[0]
        return None

    def start_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        def run() -> None:
            try:
                fn(*args)
            except BaseException as error:  # reported when the block is left
                self._errors.append(error)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self._threads.append(thread)


async def async_wait_until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds (fail the test after `PATIENCE` seconds)."""
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await anyio.sleep(0.001)


def wait_until(condition: Callable[[], bool]) -> None:
    """`async_wait_until` for threads."""
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.001)
