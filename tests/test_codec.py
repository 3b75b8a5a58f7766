"""Records in shared stores: JSON by default, signed pickle only on request."""

from __future__ import annotations

import pickle

import pytest

import isr
from isr._codec import CodecError, JsonCodec, PickleCodec
from isr._entry import Entry, Mode, Policy

ENTRY = Entry({"title": "Hello", "n": [1, 2]}, 1000.5, Policy(60, None, 30), 4, ("posts", "a:1"))


@pytest.mark.parametrize("codec", [JsonCodec(), PickleCodec(b"k" * 32)], ids=["json", "pickle"])
def test_round_trip_keeps_value_windows_mark_generation_and_tags(codec: JsonCodec) -> None:
    entry = ENTRY.marked(Mode.REVALIDATE)
    back = codec.loads("post:a", codec.dumps("post:a", entry))
    assert back.value == entry.value
    assert (back.created, back.policy, back.gen, back.tags) == (1000.5, entry.policy, 4, entry.tags)
    assert back.fresh_until == entry.fresh_until  # still marked: never fresh


def test_json_refuses_what_it_cannot_encode_naming_the_key() -> None:
    entry = Entry({"when": object()}, 0.0, Policy(1, 1, 1), 0)
    with pytest.raises(CodecError, match="cannot cache the value for 'post:a' as JSON"):
        JsonCodec().dumps("post:a", entry)
    with pytest.raises(CodecError, match="as JSON"):
        JsonCodec().dumps("k", Entry(float("nan"), 0.0, Policy(1, 1, 1), 0))


@pytest.mark.parametrize("data", [b"\xff", b"{}", b"[2, 1]", b"not json"])
def test_json_says_when_a_record_is_not_one_of_ours(data: bytes) -> None:
    with pytest.raises(CodecError, match="the record under 'k'"):
        JsonCodec().loads("k", data)


def test_pickle_values_json_cannot_hold() -> None:
    codec = PickleCodec("a signing key of enough length")
    entry = Entry({1, 2, 3}, 0.0, Policy(1, None, 1), 0)
    assert codec.loads("k", codec.dumps("k", entry)).value == {1, 2, 3}


class Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this must never run",))


def test_a_record_without_a_valid_signature_is_never_unpickled(
    capsys: pytest.CaptureFixture[str],
) -> None:
    codec = PickleCodec(b"k" * 32)
    forged = b"\x00" * 32 + pickle.dumps(Boom())
    with pytest.raises(CodecError, match="no valid signature for that name"):
        codec.loads("k", forged)
    other = PickleCodec(b"x" * 32).dumps("k", ENTRY)
    with pytest.raises(CodecError, match="no valid signature"):
        codec.loads("k", other)  # signed, but with another application's key
    assert "must never run" not in capsys.readouterr().out


def test_pickle_needs_a_real_key() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        PickleCodec(b"short")


KEY = b"k" * 32


def test_a_signed_record_copied_under_another_name_is_refused() -> None:
    """alice's record put under bob's key, or into another namespace, is not served."""
    codec = PickleCodec(KEY)
    alice = codec.dumps("blog:e:user:alice", ENTRY)
    assert codec.loads("blog:e:user:alice", alice).value == ENTRY.value
    for elsewhere in ("blog:e:user:bob", "shop:e:user:alice", "blog:l:user:alice"):
        with pytest.raises(CodecError, match="no valid signature for that name"):
            codec.loads(elsewhere, alice)


def test_keys_rotate_signing_with_the_first_and_verifying_with_each() -> None:
    old, new = PickleCodec(b"o" * 32), PickleCodec([b"n" * 32, b"o" * 32])
    written_before = old.dumps("ns:e:k", ENTRY)
    assert new.loads("ns:e:k", written_before).value == ENTRY.value  # the old key still reads
    written_now = new.dumps("ns:e:k", ENTRY)
    assert PickleCodec(b"n" * 32).loads("ns:e:k", written_now).value == ENTRY.value
    with pytest.raises(CodecError, match="no valid signature"):
        old.loads("ns:e:k", written_now)  # signed with the new key, not the old one
    with pytest.raises(CodecError, match="no valid signature"):
        PickleCodec(b"n" * 32).loads("ns:e:k", written_before)  # the old key dropped


@pytest.mark.parametrize("keys", [[], [b"short"], [b"k" * 32, b"short"], [b"k" * 32, 42]])
def test_every_key_must_be_a_real_key(keys: list[object]) -> None:
    with pytest.raises(isr.ConfigError, match="at least 16 bytes"):
        PickleCodec(keys)  # type: ignore[arg-type]


@pytest.mark.parametrize("data", [42, 1.5, None, ["x"], "text", bytearray(b"x" * 40)])
def test_a_row_that_is_not_bytes_is_refused_never_a_type_error(data: object) -> None:
    for codec in (PickleCodec(KEY), JsonCodec()):
        with pytest.raises(CodecError, match="the record under 'ns:e:k'"):
            codec.loads("ns:e:k", data)  # type: ignore[arg-type]


def test_a_name_with_a_lone_surrogate_still_signs_and_verifies() -> None:
    """The stores refuse such keys first; the codec itself never raises UnicodeEncodeError."""
    codec = PickleCodec(KEY)
    assert codec.loads("ns:e:\ud800", codec.dumps("ns:e:\ud800", ENTRY)).value == ENTRY.value
