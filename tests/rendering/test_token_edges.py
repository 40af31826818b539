"""Token verification at its edges, written against the mutants of
``engine/tokens.py`` that ``test_tokens.py`` lets through (``make mutate``).

Tokens are deterministic for a secret (the nonce is derived from the plaintext), so a
token minted today is a fixed string: the known answers below pin the key derivation
and the nonce, and tell a format change from a silent break of every link already sent.
"""

from __future__ import annotations

import pytest

from engine.tokens import _MAX_TAIL, LegacyTokens, TokenData, Tokens, _head

SECRET = b"golden-secret"
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.fixture
def tokens() -> Tokens:
    return Tokens(SECRET)


def test_tokens_minted_today_are_the_known_strings(tokens: Tokens) -> None:
    assert tokens.open(7) == "AtzsMG-olbL3Un2j4kKQygQocXpFWZb44iyAH6gQwf4v-zXVTbc"
    assert tokens.click(7, 1, "https://example.com/a") == (
        "AoL3IspEiSRbQM1Lhx0EmK7_Zgao7Yk6GW3IKXCM_jZKhrI_oyXT6D0SM3t60pswh2DboTMnfMWvjJbvUA"
    )
    assert tokens.unsubscribe(7, "alerts") == (
        "Ai9nlrpjw3KP5UbLaHq81kAH3kYwSjoHdPNb47WUh_KMGnbthI-jUD4FUz0"
    )


def test_tokens_ending_in_any_character_verify(tokens: Tokens) -> None:
    # 39-byte tokens use every bit of their last character; send 40's ends in "X".
    minted = {i: tokens.unsubscribe(i, "w") for i in range(1, 200)}
    assert minted[40].endswith("X")
    assert len({token[-1] for token in minted.values()}) > 40
    assert all(
        tokens.verify(token, "unsubscribe") == TokenData("unsubscribe", i, campaign="w")
        for i, token in minted.items()
    )


def test_a_non_canonical_spelling_of_a_token_fails(tokens: Tokens) -> None:
    token = tokens.open(7)  # 38 bytes in 51 characters: the last one has 2 spare bits
    last = ALPHABET.index(token[-1])
    assert last % 4 == 0
    twin = token[:-1] + ALPHABET[last + 1]  # the same bytes, spelled otherwise
    assert tokens.verify(token, "open") == TokenData("open", 7)
    assert tokens.verify(twin, "open") is None


def test_a_token_that_is_not_a_string_fails(tokens: Tokens) -> None:
    assert tokens.verify(b"AtzsMG-olbL3Un2j4kKQygQocXpFWZb44iyAH6gQwf4v", "open") is None  # type: ignore[arg-type]
    assert tokens.verify(None, "open") is None  # type: ignore[arg-type]


def test_a_link_of_exactly_the_longest_length_is_tracked(tokens: Tokens) -> None:
    url = "https://example.com/" + "a" * (_MAX_TAIL - len("https://example.com/"))
    assert len(url.encode()) == _MAX_TAIL
    data = tokens.verify(tokens.click(7, 0, url), "click")
    assert data is not None and data.url == url
    with pytest.raises(ValueError, match="too long"):
        tokens.click(7, 0, url + "a")


def test_an_empty_secret_is_refused_saying_so() -> None:
    with pytest.raises(ValueError, match="^the tracking secret must not be empty$"):
        Tokens(b"")
    with pytest.raises(ValueError, match="^the tracking secret must not be empty$"):
        LegacyTokens(b"")


def test_an_authentic_open_token_with_bytes_after_its_id_fails(tokens: Tokens) -> None:
    # Only the key's holder can seal one; still, the open format has nothing after the id.
    assert tokens.verify(tokens._seal(_head("open", 7)), "open") == TokenData("open", 7)
    assert tokens.verify(tokens._seal(_head("open", 7) + b"x"), "open") is None
