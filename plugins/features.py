"""Built-in context features from the recipient's record, computed for a whole batch.

- **Attributes**: every scalar, non-empty attribute, except personal data. The default
  deny-list (``PERSONAL``) drops any attribute whose name contains one of its words
  (``first_name``, ``home_address``, ``phone_number``, ``date_of_birth`` ...): names,
  addresses, phone numbers, birth dates and identity numbers identify a person and teach
  the model nothing about a group. A campaign's ``[features]`` table adjusts it:
  ``allow = ["city"]`` keeps only the attributes listed (even deny-listed ones, on
  purpose), ``deny = ["segment"]`` drops more.
- **Mailbox provider**: ``email_provider`` is the group of the address's domain (gmail,
  microsoft, yahoo, apple, ...; ``other`` for the rest), never the raw domain.
- **Local time**: ``local_hour`` ("09") and ``local_weekday`` ("mon") in the recipient's
  time zone, when the ``timezone`` (or ``time_zone``, ``tz``) attribute names a valid IANA
  zone; the time is the engine's clock (``engine.clock``).

Engagement history (sends, clicks, per variant) is ``plugins.features_history``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine import Recipient, hookimpl
from engine.clock import utcnow

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.campaigns import Campaign

_SCALARS = (str, int, float, bool)
# Words that mark an attribute as personal data; matched against the words of its name.
PERSONAL = frozenset(
    {
        "name", "firstname", "lastname", "surname", "fullname", "forename", "nickname",
        "email", "mail", "address", "street", "addr", "postcode", "postal", "zip",
        "zipcode", "phone", "telephone", "tel", "fax", "birthday", "birthdate", "dob",
        "birth", "ssn", "passport", "iban", "ip", "password", "token",
    }
)  # fmt: skip
TIMEZONE_ATTRIBUTES = ("timezone", "time_zone", "tz")
PROVIDERS = {  # mailbox provider group -> domains (a domain's own name is never a feature)
    "gmail": ("gmail.com", "googlemail.com"),
    "microsoft": ("outlook.com", "hotmail.com", "live.com", "msn.com", "hotmail.co.uk",
                  "hotmail.fr", "outlook.fr", "live.fr"),
    "yahoo": ("yahoo.com", "ymail.com", "rocketmail.com", "yahoo.co.uk", "yahoo.fr"),
    "apple": ("icloud.com", "me.com", "mac.com"),
    "aol": ("aol.com",),
    "proton": ("proton.me", "protonmail.com", "pm.me"),
    "gmx": ("gmx.com", "gmx.de", "gmx.net", "web.de"),
    "yandex": ("yandex.ru", "yandex.com", "ya.ru"),
    "mailru": ("mail.ru", "bk.ru", "inbox.ru", "list.ru"),
    "zoho": ("zoho.com", "zohomail.com"),
    "isp": ("orange.fr", "free.fr", "sfr.fr", "laposte.net", "comcast.net", "verizon.net",
            "att.net", "btinternet.com", "t-online.de", "libero.it"),
}  # fmt: skip
_PROVIDER_OF = {domain: group for group, domains in PROVIDERS.items() for domain in domains}
_WORDS = re.compile(r"[a-z]+")
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@functools.lru_cache(maxsize=4096)
def is_personal(attribute: str) -> bool:
    """True when the attribute's name (words split on case, digits and punctuation, and
    run together) contains a word of the ``PERSONAL`` deny-list."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", attribute).lower()
    words = _WORDS.findall(spaced)
    return any(w in PERSONAL for w in [*words, "".join(words)])


def email_provider(email: str) -> str | None:
    """The mailbox provider group of ``email``'s domain; ``other`` when not a known one."""
    domain = email.rpartition("@")[2].strip().lower().rstrip(".")
    if not domain:
        return None
    return _PROVIDER_OF.get(domain, "other")


@functools.lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def local_time(attributes: dict[str, Any], now: datetime) -> dict[str, str]:
    """``local_hour`` and ``local_weekday`` in the recipient's zone, when it is known."""
    for key in TIMEZONE_ATTRIBUTES:
        name = attributes.get(key)
        zone = _zone(name) if isinstance(name, str) and name else None
        if zone is not None:
            local = now.astimezone(zone)
            return {"local_hour": f"{local.hour:02d}", "local_weekday": _WEEKDAYS[local.weekday()]}
    return {}


def attribute_features(
    recipient: Recipient,
    allow: Sequence[str] | None = None,
    deny: Sequence[str] = (),
) -> dict[str, Any]:
    """The recipient's scalar, non-empty attributes that may be features.

    With ``allow``, exactly those attributes (deny-listed or not); otherwise every one not
    personal by ``is_personal``; ``deny`` drops more either way.
    """
    allowed = set(allow) if allow is not None else None
    denied = set(deny)
    return {
        key: value
        for key, value in recipient.attributes.items()
        if isinstance(value, _SCALARS)
        and value != ""
        and key not in denied
        and (key in allowed if allowed is not None else not is_personal(key))
    }


def record_features(
    recipient: Recipient,
    now: datetime,
    allow: Sequence[str] | None = None,
    deny: Sequence[str] = (),
) -> dict[str, Any]:
    """Attributes, mailbox provider and local time: every feature of the record itself."""
    features = attribute_features(recipient, allow, deny)
    provider = email_provider(recipient.email)
    if provider is not None and "email_provider" not in deny:
        features["email_provider"] = provider
    features.update(local_time(recipient.attributes, now))
    return features


@hookimpl(trylast=True)  # a fallback: any plugin answering the same key wins
def recipient_features_batch(
    engine: Engine, campaign: Campaign, recipients: Sequence[Recipient]
) -> dict[str, dict[str, Any]]:
    """The record features of every recipient of the batch (no database access)."""
    now = utcnow()
    allow, deny = campaign.features.allow, campaign.features.deny
    return {r.recipient_id: record_features(r, now, allow, deny) for r in recipients}
