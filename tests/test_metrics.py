"""Metrics and spans, read as an operator's collector reads them: the OpenTelemetry SDK's
in-memory reader and span exporter set as the global providers, once for the session (the
providers are process-wide). Each test names its own functions: counts are per process."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import uuid
from typing import Any

import anyio
import httpx
import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import isr
from isr import Status
from isr.asgi import ISRMiddleware, Rule

from ._asgi_apps import Origin, client
from .conftest import FakeClock


class Collector:
    """The global providers' in-memory reader and span exporter."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.spans = InMemorySpanExporter()

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        assert data is not None
        found: list[Any] = []
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                if scope.scope.name != "isr":
                    continue
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def counts(self, name: str, **where: str) -> dict[str, int]:
        """A counter's values whose attributes include ``where``, by ``isr.status`` (or
        by the one other attribute)."""
        out: dict[str, int] = {}
        for point in self.points(name):
            attributes = dict(point.attributes)
            if all(attributes.get(k.replace("_", ".", 1)) == v for k, v in where.items()):
                rest = [v for k, v in attributes.items() if k.replace(".", "_", 1) not in where]
                out[str(rest[0]) if len(rest) == 1 else str(rest)] = point.value
        return out


def grown(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """What a counter's values grew by (a test parametrized by backend reuses its names)."""
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


@pytest.fixture(scope="session")
def otel() -> Collector:
    collector = Collector()
    metrics.set_meter_provider(MeterProvider(metric_readers=[collector.reader]))
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(collector.spans))
    trace.set_tracer_provider(tracing)
    return collector


def test_calls_are_counted_by_function_and_status_at_collection(
    otel: Collector, clock: FakeClock
) -> None:
    with isr.ISR(clock=clock, backoff=0.001) as rt:
        fail: list[Exception] = []

        @rt.with_revalidate("m1:{x}", ttl=10, swr=5, stale_if_error=100)
        def counted(x: int) -> int:
            if fail:
                raise fail[0]
            return x

        counted(1)  # MISS
        counted(1)  # HIT (the hot path)
        counted.lookup(1)  # HIT
        clock.advance(10)
        counted(1)  # STALE (refreshed in the background)
        rt.drain_sync()
        clock.advance(20)
        fail.append(ConnectionError("down"))
        counted(1)  # STALE-IF-ERROR
        with pytest.raises(ConnectionError):
            counted(2)  # ERROR: nothing to fall back on
        with isr.disabled(), pytest.raises(ConnectionError):
            counted(3)  # ERROR, the cache off
        fail.clear()
        with isr.disabled():
            counted(3)  # BYPASS
        name = counted.__qualname__
        assert otel.counts("isr.calls", isr_function=name) == {
            "MISS": 1,
            "HIT": 2,
            "STALE": 1,
            "STALE-IF-ERROR": 1,
            "ERROR": 2,
            "BYPASS": 1,
        }


@pytest.mark.anyio
async def test_async_answers_and_the_call_site_form_are_counted(
    otel: Collector, anyio_backend: str, clock: FakeClock
) -> None:
    async with isr.ISR(clock=clock) as rt:

        @rt.with_revalidate("m2:{x}", ttl=10)
        async def twice(x: int) -> int:
            return 2 * x

        before = otel.counts("isr.calls", isr_function=twice.__qualname__)

        await twice(1)
        await twice(1)
        clock.advance(10)
        await twice(1)  # STALE, answered without awaiting (the quick answer)
        await rt.drain()
        for _ in range(3):
            await rt.revalidating("m2-site", 10, lambda: twice(5), name=f"site-{anyio_backend}")
    assert grown(before, otel.counts("isr.calls", isr_function=twice.__qualname__)) == {
        "MISS": 2,  # one of them the call site's fetch of twice(5)
        "HIT": 1,
        "STALE": 1,
    }
    assert otel.counts("isr.calls", isr_function=f"site-{anyio_backend}") == {"MISS": 1, "HIT": 2}


def test_answers_past_the_hot_path_are_counted_too(otel: Collector, redis_server: Any) -> None:
    """On Redis every answer comes from the runtime's slow path (no copy in this process)."""
    with isr.ISR(redis_server.url, namespace=f"metrics-{uuid.uuid4().hex}") as rt:

        @rt.with_revalidate("m5:{x}", ttl=60)
        def remote(x: int) -> int:
            return x

        for _ in range(3):
            remote(1)
    assert otel.counts("isr.calls", isr_function=remote.__qualname__) == {"MISS": 1, "HIT": 2}


def test_counters_never_go_back_when_a_runtime_goes_away(otel: Collector) -> None:
    def run() -> str:
        rt = isr.ISR()

        @rt.with_revalidate("m3:{x}", ttl=10)
        def gone(x: int) -> int:
            return x

        for _ in range(5):
            gone(1)
        rt.close()
        return gone.__qualname__

    name = run()
    before = otel.counts("isr.calls", isr_function=name)
    gc.collect()
    assert otel.counts("isr.calls", isr_function=name) == before == {"MISS": 1, "HIT": 4}


