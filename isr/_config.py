"""Which store a cache URL or the environment names: parsing and validating configuration.

``adapter_from_url`` turns ``memory://``, ``disk:///path`` and ``redis://`` URLs into stores;
``url_from_env`` reads ``ISR_CACHE_URL`` / ``ISR_TARGET`` / ``ISR_CACHE_DIR``. Bad input raises
`isr.ConfigError`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlsplit

from isr.adapters.base import Adapter
from isr.adapters.memory import MemoryAdapter

from ._codec import Codec
from ._errors import ConfigError

__all__ = ["TARGETS", "adapter_from_url", "url_from_env"]


def adapter_from_url(
    url: str, *, namespace: str | None = None, codec: Codec | None = None, l1: bool | int = False
) -> Adapter:
    """Make the store a cache URL names.

    ``memory://[?max_entries=N]``; ``disk:///absolute/path``; ``redis://host:port/db`` or
    ``rediss://`` (needs the ``isr-runtime[redis]`` extra), with ``l1=True`` (or a bound)
    for a memory L1 kept coherent over pub/sub.
    """
    parts = urlsplit(url)
    scheme = parts.scheme
    if l1 and scheme not in ("redis", "rediss"):
        raise ConfigError(f"l1= puts a memory L1 in front of Redis; {scheme}:// has none")
    if scheme == "memory":
        if codec is not None:
            raise ConfigError("memory:// keeps values as they are; it takes no codec")
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = set(options) - {"max_entries"}
        if unknown or parts.netloc or parts.path not in ("", "/"):
            raise ConfigError(
                f"cache URL {url!r}: memory:// takes only ?max_entries=N "
                f"(unknown: {', '.join(sorted(unknown)) or parts.netloc + parts.path})"
            )
        try:
            max_entries = int(options.get("max_entries", "10000"))
        except ValueError:
            raise ConfigError(f"cache URL {url!r}: max_entries must be an integer") from None
        try:
            return MemoryAdapter(max_entries, namespace=namespace)
        except ValueError as exc:
            raise ConfigError(f"cache URL {url!r}: {exc}") from None
    if scheme == "disk":
        from isr.adapters.disk import DiskAdapter

        return DiskAdapter.from_url(url, namespace=namespace, codec=codec)
    if scheme in ("redis", "rediss"):
        from isr.adapters.redis import RedisAdapter

        store = RedisAdapter.from_url(url, namespace=namespace, codec=codec)
        if not l1:
            return store
        from isr.adapters.l1 import L1Adapter

        bound = 10_000 if l1 is True else int(l1)
        return L1Adapter(store, bound)
    raise ConfigError(
        f"cache URL {url!r}: unknown scheme {scheme!r}; use memory://, disk:///path, "
        "redis://host:port/db or rediss://"
    )


#: Deployment targets for ``ISR.from_env`` and the store each one defaults to.
TARGETS = {
    "development": "memory://",
    "tests": "memory://",
    "single-host": "disk://",
    "multi-instance": "redis://",
    "serverless": "redis://",
}


def url_from_env(environ: Mapping[str, str]) -> str:
    """The cache URL the environment asks for (see `ISR.from_env`)."""
    url = environ.get("ISR_CACHE_URL", "").strip()
    target = environ.get("ISR_TARGET", "").strip()
    if target and target not in TARGETS:
        raise ConfigError(
            f"ISR_TARGET={target!r} is not a deployment target; use one of {', '.join(TARGETS)}"
        )
    wanted = TARGETS.get(target)
    if url:
        if (
            wanted
            and not url.startswith(wanted.split("//")[0])
            and not (wanted == "redis://" and url.startswith("rediss://"))
        ):
            raise ConfigError(
                f"ISR_TARGET={target} wants a {wanted} store, but ISR_CACHE_URL is {url!r}"
            )
        return url
    if wanted is None or wanted == "memory://":
        return "memory://"
    if wanted == "disk://":
        directory = environ.get("ISR_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "isr-cache")
        return "disk://" + os.path.abspath(directory)
    raise ConfigError(f"ISR_TARGET={target} needs ISR_CACHE_URL=redis://host:port/db")
