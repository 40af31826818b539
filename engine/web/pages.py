"""The unsubscribe pages: what will stop is said before and after, in plain words."""

from __future__ import annotations

import html

from starlette.responses import HTMLResponse

# Every answer: never cached, and never sniffed into another type than it says.
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
# Every HTML page: never framed (a framed unsubscribe button can be clickjacked).
PAGE_HEADERS = NO_STORE | {
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
}
SCOPES = ("campaign", "all")
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}}
button{{display:block;margin:.75rem 0;padding:.5rem 1rem;font-size:1rem}}</style>
</head><body><h1>{title}</h1>{body}</body></html>
"""


def page(title: str, body: str) -> HTMLResponse:
    """A small self-contained HTML page (no scripts, no external resources)."""
    return HTMLResponse(_PAGE.format(title=html.escape(title), body=body), headers=PAGE_HEADERS)


def _these(campaign: str | None) -> str:
    return f"the “{html.escape(campaign)}” emails" if campaign else "the emails of this campaign"


def _button(scope: str, label: str) -> str:
    return f'<button type="submit" name="scope" value="{scope}">{label}</button>'


def confirm(campaign: str | None) -> HTMLResponse:
    """``GET /u/…``: both choices, nothing done yet (mail scanners follow every GET)."""
    body = (
        "<p>Which emails should stop?</p>"
        '<form method="post" action="">'
        + _button("campaign", f"Stop {_these(campaign)} only")
        + _button("all", "Stop all emails to this address")
        + "</form><p>Nothing changes until you choose.</p>"
    )
    return page("Unsubscribe", body)


def _stopped(scope: str, campaign: str | None, were: str) -> str:
    """What stopped for this address; after one campaign, the wider choice too."""
    if scope == "all":
        return (
            f"<p>You are {were} from all our emails. No further email will be sent "
            "to this address.</p>"
        )
    return (
        f"<p>You are {were} from {_these(campaign)}. Our other emails may still "
        "reach you.</p>"
        '<form method="post" action="">'
        + _button("all", "Stop all emails to this address too")
        + "</form>"
    )


def done(scope: str, campaign: str | None) -> HTMLResponse:
    """The answer to a POST: exactly what will stop, and (for one campaign) the wider choice."""
    return page("Unsubscribed", _stopped(scope, campaign, "unsubscribed"))


def already(scope: str, campaign: str | None) -> HTMLResponse:
    """``GET /u/…`` from someone unsubscribed already: say so; offer only what is left."""
    return page("Already unsubscribed", _stopped(scope, campaign, "already unsubscribed"))


def test_send(campaign: str | None) -> HTMLResponse:
    """The unsubscribe page of a test send or a preview: it works, and changes nothing."""
    body = (
        f"<p>This link comes from a test send of {_these(campaign)}. "
        "In a real email it would unsubscribe its reader; here nobody was unsubscribed.</p>"
    )
    return page("Test send", body)
