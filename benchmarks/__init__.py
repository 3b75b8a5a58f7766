"""The benchmark suite of isr-runtime: ``python -m benchmarks`` (see ``__main__``).

Sections: `hot_path` (fresh hits, async and sync, against the floor and the peers),
`concurrency` (stampedes on a cold and on a stale key) and `memory` (bytes per entry).
"""
