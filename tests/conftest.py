"""Shared fixtures: a fake clock, runtimes on it, and the asyncio/trio parametrization."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

import isr


class FakeClock:
    """A clock tests move by hand: every window is crossed with ``advance``, never a sleep."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def rt(clock: FakeClock) -> AsyncIterator[isr.ISR]:
    async with isr.ISR(clock=clock) as runtime:
        yield runtime


@pytest.fixture
def srt(clock: FakeClock) -> Iterator[isr.ISR]:
    runtime = isr.ISR(clock=clock)
    yield runtime
    runtime.close()
