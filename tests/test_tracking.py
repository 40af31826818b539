"""Signed tracking tokens and reward hygiene (scanner clicks, machine opens)."""

from __future__ import annotations

import base64

import pytest

from engine.tracking import TokenData, Tokens, is_bot_user_agent, is_machine_open

SECRET = b"0123456789abcdef0123456789abcdef"
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.fixture
def tokens() -> Tokens:
    return Tokens(SECRET)


def all_tokens(tokens: Tokens) -> list[tuple[str, str]]:
    return [
        (tokens.click(42, 3), "click"),
        (tokens.open(42), "open"),
        (tokens.unsubscribe(42), "unsubscribe"),
    ]


def test_round_trip_for_each_kind(tokens: Tokens) -> None:
    assert tokens.verify(tokens.click(7, 0), "click") == TokenData("click", 7, 0)
    assert tokens.verify(tokens.click(2**63, 65535), "click") == TokenData("click", 2**63, 65535)
    assert tokens.verify(tokens.open(123456789), "open") == TokenData("open", 123456789)
    assert tokens.verify(tokens.unsubscribe(0), "unsubscribe") == TokenData("unsubscribe", 0)


def test_tokens_are_url_safe_compact_and_opaque(tokens: Tokens) -> None:
    for token, _ in all_tokens(tokens):
        assert set(token) <= set(ALPHABET)
        assert "=" not in token
        assert len(token) <= 40
    # Same ids, same token (deterministic); different ids, different tokens.
    assert tokens.click(1, 2) == tokens.click(1, 2)
    assert len({tokens.click(1, 2), tokens.click(1, 3), tokens.click(2, 2)}) == 3


def test_mac_is_at_least_128_bits(tokens: Tokens) -> None:
    token = tokens.open(1)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    payload_len = 1 + 8  # kind byte + 64-bit send id
    assert len(raw) - payload_len >= 16


def test_every_single_character_change_fails(tokens: Tokens) -> None:
    for token, kind in all_tokens(tokens):
        for position in range(len(token)):
            for char in ALPHABET:
                if char == token[position]:
                    continue
                changed = token[:position] + char + token[position + 1 :]
                assert tokens.verify(changed, kind) is None, (kind, position, char)


def test_every_single_byte_change_fails(tokens: Tokens) -> None:
    for token, kind in all_tokens(tokens):
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        for position in range(len(raw)):
            for flip in (0x01, 0x80, 0xFF):
                changed = bytearray(raw)
                changed[position] ^= flip
                forged = base64.urlsafe_b64encode(bytes(changed)).rstrip(b"=").decode()
                assert tokens.verify(forged, kind) is None, (kind, position, flip)


def test_every_truncation_and_extension_fails(tokens: Tokens) -> None:
    for token, kind in all_tokens(tokens):
        for end in range(len(token)):
            assert tokens.verify(token[:end], kind) is None
            assert tokens.verify(token[end + 1 :], kind) is None
        for suffix in ("A", "AA", "=", "==", "\n", " "):
            assert tokens.verify(token + suffix, kind) is None


def test_token_of_one_kind_fails_as_another(tokens: Tokens) -> None:
    for token, kind in all_tokens(tokens):
        for other in ("click", "open", "unsubscribe"):
            if other != kind:
                assert tokens.verify(token, other) is None


def test_open_and_unsubscribe_tokens_cannot_be_swapped(tokens: Tokens) -> None:
    # Same length, only the kind byte differs: the MAC must still tell them apart.
    raw = bytearray(base64.urlsafe_b64decode(tokens.open(5) + "=="))
    raw[0] = 3  # the unsubscribe kind byte
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert tokens.verify(forged, "unsubscribe") is None


def test_token_from_another_secret_fails(tokens: Tokens) -> None:
    other = Tokens(b"another secret, equally long!!!!")
    for token, kind in all_tokens(other):
        assert tokens.verify(token, kind) is None
        assert other.verify(token, kind) is not None


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


def test_out_of_range_ids_are_refused(tokens: Tokens) -> None:
    with pytest.raises(ValueError):
        tokens.open(-1)
    with pytest.raises(ValueError):
        tokens.click(1, 65536)
    with pytest.raises(ValueError):
        Tokens(b"")


@pytest.mark.parametrize(
    "ua",
    [
        None,
        "",
        "   ",
        "curl/8.4.0",
        "Wget/1.21.4",
        "python-requests/2.31.0",
        "Go-http-client/1.1",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "Mozilla/5.0 (compatible; Baiduspider/2.0)",
        "Mozilla/5.0 (compatible; AhrefsBot/7.0)",
        "SkypeUriPreview Preview/0.5",
        "facebookexternalhit/1.1",
        "Barracuda Sentinel (EE)",
        "Mozilla/5.0 Proofpoint URL Defense",
        "Mimecast URL Protect",
        "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.4266; Pro)",
        "Mozilla/4.0 (compatible; ms-office; MSOffice 16)",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 HeadlessChrome/120.0 Safari/537.36",
    ],
)
def test_bot_user_agents(ua: str | None) -> None:
    assert is_bot_user_agent(ua)


@pytest.mark.parametrize(
    "ua",
    [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:121.0) Gecko/20100101 Firefox/121.0",
        "Mozilla/5.0 (Linux; Android 10; CUBOT X19) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/119.0 Mobile Safari/537.36",
    ],
)
def test_human_user_agents(ua: str) -> None:
    assert not is_bot_user_agent(ua)
    assert not is_machine_open(ua)


@pytest.mark.parametrize(
    "ua",
    [
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
        "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
        "Mozilla/5.0",  # Apple Mail Privacy Protection's proxy
    ],
)
def test_machine_opens(ua: str) -> None:
    assert is_machine_open(ua)


def test_apple_mail_reading_is_not_a_machine_open() -> None:
    apple_mail = (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    )
    assert not is_machine_open(apple_mail)
    assert not is_machine_open(None)
