"""The few real differences between the async and the sync drivers, as named primitives.

The drivers (``isr/_async/driver.py``, and ``isr/_sync/driver.py`` generated from it) are
written once; where waiting, spawning, sleeping, shielding or timing out differ between an
event loop and threads, they call one of these. Each async primitive has a sync twin of the
same shape: the generator (``python -m tests.unasync``) renames ``AsyncX`` to ``X`` and
``async_x`` to ``x``. As in httpcore's ``_synchronization.py``, the sync side of shielding is
a documented no-op, and so is the sync side of `async_fail_after`: a thread cannot be
interrupted, so the sync driver runs a loader that has a timeout on its refresh pool and
waits for it with the timeout instead (`RUNS_TIMEOUTS_INLINE`).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import anyio.to_thread

from isr.adapters.base import Adapter, ThreadedStore

from ._errors import warn
from ._spawn import spawn_detached

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from ._loader import Loader

__all__ = [
    "ASYNC_RUNS_TIMEOUTS_INLINE",
    "RUNS_TIMEOUTS_INLINE",
    "AsyncEvent",
    "AsyncShieldCancellation",
    "AsyncSpawner",
    "Event",
    "ShieldCancellation",
    "Spawner",
    "async_warn_blocking",
    "async_fail_after",
    "async_run_blocking",
    "async_sleep",
    "async_usable",
    "warn_blocking",
    "fail_after",
    "run_blocking",
    "sleep",
    "usable",
]

T = TypeVar("T")

#: Whether a loader with a ``timeout`` may run in the caller's own task, cancelled when the
#: timeout passes (async: yes) or must run elsewhere while the caller waits (sync: a thread
#: cannot be cancelled, so it runs on the refresh pool and its late value is still stored).
ASYNC_RUNS_TIMEOUTS_INLINE = True
RUNS_TIMEOUTS_INLINE = False


class AsyncEvent:
    """A one-shot event an async caller waits on, at most ``timeout`` seconds."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - as Event's
        """Wait until set (True), or until ``timeout`` seconds passed (False)."""
        if timeout is None:
            await self._event.wait()
            return True
        with anyio.move_on_after(timeout):
            await self._event.wait()
        return self._event.is_set()


class Event:
    """`AsyncEvent` for threads."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until set (True), or until ``timeout`` seconds passed (False)."""
        return self._event.wait(timeout)


class AsyncShieldCancellation:
    """Shield a block from the caller's cancellation (a lock must still be handed back)."""

    __slots__ = ("_scope",)

    def __init__(self) -> None:
        self._scope = anyio.CancelScope(shield=True)

    def __enter__(self) -> None:
        self._scope.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._scope.__exit__(*exc)  # type: ignore[arg-type]


class ShieldCancellation:
    """`AsyncShieldCancellation` for threads: a no-op, as nothing cancels a thread."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def async_fail_after(seconds: float | None) -> AbstractContextManager[object]:
    """Cancel the block and raise TimeoutError after ``seconds`` (None: no limit)."""
    return anyio.fail_after(seconds)


def fail_after(seconds: float | None) -> AbstractContextManager[object]:
    """`async_fail_after` for threads: a no-op (see the module docstring)."""
    return nullcontext()


def async_warn_blocking(loader: Loader[Any], key: str) -> None:
    """An async caller is about to wait for a load of ``key``: nothing to say, it awaits."""


def warn_blocking(loader: Loader[Any], key: str) -> None:
    """A sync caller is about to wait for a load of ``key``: if it is inside a running event
    loop (asyncio's or trio's), that loop stops until the origin answers. Say so, once per
    function, naming the async spelling (`isr.ISRWarning`)."""
    if loader.warned or not _in_event_loop():
        return
    loader.warned = True
    warn(
        f"{loader.name}() is cached by isr as a sync function and was called inside a running "
        f"event loop: its load of {key!r} blocks the loop (every other task waits) until the "
        f"origin answers. {loader.async_hint}, or call it in a worker thread "
        "(anyio.to_thread.run_sync). Said once per function."
    )


def _in_event_loop() -> bool:
    """Whether this thread is running an asyncio or a trio event loop."""
    if asyncio._get_running_loop() is not None:
        return True
    trio = sys.modules.get("trio")
    in_trio_run = getattr(getattr(trio, "lowlevel", None), "in_trio_run", None)
    return bool(in_trio_run is not None and in_trio_run())


def async_usable(adapter: Adapter) -> Adapter:
    """``adapter`` as async code on this backend can use it: itself, or for an
    ``asyncio_only`` store off asyncio (trio), its sync methods in worker threads."""
    if adapter.asyncio_only and asyncio._get_running_loop() is None:
        return cast(Adapter, ThreadedStore(adapter))
    return adapter


def usable(adapter: Adapter) -> Adapter:
    """`async_usable` for threads: the store itself."""
    return adapter


async def async_sleep(seconds: float) -> None:
    await anyio.sleep(seconds)


def sleep(seconds: float) -> None:
    time.sleep(seconds)


async def async_run_blocking(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call (waiting on a thread event, say) without blocking the loop."""
    return await anyio.to_thread.run_sync(fn, *args)


def run_blocking(fn: Callable[..., T], *args: Any) -> T:
    return fn(*args)


class AsyncSpawner:
    """Starts background work: in the runtime's task group while it is entered, else
    detached on the running loop (see ``isr._spawn``)."""

    def __init__(self, workers: int) -> None:
        self.task_group: TaskGroup | None = None

    def start(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        """Run ``fn(*args)``, which must not raise, in the background."""
        if self.task_group is not None:
            self.task_group.start_soon(fn, *args)
        else:
            spawn_detached(lambda: fn(*args))

    def shutdown(self, wait: bool = True) -> None:
        """Nothing to stop: tasks end with their work (`ISR.drain` waits for them)."""


class Spawner:
    """`AsyncSpawner` for threads: a pool of ``workers`` threads, made on first use."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def start(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)``, which must not raise, on the pool."""
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="isr-refresh")
                pool = self._pool
        pool.submit(fn, *args)

    def shutdown(self, wait: bool = True) -> None:
        """Stop the pool's threads (after their work, with ``wait``)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait)