def test_a_closed_runtime_counts_even_when_collected_before_the_metrics_are_read(
    otel: Collector,
) -> None:
    """A short-lived runtime (a script's, a test's) counts, although no collection of the
    metrics happened while it lived."""

    def run() -> str:
        rt = isr.ISR()

        @rt.with_revalidate("m3b:{x}", ttl=10)
        def brief(x: int) -> int:
            return x

        for _ in range(3):
            brief(1)
        rt.close()
        return brief.__qualname__

    name = run()
    gc.collect()  # the runtime, its loaders and its store are gone
    assert otel.counts("isr.calls", isr_function=name) == {"MISS": 1, "HIT": 2}


@pytest.mark.anyio
async def test_loader_runs_are_timed_and_traced(otel: Collector, anyio_backend: str) -> None:
    otel.spans.clear()
    async with isr.ISR() as rt:

        @rt.with_revalidate(f"m4-{anyio_backend}:{{x}}", ttl=0, swr=None, timeout=0.05)
        async def slow(x: int) -> int:
            if x == 2:
                raise LookupError("no such thing")
            if x == 3:
                await anyio.sleep(5)
            return x

        slow.__isr_loader__.label = f"slow-{anyio_backend}"  # type: ignore[attr-defined]

        await slow(1)
        await slow(1)  # STALE: a background refresh
        await rt.drain()
        with pytest.raises(LookupError):
            await slow(2)
        with pytest.raises(TimeoutError):
            await slow(3)
    durations = {
        dict(p.attributes)["isr.outcome"]: p
        for p in otel.points("isr.loader.duration")
        if dict(p.attributes)["isr.function"] == f"slow-{anyio_backend}"
    }
    assert sorted(durations) == ["error", "ok", "timeout"]
    assert durations["ok"].count == 2
    assert durations["ok"].explicit_bounds[:2] == (0.005, 0.01)  # seconds, not ms buckets
    assert 0.04 < durations["timeout"].sum < 2
    spans = [s for s in otel.spans.get_finished_spans() if s.name == "isr.load"]
    seen = [(s.attributes["isr.key"], s.attributes["isr.status"]) for s in spans]  # type: ignore[index]
    key = f"m4-{anyio_backend}:"
    assert seen == [
        (key + "1", "MISS"),
        (key + "1", "STALE"),
        (key + "2", "MISS"),
        (key + "3", "MISS"),
    ]
    assert spans[2].status.status_code is trace.StatusCode.ERROR
    assert spans[2].events[0].name == "exception"  # the origin's error, recorded


def test_invalidations_and_store_errors_are_counted(otel: Collector) -> None:
    before = otel.counts("isr.invalidations", isr_scope="tag")
    with isr.ISR() as rt:
        rt.invalidate_sync("k")
        rt.invalidate_tag_sync("t", mode="purge")
        rt.invalidate_tag_sync("t", mode="purge")
        rt.invalidate_all_sync(mode="revalidate")
    assert otel.counts("isr.invalidations", isr_scope="tag").get("purge", 0) == (
        before.get("purge", 0) + 2
    )
    assert otel.counts("isr.invalidations", isr_scope="key")["expire"] >= 1
    assert otel.counts("isr.invalidations", isr_scope="all")["revalidate"] >= 1
    with isr.ISR("redis://127.0.0.1:1/0?timeout=0.05") as unreachable:
        assert unreachable.revalidating_sync("k", 10, lambda: "v") == "v"
        assert unreachable.stats().store_errors >= 1
    assert otel.counts("isr.store.errors")["redis"] >= 1


@pytest.mark.anyio
async def test_the_page_middlewares_calls_are_counted_under_the_route(
    otel: Collector, anyio_backend: str
) -> None:
    path = f"/metrics-{anyio_backend}/{{slug}}"
    async with isr.ISR() as rt:
        app = ISRMiddleware(Origin(), rt, [Rule(path, ttl=60)], origin="http://test")
        async with client(app) as c:
            answers: list[httpx.Response] = [
                await c.get(f"/metrics-{anyio_backend}/a") for _ in range(4)
            ]
            await c.get(f"/metrics-{anyio_backend}/a", headers={"authorization": "Bearer x"})
    assert [r.headers["x-cache"] for r in answers] == ["MISS", "HIT", "HIT", "HIT"]
    assert otel.counts("isr.calls", isr_function=path) == {"MISS": 1, "HIT": 3, "BYPASS": 1}


def test_without_the_extra_nothing_is_imported_and_everything_works() -> None:
    code = textwrap.dedent(
        """
        import sys

        class Hide:  # opentelemetry is not installed, as far as this process can tell
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ModuleNotFoundError(name)
                return None

        sys.meta_path.insert(0, Hide())
        import isr

        rt = isr.ISR()

        @rt.with_revalidate("k:{x}", ttl=60)
        def load(x):
            return x

        assert load(1) == 1 and load.lookup(1).status is isr.Status.HIT
        assert not [m for m in sys.modules if m.startswith("opentelemetry")]
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.stdout.strip() == "ok", done.stderr


def test_importing_isr_imports_no_opentelemetry_until_a_runtime_is_made() -> None:
    code = (
        "import sys, isr\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')]\n"
        "isr.ISR()\n"
        "assert 'opentelemetry.metrics' in sys.modules\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.stdout.strip() == "ok", done.stderr
    assert Status.HIT  # the statuses the counters carry are the enum's values
