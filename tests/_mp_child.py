"""A child process for the multi-process tests: one ISR instance, N concurrent callers.

    python -m tests._mp_child URL NAMESPACE WORKDIR CALLERS [--offset S] [--loader-sleep S]
        [--lock-ttl S] [--timeout S] [--l1] [--gated]

It waits for WORKDIR/go to exist (so every child starts together), then runs CALLERS
concurrent lookups of one key and prints their statuses and values as JSON. Each origin
call appends one byte to WORKDIR/calls, so the parent counts calls across processes.
``--offset`` moves this process's clock forward (to find an entry stale without waiting).
``--timeout`` is the loader's ``timeout`` (none by default).
``--gated``: once every caller of this process has asked (each one has its answer or waits
for the one fetch), the child writes WORKDIR/ready-PID, and the origin answers only once
WORKDIR/release exists, which the parent makes when every child is ready: so no caller can
come late to a fetch, however loaded the machine, and "every caller shares the one fetch"
is checked exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import anyio

import isr


def count_call(path: Path) -> None:
    """One byte per origin call, appended atomically: the parent counts them."""
    with open(path, "ab") as calls:
        calls.write(b"x")


def wait_for(path: Path) -> None:
    while not path.exists():
        time.sleep(0.005)


async def main(args: argparse.Namespace) -> None:
    work = Path(args.workdir)
    offset = args.offset
    runtime = isr.ISR(
        args.url,
        namespace=args.namespace,
        clock=lambda: time.time() + offset,
        lock_ttl=args.lock_ttl,
        l1=args.l1,
    )

    @runtime.with_revalidate("page:{slug}", ttl=60, swr=None, timeout=args.timeout)
    async def page(slug: str) -> dict[str, object]:
        count_call(work / "calls")
        if args.gated:
            await anyio.to_thread.run_sync(wait_for, work / "release")
        await anyio.sleep(args.loader_sleep)
        return {"slug": slug, "pid": os.getpid()}

    # Set up first (connections, an L1's bus), then wait for the go with the others, so that
    # every child's callers really ask at the same moment.
    if not await runtime.wait_ready(10):
        raise RuntimeError("the store did not get ready")
    await anyio.to_thread.run_sync(wait_for, work / "go")
    results: list[isr.Result[dict[str, object]]] = []

    async def call() -> None:
        results.append(await page.lookup("home"))

    async with anyio.create_task_group() as tg:
        for _ in range(args.callers):
            tg.start_soon(call)
        if args.gated:
            # Every caller has asked: each has its answer, or waits for the one fetch
            # (one leads it, the others joined it), and nothing is mid-read.
            while True:
                await anyio.wait_all_tasks_blocked()
                joined = runtime.stats().coalesced == args.callers - 1
                if len(results) == args.callers or joined:
                    break
                await anyio.sleep(0.01)
            (work / f"ready-{os.getpid()}").touch()
    await runtime.aclose()
    json.dump([[r.status.value, r.value] for r in results], sys.stdout)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("namespace")
    parser.add_argument("workdir")
    parser.add_argument("callers", type=int)
    parser.add_argument("--offset", type=float, default=0.0)
    parser.add_argument("--loader-sleep", type=float, default=0.2)
    parser.add_argument("--lock-ttl", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=None, help="the loader's timeout")
    parser.add_argument("--l1", action="store_true", help="a memory L1 over Redis")
    parser.add_argument("--gated", action="store_true", help="the origin waits for release")
    anyio.run(main, parser.parse_args())
