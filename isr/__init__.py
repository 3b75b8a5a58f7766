"""isr-runtime: incremental static regeneration for any Python server.

import isr

@isr.with_revalidate("post:{slug}", ttl=60, swr=None, tags=["posts"])
async def get_post(slug: str) -> dict: ...

await get_post("hello")                  # HIT, STALE (+ one refresh) or MISS
await isr.invalidate("post:hello")       # after a mutation: next read fetches
await isr.invalidate_tag("posts", mode="revalidate")
"""

from ._api import (
    configure,
    get_runtime,
    invalidate,
    invalidate_all,
    invalidate_all_sync,
    invalidate_sync,
    invalidate_tag,
    invalidate_tag_sync,
    revalidating,
    revalidating_sync,
    with_revalidate,
)
from ._codec import Codec, CodecError, JsonCodec, PickleCodec
from ._coherence import Confirmation, Instance, LoggedInvalidation, invalidation_source
from ._context import cache_life, cache_tag, no_store
from ._decorator import AsyncBound, AsyncCached, Revalidate, SyncBound, SyncCached
from ._entry import Mode
from ._errors import ConfigError, ISRError, ISRWarning, StoreUnavailable, TemplateError
from ._explain import Explanation
from ._runtime import ISR
from ._stats import Stats
from ._status import Result, Status
from ._switch import disabled
from ._version import __version__ as __version__

__all__ = [
    "ISR",
    "AsyncBound",
    "AsyncCached",
    "Codec",
    "CodecError",
    "ConfigError",
    "Explanation",
    "Confirmation",
    "ISRError",
    "ISRWarning",
    "Instance",
    "JsonCodec",
    "LoggedInvalidation",
    "Mode",
    "PickleCodec",
    "Result",
    "Revalidate",
    "Stats",
    "Status",
    "StoreUnavailable",
    "SyncBound",
    "SyncCached",
    "TemplateError",
    "cache_life",
    "cache_tag",
    "configure",
    "disabled",
    "get_runtime",
    "invalidate",
    "invalidate_all",
    "invalidate_all_sync",
    "invalidate_sync",
    "invalidate_tag",
    "invalidate_tag_sync",
    "invalidation_source",
    "no_store",
    "revalidating",
    "revalidating_sync",
    "with_revalidate",
]
