"""Shared machinery: interleaved timing rounds, medians, ratios, targets and the report table.

Every timed figure follows one recipe. Each contender is first calibrated to a call count
``n`` that takes about ``Settings.budget`` seconds. Then come ``Settings.rounds`` rounds; in
each round every contender runs its ``n`` calls once, the starting contender rotating from
round to round, so a burst of noise on a busy machine hits all of them alike. A contender's
figure is the median of its per-call times over the rounds; its ratio to a baseline is the
median of the per-round ratios (each round's time over the baseline's time in the same round),
which cancels the slow drifts a shared machine has. The garbage collector is off while timing,
as ``timeit`` does.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from time import perf_counter

__all__ = [
    "ARG",
    "AsyncFn",
    "Row",
    "Samples",
    "Section",
    "Settings",
    "SyncFn",
    "gc_paused",
    "interleave_async",
    "interleave_sync",
    "median",
    "paired_ratio",
    "print_report",
    "progress",
    "time_async",
    "time_sync",
    "write_json",
]

SyncFn = Callable[[str], object]
AsyncFn = Callable[[str], Awaitable[object]]
Samples = dict[str, list[float]]
"""Per-call seconds of each contender, one figure per round."""

#: The argument every timed call gets: every contender reads the same single key.
ARG = "a"


@dataclass(frozen=True)
class Settings:
    """How hard to measure: the full run, or the smoke run of ``--quick``."""

    quick: bool
    rounds: int
    budget: float
    """Seconds one measurement of one contender should take (sets its call count)."""
    repeats: int
    """Repetitions of the concurrency scenarios."""
    entries: int
    """Entries in the memory section."""

    @classmethod
    def make(cls, *, quick: bool) -> Settings:
        if quick:
            return cls(quick=True, rounds=3, budget=0.002, repeats=2, entries=10_000)
        return cls(quick=False, rounds=15, budget=0.02, repeats=7, entries=100_000)


@dataclass(frozen=True)
class Row:
    """One line of the report. ``value`` None means not measured (``note`` says why)."""

    name: str
    value: float | None
    unit: str
    ratio: float | None = None
    target: str = ""
    passed: bool | None = None
    """None: informational, no target."""
    note: str = ""


@dataclass
class Section:
    title: str
    baseline: str
    """What the ratio column divides by, and why."""
    rows: list[Row] = field(default_factory=list)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def paired_ratio(samples: Samples, name: str, baseline: str) -> float:
    """Median over rounds of ``name``'s time divided by ``baseline``'s time in that round."""
    return median([a / b for a, b in zip(samples[name], samples[baseline], strict=True)])


@contextmanager
def gc_paused() -> Iterator[None]:
    """Collect now, then keep the cyclic collector off (as ``timeit`` does)."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def time_sync(fn: SyncFn, n: int) -> float:
    """Seconds per call of ``n`` calls of ``fn(ARG)``."""
    arg = ARG
    start = perf_counter()
    for _ in range(n):
        fn(arg)
    return (perf_counter() - start) / n


async def time_async(fn: AsyncFn, n: int) -> float:
    """Seconds per call of ``n`` awaited calls of ``fn(ARG)``: the loop every async
    contender, the floor included, is measured in (asyncio and trio alike)."""
    arg = ARG
    start = perf_counter()
    for _ in range(n):
        await fn(arg)
    return (perf_counter() - start) / n


def _next_n(n: int, per_call: float, budget: float) -> int | None:
    """The calibrated call count once ``n`` calls took long enough to judge; else None."""
    if per_call * n >= budget / 4:
        return max(1, round(budget / per_call))
    return None


def _rotated(names: Sequence[str], shift: int) -> list[str]:
    k = shift % len(names)
    return [*names[k:], *names[:k]]


def interleave_sync(fns: dict[str, SyncFn], settings: Settings) -> Samples:
    """Time each sync contender over interleaved rounds (see the module docstring)."""
    counts: dict[str, int] = {}
    with gc_paused():
        for name, fn in fns.items():
            n = 16
            while (found := _next_n(n, time_sync(fn, n), settings.budget)) is None:
                n *= 4
            counts[name] = found
        samples: Samples = {name: [] for name in fns}
        for r in range(settings.rounds):
            for name in _rotated(list(fns), r):
                samples[name].append(time_sync(fns[name], counts[name]))
    return samples


async def interleave_async(fns: dict[str, AsyncFn], settings: Settings) -> Samples:
    """`interleave_sync` for async contenders, awaited in the running loop (any library)."""
    counts: dict[str, int] = {}
    with gc_paused():
        for name, fn in fns.items():
            n = 16
            while (found := _next_n(n, await time_async(fn, n), settings.budget)) is None:
                n *= 4
            counts[name] = found
        samples: Samples = {name: [] for name in fns}
        for r in range(settings.rounds):
            for name in _rotated(list(fns), r):
                samples[name].append(await time_async(fns[name], counts[name]))
    return samples


def progress(message: str) -> None:
    """A progress line on stderr, so that stdout holds the report alone."""
    print(message, file=sys.stderr, flush=True)


def _fmt_value(row: Row) -> str:
    if row.value is None:
        return "-"
    if row.unit in ("ns/call", "B/entry"):
        return f"{row.value:,.0f} {row.unit}"
    if row.unit in ("ms", "us"):
        return f"{row.value:,.2f} {row.unit}"
    return f"{row.value:g} {row.unit}".rstrip()


def _verdict(row: Row) -> str:
    if row.passed is None:
        return ""
    return "PASS" if row.passed else "FAIL"


def _cells(row: Row) -> tuple[str, ...]:
    ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
    return (row.name, _fmt_value(row), ratio, row.target, _verdict(row), row.note)


def print_report(sections: Sequence[Section], settings: Settings) -> None:
    """The whole report, one aligned table per section, and a PASS/FAIL summary."""
    header = ("contender", "median", "ratio", "target", "result", "note")
    mode = "quick smoke run" if settings.quick else "full run"
    print(
        f"isr-runtime benchmarks ({mode}: {settings.rounds} rounds, "
        f"~{settings.budget * 1e3:g} ms a measurement; Python {sys.version.split()[0]})"
    )
    table = [_cells(row) for section in sections for row in section.rows]
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in (1, 2) else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    for section in sections:
        print()
        print(f"== {section.title}")
        print(f"   ratio: {section.baseline}")
        print(line(header))
        print(line(["-" * w for w in widths]))
        for row in section.rows:
            print(line(_cells(row)))
    judged = [row for s in sections for row in s.rows if row.passed is not None]
    failed = [row.name for row in judged if not row.passed]
    print()
    print(
        f"targets: {len(judged) - len(failed)}/{len(judged)} pass"
        + (f"; FAIL: {', '.join(failed)}" if failed else "")
    )


def write_json(path: Path, sections: Sequence[Section], settings: Settings) -> None:
    data = {
        "python": sys.version.split()[0],
        "quick": settings.quick,
        "rounds": settings.rounds,
        "sections": [asdict(s) for s in sections],
    }
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
