"""Metrics and spans through OpenTelemetry, with the ``[otel]`` extra (``opentelemetry-api``).

With the API installed, every runtime records through the *global* meter and tracer
providers (whatever the application set up: an OTLP exporter, Prometheus...), under the
meter and tracer name ``isr``:

=========================  ===================  ==========================================
``isr.calls``              counter, ``{call}``  answers, by ``isr.function`` (the decorated
                                                function's qualified name, the call site's
                                                name, or a page rule's path) and
                                                ``isr.status`` (HIT, STALE, MISS,
                                                STALE-IF-ERROR, BYPASS; ERROR: the call
                                                raised the origin's exception)
``isr.loader.duration``    histogram, ``s``     each loader run, by ``isr.function`` and
                                                ``isr.outcome`` (ok, error, timeout)
``isr.invalidations``      counter              by ``isr.scope`` (key, tag, all) and
                                                ``isr.mode`` (revalidate, expire, purge)
``isr.store.errors``       counter              store failures absorbed, by ``isr.store``
=========================  ===================  ==========================================

and a span ``isr.load`` around each loader run, with the attributes ``isr.function``,
``isr.key`` and ``isr.status`` (what started it: MISS for a fetch, STALE for a background
refresh, HIT for an early refresh, BYPASS with the cache off).

**The hot path pays nothing.** The counters are observable: the runtime counts as it always
does (a fresh hit increments the generated wrapper's ``_isr_hits``, the page middleware's
quick path its route's ``edge_hits``, the slow path each `Loader`'s tallies), and the
collector reads the counts when the application's reader asks (``_collect``). Only a loader
run, which waits on the origin anyway, is timed and wrapped in a span as it happens.

Without the extra nothing is imported and nothing is recorded: `install` finds no
``opentelemetry`` and leaves the runtime as it was. ``import isr`` imports none of it
either; the first runtime made does.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from importlib import metadata
from typing import TYPE_CHECKING, Any

from ._status import Status

if TYPE_CHECKING:
    from ._loader import Loader
    from ._runtime import ISR

__all__ = ["METER", "install"]

#: The meter's and the tracer's name.
METER = "isr"
#: ``isr.loader.duration``'s buckets, in seconds (OpenTelemetry's advice for HTTP durations;
#: the SDK's default buckets are for milliseconds). A view may replace them.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

_lock = threading.Lock()
#: None: not looked for yet; False: the extra is not installed; else the instruments.
_otel: _Instruments | bool | None = None
_runtimes: weakref.WeakSet[ISR] = weakref.WeakSet()


def install(runtime: ISR) -> None:
    """Record ``runtime``'s metrics and spans, if the ``[otel]`` extra is installed."""
    instruments = _instruments()
    if instruments is None:
        return
    with _lock:
        _runtimes.add(runtime)
    runtime._state.observe = instruments.loading


def retire(runtime: ISR) -> None:
    """Take a closing runtime's counts into the totals now: once it is collected as garbage,
    nothing is left to read them from (a runtime that lived between two collections of the
    metrics would otherwise never have counted)."""
    instruments = _otel if isinstance(_otel, _Instruments) else None
    if instruments is not None:
        with _lock:
            if runtime in _runtimes:
                instruments.collect(runtime)


def _instruments() -> _Instruments | None:
    global _otel
    if _otel is None:
        with _lock:
            if _otel is None:
                try:
                    from opentelemetry import metrics, trace
                except ImportError:
                    _otel = False
                else:
                    _otel = _Instruments(metrics, trace)
    return _otel if isinstance(_otel, _Instruments) else None


class _Totals:
    """Cumulative counts by attributes, fed with what each live source counted since the
    last collection: a source that goes away (a runtime, a loader) takes nothing back, so
    the counters only ever rise."""

    def __init__(self) -> None:
        self.totals: dict[tuple[tuple[str, str], ...], int] = {}
        self.seen: weakref.WeakKeyDictionary[object, dict[Any, int]] = weakref.WeakKeyDictionary()

    def add(self, source: object, counts: dict[Any, int], attributes: Any) -> None:
        """Take ``source``'s current ``counts`` (by key); ``attributes(key)`` names each."""
        before = self.seen.get(source, {})
        for key, now in counts.items():
            then = before.get(key, 0)
            grew = now - then if now >= then else now  # below: counted afresh since
            if grew:
                labels = attributes(key)
                self.totals[labels] = self.totals.get(labels, 0) + grew
        self.seen[source] = dict(counts)

    def observations(self, observation: Any) -> list[Any]:
        return [observation(n, dict(labels)) for labels, n in self.totals.items()]


