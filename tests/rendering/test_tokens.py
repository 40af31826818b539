"""Tracking tokens: version 2 carries its target encrypted and authenticated; version 1
(ids only, from links already in inboxes) still verifies."""

from __future__ import annotations

import base64

import pytest

from engine.tokens import LegacyTokens, TokenData, Tokens

SECRET = b"0123456789abcdef0123456789abcdef"
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
URL = "https://shop.example.com/items/i042?utm_source=mail&ref=ann@example.com"


@pytest.fixture
def tokens() -> Tokens:
    return Tokens(SECRET)


def raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def all_tokens(tokens: Tokens, secret: bytes = SECRET) -> list[tuple[str, str]]:
    legacy = LegacyTokens(secret)
    return [
        (tokens.click(42, 3, URL), "click"),
        (tokens.open(42), "open"),
        (tokens.unsubscribe(42, "weekly"), "unsubscribe"),
        (legacy.click(42, 3), "click"),
        (legacy.open(42), "open"),
        (legacy.unsubscribe(42), "unsubscribe"),
    ]


def test_round_trip_for_each_kind(tokens: Tokens) -> None:
    assert tokens.verify(tokens.click(7, 0, URL), "click") == TokenData("click", 7, 0, url=URL)
    big = tokens.click(2**64 - 1, 65535, "https://é.example/ü")
    assert tokens.verify(big, "click") == TokenData(
        "click", 2**64 - 1, 65535, url="https://é.example/ü"
    )
    assert tokens.verify(tokens.open(123456789), "open") == TokenData("open", 123456789)
    unsubscribe = tokens.verify(tokens.unsubscribe(0, "weekly"), "unsubscribe")
    assert unsubscribe == TokenData("unsubscribe", 0, campaign="weekly")
    assert tokens.verify(tokens.unsubscribe(5), "unsubscribe") == TokenData("unsubscribe", 5)


def test_a_link_shows_no_url_no_address_and_no_send_id(tokens: Tokens) -> None:
    token = tokens.click(4242, 1, URL)
    decoded = raw(token)
    for secret_part in (b"shop.example", b"ann@example.com", b"utm_source", b"i042"):
        assert secret_part not in decoded
        assert secret_part.decode() not in token
    assert (4242).to_bytes(8, "big") not in decoded
    # Same message, same link: the same token (so a message renders reproducibly); any
    # other send, index or target: another token.
    assert tokens.click(4242, 1, URL) == token
    others = {tokens.click(4243, 1, URL), tokens.click(4242, 2, URL), tokens.click(4242, 1, "x")}
    assert token not in others and len(others) == 3


def test_tokens_are_url_safe(tokens: Tokens) -> None:
    for token, _ in all_tokens(tokens):
        assert set(token) <= set(ALPHABET)


def test_every_single_character_change_fails(tokens: Tokens) -> None:
    for token, kind in all_tokens(tokens):
        for position in range(len(token)):
            for char in "AQgw_-9z":
                if char == token[position]:
                    continue
                changed = token[:position] + char + token[position + 1 :]
                assert tokens.verify(changed, kind) is None, (kind, position, char)


def test_every_single_byte_change_fails(tokens: Tokens) -> None:
    for token, kind in all_tokens(tokens):
        data = raw(token)
        for position in range(len(data)):
            for flip in (0x01, 0x80, 0xFF):
                changed = bytearray(data)
                changed[position] ^= flip
                assert tokens.verify(b64(bytes(changed)), kind) is None, (kind, position, flip)


def test_every_truncation_and_extension_fails(tokens: Tokens) -> None:
    for token, kind in all_tokens(tokens):
        for end in range(len(token)):
            assert tokens.verify(token[:end], kind) is None
            assert tokens.verify(token[end + 1 :], kind) is None
        for suffix in ("A", "AA", "=", "==", "\n", " "):
            assert tokens.verify(token + suffix, kind) is None


def test_a_token_of_one_kind_fails_as_another(tokens: Tokens) -> None:
    for token, kind in all_tokens(tokens):
        for other in ("click", "open", "unsubscribe"):
            if other != kind:
                assert tokens.verify(token, other) is None


def test_the_target_cannot_be_bent_into_an_open_redirect(tokens: Tokens) -> None:
    # Ciphertext is malleable only without the tag: flipping the bytes that hold the URL
    # (to reach "https://evil...") must fail authentication, whatever the flip.
    token = tokens.click(1, 0, "https://shop.example/")
    data = bytearray(raw(token))
    evil = b"https://evil.example"
    start = 1 + 12 + 11  # version, nonce, kind + send id + link index
    for offset, (was, want) in enumerate(zip(b"https://shop.example/", evil, strict=False)):
        data[start + offset] ^= was ^ want
    assert tokens.verify(b64(bytes(data)), "click") is None


def test_open_and_unsubscribe_tokens_of_version_1_cannot_be_swapped() -> None:
    legacy = LegacyTokens(SECRET)
    data = bytearray(raw(legacy.open(5)))
    data[0] = 3  # the unsubscribe kind byte: the MAC must still tell them apart
    assert Tokens(SECRET).verify(b64(bytes(data)), "unsubscribe") is None


def test_version_1_tokens_still_verify_and_say_so(tokens: Tokens) -> None:
    legacy = LegacyTokens(SECRET)
    assert tokens.verify(legacy.click(7, 2), "click") == TokenData("click", 7, 2, version=1)
    assert tokens.verify(legacy.open(7), "open") == TokenData("open", 7, version=1)
    assert tokens.verify(legacy.unsubscribe(7), "unsubscribe") == TokenData(
        "unsubscribe", 7, version=1
    )


def test_a_token_from_another_secret_fails(tokens: Tokens) -> None:
    other_secret = b"another secret, equally long!!!!"
    other = Tokens(other_secret)
    for token, kind in all_tokens(other, other_secret):
        assert tokens.verify(token, kind) is None
        assert other.verify(token, kind) is not None
    for token, kind in all_tokens(tokens):
        assert other.verify(token, kind) is None


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "x",
        "not a token",
        "!!!!",
        "====",
        "A" * 34,
        "A" * 36,
        "A" * 51,
        "A" * 120,
        "A" * 10_000,
        "é" * 34,
        "\x00" * 34,
        "../../etc/passwd",
        "https://evil.example/",
    ],
)
def test_garbage_returns_none(tokens: Tokens, garbage: str) -> None:
    for kind in ("click", "open", "unsubscribe"):
        assert tokens.verify(garbage, kind) is None


def test_unknown_kind_is_a_programming_error(tokens: Tokens) -> None:
    with pytest.raises(ValueError, match="unknown token kind"):
        tokens.verify(tokens.open(1), "bounce")


def test_out_of_range_values_are_refused(tokens: Tokens) -> None:
    with pytest.raises(ValueError, match="send id"):
        tokens.open(-1)
    with pytest.raises(ValueError, match="link index"):
        tokens.click(1, 65536, URL)
    with pytest.raises(ValueError, match="too long"):
        tokens.click(1, 0, "https://example.com/" + "x" * 7000)
    with pytest.raises(ValueError, match="must not be empty"):
        Tokens(b"")
    long_url = "https://example.com/" + "x" * 5000  # long, but within what servers accept
    assert tokens.verify(tokens.click(1, 0, long_url), "click") == TokenData(
        "click", 1, 0, url=long_url
    )
