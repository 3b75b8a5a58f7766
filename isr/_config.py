"""Which store a cache URL or the environment names: parsing and validating configuration.

``adapter_from_url`` turns ``memory://``, ``disk:///path`` and ``redis://`` URLs into stores;
``url_from_env`` reads ``ISR_CACHE_URL`` / ``ISR_TARGET`` / ``ISR_CACHE_DIR``. Bad input raises
`isr.ConfigError`, whose message shows a URL only through `isr._redact.redact_url`: never a
password, whatever the error (a URL ``urlsplit`` cannot parse included).
"""

from __future__ import annotations

import ntpath
import os
import re
import sys
from collections.abc import Mapping
from urllib.parse import parse_qsl

from isr.adapters.base import Adapter
from isr.adapters.memory import MemoryAdapter

from ._codec import Codec, JsonCodec
from ._errors import ConfigError
from ._redact import redact_url, split_url

__all__ = ["TARGETS", "adapter_from_url", "url_from_env", "user_cache_dir"]


def adapter_from_url(
    url: str, *, namespace: str | None = None, codec: Codec | None = None, l1: bool | int = False
) -> Adapter:
    """Make the store a cache URL names.

    ``memory://[?max_entries=N][&max_bytes=N][&codec=json]`` (bytes; ``64MiB``, ``512KB``
    and the like too; ``codec``: every value kept goes through it, as in a shared store);
    ``disk:///absolute/path``; ``redis://host:port/db`` or ``rediss://`` (needs the
    ``isr-runtime[redis]`` extra), with ``l1=True`` (or a bound) for a memory L1 kept
    coherent over pub/sub.
    """
    parts = split_url(url)
    scheme = parts.scheme
    if l1 and scheme not in ("redis", "rediss"):
        raise ConfigError(f"l1= puts a memory L1 in front of Redis; {scheme}:// has none")
    if scheme == "memory":
        if parts.netloc or parts.path not in ("", "/") or "@" in url:
            raise ConfigError(
                f"cache URL {redact_url(url)!r}: memory:// takes no host or path, only "
                "?max_entries=N"
            )
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = set(options) - {"max_entries", "max_bytes", "codec"}
        if unknown:
            raise ConfigError(
                f"cache URL {redact_url(url)!r}: memory:// takes only "
                f"?max_entries=N&max_bytes=N&codec=json (unknown: {', '.join(sorted(unknown))})"
            )
        if "codec" in options:
            if options["codec"] != "json":
                raise ConfigError(
                    f"cache URL {redact_url(url)!r}: memory:// takes codec=json (or pass "
                    "codec= to ISR, a PickleCodec say), not codec={options['codec']!r}"
                )
            if codec is not None:
                raise ConfigError("pass the codec in the cache URL or as codec=, not both")
            codec = JsonCodec()
        text = options.get("max_entries", "10000")
        if not (text.isascii() and text.isdigit() and int(text) >= 1):
            raise ConfigError(
                f"cache URL {redact_url(url)!r}: max_entries must be an integer, and positive"
            )
        max_entries = int(text)
        max_bytes = None
        if "max_bytes" in options:
            max_bytes = _size(options["max_bytes"])
            if max_bytes is None:
                raise ConfigError(
                    f"cache URL {redact_url(url)!r}: max_bytes must be a size in bytes "
                    "(65536, 64KiB, 32MB)"
                )
        try:
            return MemoryAdapter(max_entries, namespace=namespace, max_bytes=max_bytes, codec=codec)
        except ValueError as exc:
            raise ConfigError(f"cache URL {redact_url(url)!r}: {exc}") from None
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
        f"cache URL {redact_url(url)!r}: unknown scheme {scheme!r}; use memory://, disk:///path, "
        "redis://host:port/db or rediss://"
    )


_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "kb": 1000, "mb": 1000**2, "gb": 1000**3}
_UNITS.update({"kib": 1024, "mib": 1024**2, "gib": 1024**3})


def _size(text: str) -> int | None:
    """``"65536"``, ``"64KiB"``, ``"32MB"`` in bytes; None when it is no size."""
    match = re.fullmatch(r"\s*([0-9]+)\s*([a-z]*)\s*", text.lower())
    if match is None or match.group(2) not in _UNITS:
        return None
    return int(match.group(1)) * _UNITS[match.group(2)]


#: Deployment targets for ``ISR.from_env`` and the store each one defaults to.
TARGETS = {
    "development": "memory://",
    "tests": "memory://",
    "single-host": "disk://",
    "multi-instance": "redis://",
    "serverless": "redis://",
}


def user_cache_dir(environ: Mapping[str, str] | None = None, platform: str | None = None) -> str:
    """This user's cache directory for isr-runtime, by the platform's convention:
    ``$XDG_CACHE_HOME/isr-runtime`` (``~/.cache/isr-runtime`` when unset or not absolute,
    as the XDG spec says) on Linux and other POSIX systems, ``~/Library/Caches/isr-runtime``
    on macOS, ``%LOCALAPPDATA%\\isr-runtime\\Cache`` on Windows. The disk store creates it
    owner-only. (Ten lines of convention did not earn a dependency on platformdirs.)"""
    env = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if platform == "win32":
        base = env.get("LOCALAPPDATA") or ntpath.join(ntpath.expanduser("~"), "AppData", "Local")
        return ntpath.join(base, "isr-runtime", "Cache")
    home = env.get("HOME") or os.path.expanduser("~")
    if platform == "darwin":
        return os.path.join(home, "Library", "Caches", "isr-runtime")
    xdg = env.get("XDG_CACHE_HOME", "")
    base = xdg if os.path.isabs(xdg) else os.path.join(home, ".cache")
    return os.path.join(base, "isr-runtime")


def url_from_env(environ: Mapping[str, str]) -> str:
    """The cache URL the environment asks for (see `ISR.from_env`). ``ISR_TARGET=single-host``
    without ``ISR_CACHE_DIR`` puts the disk store in `user_cache_dir`, never in a directory
    other users share (such as the temp directory)."""
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
                f"ISR_TARGET={target} wants a {wanted} store, but ISR_CACHE_URL is "
                f"{redact_url(url)!r}"
            )
        return url
    if wanted is None or wanted == "memory://":
        return "memory://"
    if wanted == "disk://":
        directory = environ.get("ISR_CACHE_DIR", "").strip() or user_cache_dir(environ)
        directory = os.path.abspath(directory)
        if "?" in directory or "#" in directory:
            raise ConfigError(
                f"ISR_CACHE_DIR={directory!r}: a cache directory's path cannot hold '?' or '#'"
            )
        return "disk://" + directory
    raise ConfigError(f"ISR_TARGET={target} needs ISR_CACHE_URL=redis://host:port/db")
