"""How an entry becomes bytes in a shared store, and back.

A shared store (disk, Redis) holds bytes that other processes, and whoever else can write
to the store, produce. The default is JSON: it can only ever decode to data. Pickle is an
explicit opt-in for values JSON cannot hold, and then every record is signed with HMAC-SHA256
under a key of the application's: a record without a valid signature is refused (treated as
missing and logged), so a writable store cannot make the application run code.

A record is one JSON array (or one signed pickle of the same tuple):
``[1, value, created, ttl, swr or null, stale_if_error, mark or null, generation, [tags]]``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import pickle
from collections.abc import Callable
from typing import Any, Protocol, cast

from ._entry import Entry, Mode, Policy
from ._errors import ConfigError, ISRError

__all__ = ["Codec", "CodecError", "JsonCodec", "PickleCodec"]

_FORMAT = 1


class CodecError(ISRError, ValueError):
    """A value the codec cannot encode (nothing was stored), or a record it cannot read."""


class Codec(Protocol):
    """Turns entries into bytes and back."""

    name: str
    #: True when the bytes are UTF-8 text a store may keep as text (and hand back as str).
    text: bool

    def dumps(self, key: str, entry: Entry) -> bytes:
        """Encode ``entry`` (stored under ``key``); raise `CodecError` naming the key."""
        ...

    def loads(self, key: str, data: bytes | str) -> Entry:
        """Decode a record (bytes, or text where the store keeps the text of a ``text``
        codec); raise `CodecError` if it is not one this codec wrote."""
        ...


def _record(entry: Entry) -> list[Any]:
    p = entry.policy
    return [
        _FORMAT,
        entry.value,
        entry.created,
        p.ttl,
        None if p.swr == math.inf else p.swr,
        p.sie,
        None if p.mark is None else int(p.mark),
        entry.gen,
        list(entry.tags),
    ]


#: Decoded policies, shared like the ones decorators make (a few distinct ones per app).
_policies: dict[tuple[Any, ...], Policy] = {}


def _entry(key: str, record: Any) -> Entry:
    try:
        fmt, value, created, ttl, swr, sie, mark, gen, tags = record
        if fmt != _FORMAT:
            raise ValueError(f"record format {fmt!r}")
        windows = (ttl, swr, sie, mark)
        policy = _policies.get(windows)
        if policy is None:
            policy = Policy(ttl, swr, sie, None if mark is None else Mode(mark))
            if len(_policies) < 4096:
                _policies[windows] = policy
        return Entry(value, float(created), policy, int(gen), tuple(tags))
    except (TypeError, ValueError) as exc:
        raise CodecError(f"the record under {key!r} is not an isr entry: {exc}") from None


class JsonCodec:
    """JSON records (the default): values must be JSON data (dict, list, str, int, float,
    bool, None); tuples come back as lists."""

    name = "json"
    text = True

    def __init__(self) -> None:
        self._encode = json.JSONEncoder(
            ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode
        # The C scanner, without JSONDecoder.decode's Python wrapper around it.
        scan = vars(json.JSONDecoder())["scan_once"]
        self._scan = cast(Callable[[str, int], tuple[Any, int]], scan)

    def dumps(self, key: str, entry: Entry) -> bytes:
        try:
            return self._encode(_record(entry)).encode()
        except (TypeError, ValueError) as exc:
            raise CodecError(
                f"cannot cache the value for {key!r} as JSON ({exc}); return JSON data "
                "(dict, list, str, int, float, bool, None) or configure a PickleCodec"
            ) from None

    def loads(self, key: str, data: bytes | str) -> Entry:
        try:
            text = data if isinstance(data, str) else data.decode()
            record, end = self._scan(text, 0)
        except (UnicodeDecodeError, ValueError, StopIteration, AttributeError) as exc:
            raise CodecError(f"the record under {key!r} is not JSON: {exc!r}") from None
        if end != len(text):
            raise CodecError(f"the record under {key!r} is not JSON: data after the record")
        return _entry(key, record)


class PickleCodec:
    """Pickled records signed with HMAC-SHA256 under ``key`` (at least 16 bytes, the same in
    every process sharing the store). Opt in only for values JSON cannot hold."""

    name = "pickle"
    text = False
    _DIGEST = 32

    def __init__(self, key: bytes | str) -> None:
        secret = key.encode() if isinstance(key, str) else key
        if not isinstance(secret, bytes) or len(secret) < 16:
            raise ConfigError("PickleCodec needs a signing key of at least 16 bytes")
        self._key = secret

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def dumps(self, key: str, entry: Entry) -> bytes:
        try:
            payload = pickle.dumps(tuple(_record(entry)), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise CodecError(f"cannot pickle the value for {key!r}: {exc}") from None
        return self._sign(payload) + payload

    def loads(self, key: str, data: bytes | str) -> Entry:
        if isinstance(data, str):
            raise CodecError(f"the record under {key!r} is text, not a signed pickle")
        signature, payload = data[: self._DIGEST], data[self._DIGEST :]
        if not hmac.compare_digest(signature, self._sign(payload)):
            raise CodecError(f"the record under {key!r} has no valid signature; refused")
        try:
            record = pickle.loads(payload)
        except Exception as exc:
            raise CodecError(f"the record under {key!r} does not unpickle: {exc}") from None
        return _entry(key, record)