class _Instruments:
    """The instruments, made once per process on the global providers (proxies until the
    application sets its own: OpenTelemetry hands them over then)."""

    def __init__(self, metrics: Any, trace: Any) -> None:
        try:
            version: str | None = metadata.version("isr-runtime")
        except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
            version = None
        self.observation = metrics.Observation
        meter = metrics.get_meter(METER, version)
        self.tracer = trace.get_tracer(METER, version)
        self.calls = _Totals()
        self.invalidations = _Totals()
        self.store_errors = _Totals()
        meter.create_observable_counter(
            "isr.calls",
            [self._calls],
            unit="{call}",
            description="Answers of cached functions and pages, by function and status",
        )
        meter.create_observable_counter(
            "isr.invalidations",
            [self._invalidations],
            unit="{invalidation}",
            description="Invalidations, by scope (key, tag, all) and mode",
        )
        meter.create_observable_counter(
            "isr.store.errors",
            [self._store_errors],
            unit="{error}",
            description="Store failures absorbed (unreachable, timed out, unreadable record)",
        )
        self.duration = meter.create_histogram(
            "isr.loader.duration",
            unit="s",
            description="Loader runs, by function and outcome (ok, error, timeout)",
            explicit_bucket_boundaries_advisory=BUCKETS,
        )

    # ------------------------------------------------------------------ loader runs

    def loading(
        self, loader: Loader[Any], key: str, trigger: Status
    ) -> AbstractContextManager[object]:
        """A loader run: in a span, timed into ``isr.loader.duration``."""
        return self._loading(loader, key, trigger)

    @contextmanager
    def _loading(self, loader: Loader[Any], key: str, trigger: Status) -> Iterator[object]:
        attributes = {"isr.function": loader.label, "isr.key": key, "isr.status": trigger.value}
        with self.tracer.start_as_current_span("isr.load", attributes=attributes) as span:
            started = time.perf_counter()
            outcome = "error"
            try:
                yield span
                outcome = "ok"
            except TimeoutError:
                outcome = "timeout"
                raise
            except Exception:  # the origin's error
                raise
            except BaseException:  # cancelled: no outcome of the loader's to report
                outcome = ""
                raise
            finally:
                if outcome:
                    self.duration.record(
                        time.perf_counter() - started,
                        {"isr.function": loader.label, "isr.outcome": outcome},
                    )

    # ------------------------------------------------------------------ collection

    def _collect(self) -> None:
        """Take every live runtime's counts into the totals (under the lock: readers may
        collect from their own threads)."""
        for runtime in list(_runtimes):
            self.collect(runtime)

    def collect(self, runtime: ISR) -> None:
        """Take ``runtime``'s counts into the totals (what grew since it was last taken)."""
        for loader in list(runtime._loaders):
            if loader.runtime is runtime:
                label = loader.label
                self.calls.add(loader, loader.calls(), lambda s, f=label: _call(f, s))
        self.calls.add(runtime._sites, dict(runtime._sites.hits), lambda f: _call(f, "HIT"))
        self.invalidations.add(runtime, dict(runtime._state.invalidated), _invalidation)
        store = runtime.adapter
        name = type(store).__name__.removesuffix("Adapter").lower()
        self.store_errors.add(store, {name: store.errors}, lambda n: (("isr.store", n),))

    def _calls(self, options: object) -> Iterable[Any]:
        with _lock:
            self._collect()
            return self.calls.observations(self.observation)

    def _invalidations(self, options: object) -> Iterable[Any]:
        with _lock:
            self._collect()
            return self.invalidations.observations(self.observation)

    def _store_errors(self, options: object) -> Iterable[Any]:
        with _lock:
            self._collect()
            return self.store_errors.observations(self.observation)


def _call(function: str, status: str) -> tuple[tuple[str, str], ...]:
    return (("isr.function", function), ("isr.status", status))


def _invalidation(key: tuple[str, Any]) -> tuple[tuple[str, str], ...]:
    scope, mode = key
    return (("isr.scope", scope), ("isr.mode", mode.name.lower()))
