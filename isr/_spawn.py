"""Starting a background refresh when no task group is at hand.

A runtime entered with ``async with`` runs its refreshes in its own anyio task group. Used
without one (the module-level default runtime, say), a refresh still needs somewhere to run:
on asyncio a task the runtime keeps a strong reference to, on trio a system task. The coroutine
handed in must not raise (the runtime's refresh catches, logs and counts everything), so no
"exception was never retrieved" can occur and trio's run is never brought down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["current_async_library", "spawn_detached"]

_tasks: set[asyncio.Task[None]] = set()


def current_async_library() -> str:
    try:
        import sniffio
    except ImportError:  # trio needs sniffio, so without it this is asyncio
        return "asyncio"
    return sniffio.current_async_library()


def spawn_detached(fn: Callable[[], Awaitable[None]]) -> None:
    """Run ``fn()`` in the background of the running event loop (asyncio or trio)."""
    if current_async_library() == "trio":
        import trio

        trio.lowlevel.spawn_system_task(fn)
        return

    async def run() -> None:
        await fn()

    task = asyncio.get_running_loop().create_task(run())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
