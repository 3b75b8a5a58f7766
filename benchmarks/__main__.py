"""Run every benchmark section in one process and print one report.

    python -m benchmarks               # the full run (well under 90 s)
    python -m benchmarks --quick       # a smoke run (a few seconds): do the benchmarks still run?
    python -m benchmarks --json out.json

Progress goes to stderr; the report to stdout. The exit status is 0 whether targets pass or
not (a noisy machine may miss one); pass ``--strict`` to exit 1 when one fails.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from . import (
    concurrency,
    confirmation,
    disk_store,
    hot_path,
    http_load,
    l1,
    memory,
    redis_load,
    redis_store,
    tag_scale,
    wsgi_load,
)
from ._harness import Settings, print_report, progress, write_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (< 10 s)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target fails")
    args = parser.parse_args(argv)
    settings = Settings.make(quick=args.quick)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # from peers, not from isr
        sections = [
            *hot_path.run(settings),
            *concurrency.run(settings),
            *memory.run(settings),
            *disk_store.run(settings),
            *redis_store.run(settings),
            *l1.run(settings),
            *http_load.run(settings),
            *wsgi_load.run(settings),
            *redis_load.run(settings),
            *tag_scale.run(settings),
            *confirmation.run(settings),
        ]
    progress(f"done in {time.perf_counter() - started:.1f} s")
    print_report(sections, settings)
    if args.json is not None:
        write_json(args.json, sections, settings)
    failed = any(row.passed is False for section in sections for row in section.rows)
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
