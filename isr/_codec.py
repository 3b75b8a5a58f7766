"""How an entry becomes bytes in a shared store, and back.

A shared store (disk, Redis) holds bytes that other processes, and whoever else can write
to the store, produce. The default is JSON: it can only ever decode to data. Pickle is an
explicit opt-in for values JSON cannot hold, and then every record is signed with HMAC-SHA256
under a key of the application's, bound to the name the record is stored under: a record
without a valid signature for that name is refused (treated as missing and logged) before
anything is unpickled, so a writable store cannot make the application run code.

A store passes the codec the record's name in the store (``key``: the namespace's prefix,
the kind and the cache key, as in ``blog:e:post:hello``; see `isr.adapters.names`), so a codec
that signs can bind its signature to the namespace and the key without knowing the store's
layout, and a codec that does not sign just names the record in its messages.

A record is one JSON array (or one signed pickle of the same tuple):
``[2, value, created, ttl, swr or null, stale_if_error or null, mark or null, generation,
[tags], [tag numbers]]`` (null: no bound; format 1, an earlier release's, has no tag numbers:
it is read, and any invalidation of its tags reaches it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import pickle
import struct
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

from ._entry import Entry, Mode, Policy
from ._errors import ConfigError, ISRError

__all__ = ["Codec", "CodecError", "JsonCodec", "PickleCodec"]

_FORMAT = 2


class CodecError(ISRError, ValueError):
    """A value the codec cannot encode (nothing was stored), or a record it cannot read."""


class Codec(Protocol):
    """Turns entries into bytes and back. ``key`` is the record's name in the store
    (namespace and cache key; see the module docstring)."""

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
        None if p.sie == math.inf else p.sie,
        None if p.mark is None else int(p.mark),
        int(entry.gen),
        list(entry.tags),
        list(entry.tagv),
    ]


#: Decoded policies, shared like the ones decorators make (a few distinct ones per app).
_policies: dict[tuple[Any, ...], Policy] = {}


def _entry(key: str, record: Any) -> Entry:
    try:
        if type(record) is list and len(record) == 10:  # JSON's (its format checked below)
            fmt, value, created, ttl, swr, sie, mark, gen, tags, tagv = record
        elif not isinstance(record, (list, tuple)) or not record:
            raise ValueError("not an array")
        elif record[0] == _FORMAT:  # a pickle's tuple
            fmt, value, created, ttl, swr, sie, mark, gen, tags, tagv = record
        elif record[0] == 1:  # an earlier release's, without tag numbers: any counts
            fmt, value, created, ttl, swr, sie, mark, gen, tags = record
            fmt, tagv = _FORMAT, []
        else:
            fmt = record[0]
        if fmt != _FORMAT:
            raise ValueError(f"record format {fmt!r}")
        windows = (ttl, swr, sie, mark)
        policy = _policies.get(windows)
        if policy is None:
            policy = Policy(ttl, swr, sie, None if mark is None else Mode(mark))
            if len(_policies) < 4096:
                _policies[windows] = policy
        # (No tags, the usual entry: no tuple to build.)
        tags = () if tags == [] else tuple(tags)
        tagv = () if tagv == [] else tuple(map(int, tagv))
        return Entry(value, float(created), policy, int(gen), tags, tagv)
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
    """Pickled records signed with HMAC-SHA256. Opt in only for values JSON cannot hold.

    ``key``: the signing key (at least 16 bytes, the same in every process sharing the
    store), or a sequence of them: the first signs, each one verifies. To rotate, put the
    new key first and keep the old one second until the records it signed have expired (or
    been rewritten); a record signed by none of them is refused, never unpickled.

    Each signature covers the record's name in the store as well as its bytes: a record
    copied under another key, or into another namespace, is refused. What a signature
    cannot tell is whether a record is the latest one written under its name: whoever can
    write the store can put back a record it held earlier (and the generation record and
    markers of that time with it), so a value purged since can be served again until its
    windows end. Only state out of the writer's reach could tell, and the store is the only
    state processes share: keep the store writable by the application alone (see
    ``docs/pages/security.md``). A signature also hides nothing: records are signed, not
    encrypted.
    """

    name = "pickle"
    text = False
    _DIGEST = 32
    #: Binds every signature to this record format (records of other formats are refused).
    _CONTEXT = b"isr-pickle-record-2\0"

    def __init__(self, key: bytes | str | Sequence[bytes | str]) -> None:
        keys = [key] if isinstance(key, (bytes, str)) else list(key)
        secrets = [k.encode() if isinstance(k, str) else k for k in keys]
        if not secrets or not all(isinstance(k, bytes) and len(k) >= 16 for k in secrets):
            raise ConfigError(
                "PickleCodec needs a signing key of at least 16 bytes (or a list of them)"
            )
        self._keys: tuple[bytes, ...] = tuple(secrets)

    def _mac(self, key: bytes, name: bytes, payload: bytes) -> bytes:
        mac = hmac.new(key, self._CONTEXT + struct.pack(">I", len(name)) + name, hashlib.sha256)
        mac.update(payload)
        return mac.digest()

    def dumps(self, key: str, entry: Entry) -> bytes:
        try:
            payload = pickle.dumps(tuple(_record(entry)), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise CodecError(f"cannot pickle the value for {key!r}: {exc}") from None
        return self._mac(self._keys[0], _name(key), payload) + payload

    def loads(self, key: str, data: bytes | str) -> Entry:
        if not isinstance(data, bytes):
            kind = "text" if isinstance(data, str) else f"a {type(data).__name__}"
            raise CodecError(f"the record under {key!r} is {kind}, not a signed pickle")
        signature, payload = data[: self._DIGEST], data[self._DIGEST :]
        name = _name(key)
        if not any(hmac.compare_digest(signature, self._mac(k, name, payload)) for k in self._keys):
            raise CodecError(
                f"the record under {key!r} has no valid signature for that name under the "
                "codec's keys; refused"
            )
        try:
            record = pickle.loads(payload)
        except Exception as exc:
            raise CodecError(f"the record under {key!r} does not unpickle: {exc}") from None
        return _entry(key, record)


def _name(key: str) -> bytes:
    """A record's name as signed: UTF-8, lone surrogates included (never raises)."""
    return key.encode("utf-8", "surrogatepass")
