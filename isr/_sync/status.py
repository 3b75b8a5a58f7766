# GENERATED from isr/_async/status.py by tests/unasync.py: do not edit.
# Edit the async source, then run `python -m tests.unasync`.
"""What the status page shows, read with the runtime's async calls.

Written once: ``isr/_sync/status.py`` is generated from this file by ``python -m
tests.unasync`` (the runtime's calls get their ``_sync`` spellings); edit this one, then
regenerate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from isr._errors import ConfigError
from isr._statuspage import Snapshot, search_key, snapshot

if TYPE_CHECKING:
    from isr._statuspage import StatusPage

__all__ = ["gather"]


def gather(page: StatusPage, query: str) -> Snapshot:
    """The page's `Snapshot`, with the key or path ``query`` names looked into (a query
    that cannot be is a problem the page shows, not an error)."""
    runtime = page.runtime
    key, problem = search_key(runtime, query) if query else (None, None)
    explanation = None
    if key is not None:
        try:
            explanation = runtime.explain_sync(key)
        except ConfigError as exc:
            problem = str(exc)
    live = runtime.instances_sync()
    log = runtime.invalidation_log_sync(page.log_limit)
    return snapshot(runtime, query, live, log, (key, explanation, problem))
