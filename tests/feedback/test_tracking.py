"""Reward hygiene: scanner clicks and machine opens are told apart from people."""

from __future__ import annotations

import pytest

from engine.feedback.bots import is_bot_user_agent, is_machine_open


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
