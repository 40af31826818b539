"""Tracked links: only the links a campaign's author wrote become click-tracked links.

The author vouches for a link in three ways: a URL written literally in a template's
source (found in the Jinja token stream's literal data, never in the rendered text),
``item_url(item)`` (catalogue URLs come from the operator's own imports) and
``track_url(url)``. While a template renders, each of them is a placeholder URL holding a
random nonce that data cannot know. Afterwards an ``<a href>`` of the HTML part (or a URL
of a ``.txt`` template) becomes a tracked link when it is exactly a placeholder, or a
placeholder followed by text written literally right after a ``{{ ... }}`` that starts a
path, query or fragment (``{{ item_url(item) }}?ref=mail``). Everything else stays as
rendered, autoescaped and untracked: a URL in a name, a title or any other value,
``href="{{ recipient.website }}"``, or a placeholder that data extended. No value can
mint a redirect.
"""

from __future__ import annotations

import html
import re
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from jinja2.ext import Extension
from jinja2.lexer import Token, TokenStream

# A URL as found in text: what stops it also ends an HTML attribute value.
_URL = re.compile(r"https?://[^\s<>\"'\[\]]+", re.IGNORECASE)
_URL_CHARS = re.compile(r"[^\s<>\"'\[\]]*")
_TRAILING_PUNCTUATION = ".,;:!?'\""
_SUFFIX_STARTS = ("/", "?", "#", "&")


@dataclass(frozen=True)
class Link:
    """What a placeholder stands for: ``url`` is where a click goes; ``source`` the literal
    as written in the template (None for a helper's URL); ``item`` the (item id, position)
    of an ``item_url`` link."""

    url: str
    source: str | None = None
    item: tuple[str, int] | None = None


def _host(url: str) -> str:
    """The host of an http(s) URL ("" when it has none a browser would agree on)."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    return "" if "\\" in url.split("?", 1)[0] else host


def trim_url(found: str) -> str:
    """``found`` without the sentence punctuation or unbalanced ``)`` that follows a URL."""
    end = len(found)
    while end and (
        found[end - 1] in _TRAILING_PUNCTUATION
        or (found[end - 1] == ")" and found[:end].count("(") < found[:end].count(")"))
    ):
        end -= 1
    return found[:end]


class LinkMarks:
    """One renderer's placeholders: the literal URLs of every template compiled so far,
    and the literal text written right after an expression (allowed link suffixes).

    The nonce lives as long as the renderer; placeholders never leave the process (a
    rendered message still holding one is refused, see ``leaked``).
    """

    def __init__(self) -> None:
        """A fresh nonce, no literals yet."""
        self.nonce = secrets.token_hex(12)
        self.base = f"https://x{self.nonce}.tailormail.invalid/"
        self.pattern = re.compile(re.escape(self.base) + r"[liu]\d+/")
        self.in_text = re.compile(self.pattern.pattern + _URL_CHARS.pattern)
        self._leak = re.compile(self.nonce, re.IGNORECASE)
        self._lock = threading.Lock()  # templates compile in executor threads
        self._literals: dict[tuple[str, bool], str] = {}
        self.links: dict[str, Link] = {}
        self.suffixes: set[str] = {""}

    def mark(self, data: str, *, html_source: bool, after_expression: bool) -> str:
        """Literal template ``data`` with each http(s) URL replaced by its placeholder;
        text that directly follows an expression is recorded as an allowed suffix."""
        if "://" in data:
            data = _URL.sub(lambda m: self._literal(m.group(0), html_source), data)
        if after_expression:
            run = _URL_CHARS.match(data)
            suffix = run.group(0) if run else ""
            # Only a path, query or fragment: appended to any URL it cannot change the host.
            if suffix[:1] in _SUFFIX_STARTS:
                with self._lock:
                    self.suffixes.update({suffix, trim_url(suffix)})
                    if html_source:
                        self.suffixes.add(html.unescape(suffix))
        return data

    def _literal(self, found: str, html_source: bool) -> str:
        # The text part's heuristic: "see https://x.example/a." links to .../a, not "a.".
        written = found if html_source else trim_url(found)
        key = (written, html_source)
        with self._lock:
            placeholder = self._literals.get(key)
            if placeholder is None:
                placeholder = self._literals[key] = f"{self.base}l{len(self._literals)}/"
                url = html.unescape(written) if html_source else written
                self.links[placeholder] = Link(url, source=written)
        return placeholder + found[len(written) :]

    def leaked(self, rendered: str) -> bool:
        """Whether ``rendered`` still holds the nonce (a filter altered a placeholder)."""
        return self._leak.search(rendered) is not None


def literal_links_extension(
    marks: LinkMarks, is_html: Callable[[str | None], bool]
) -> type[Extension]:
    """A Jinja extension that marks the literal URLs of each template as it compiles."""

    class LiteralLinks(Extension):
        """Replaces http(s) URLs in the literal data of a template's token stream."""

        def filter_stream(self, stream: TokenStream) -> Iterator[Token]:
            """Every token as lexed, literal data with its URLs marked."""
            html_source = is_html(stream.name)
            previous = ""
            for token in stream:
                if token.type == "data":
                    value = marks.mark(
                        token.value,
                        html_source=html_source,
                        after_expression=previous == "variable_end",
                    )
                    token = Token(token.lineno, token.type, value)
                previous = token.type
                yield token

    return LiteralLinks


class MessageLinks:
    """The links of one message: ``item_url`` and ``track_url`` for its templates, then
    the tracked-link index of each placeholder the rewriting finds."""

    def __init__(
        self,
        marks: LinkMarks,
        items: Sequence[Any],
        unsubscribe_url: str,
        allow_host: Callable[[str], bool] | None = None,
    ) -> None:
        """Links for the message whose ``items`` are ``items``; ``allow_host``, when given,
        says which hosts ``track_url`` may track (a triggered campaign's ``link_hosts``)."""
        self.marks = marks
        self.allow_host = allow_host
        self.items = list(items)
        self.unsubscribe_url = unsubscribe_url
        self._own: dict[str, Link] = {}
        self._keys: dict[tuple[Any, ...], str] = {}
        self._indexes: dict[tuple[str, ...], int] = {}
        self.targets: list[str] = []
        self.link_items: list[tuple[str, int] | None] = []

    def item_url(self, item: Any, url: str | None = None) -> str:
        """The template helper: the tracked link to ``item`` (its ``url`` unless given).

        Each (position, URL) is its own link, so a click says which item at which position
        drew it. Positions count from 0 in the email's ``items``.
        """
        position = self._position(item)
        item_id = str(item["id"])
        target = url if url is not None else item.get("url")
        if not isinstance(target, str) or not target.lower().startswith(("http://", "https://")):
            raise ValueError(
                f"item_url(): item {item_id!r} has no http(s) 'url' attribute "
                "(import one with the catalogue, or call item_url(item, url))"
            )
        return self._placeholder(
            ("i", position, target), "i", Link(target, None, (item_id, position))
        )

    def track_url(self, url: Any) -> Any:
        """The template helper: ``url`` as a tracked link, by the author's explicit choice.

        Anything but an http(s) URL (``mailto:``, empty, not a string) comes back unchanged
        and untracked, so an odd value never fails a send.
        """
        if not isinstance(url, str) or url == self.unsubscribe_url:
            return url
        if not url.lower().startswith(("http://", "https://")) or _has_space(url):
            return url
        if self.allow_host is not None and not self.allow_host(_host(url)):
            return url  # a caller's URL on a host the campaign did not list: text only
        return self._placeholder(("u", url), "u", Link(url))

    def _placeholder(self, key: tuple[Any, ...], kind: str, link: Link) -> str:
        placeholder = self._keys.get(key)
        if placeholder is None:
            placeholder = self._keys[key] = f"{self.marks.base}{kind}{len(self._keys)}/"
            self._own[placeholder] = link
        return placeholder

    def _position(self, item: Any) -> int:
        for position, candidate in enumerate(self.items):
            if candidate is item:
                return position
        item_id = item.get("id") if isinstance(item, Mapping) else None
        for position, candidate in enumerate(self.items):
            if item_id is not None and candidate.get("id") == item_id:
                return position
        raise ValueError("item_url() takes one of the email's items (for item in items)")

    def _link(self, placeholder: str) -> Link | None:
        return self._own.get(placeholder) or self.marks.links.get(placeholder)

    def tracked(self, value: str) -> int | None:
        """The tracked-link index ``value`` (an href or a text URL) stands for, or None
        when it is not a link the author wrote; identical targets share one index."""
        match = self.marks.pattern.match(value)
        link = self._link(match.group(0)) if match else None
        if match is None or link is None:
            return None
        rest = value[match.end() :]
        if rest not in self.marks.suffixes:
            return None  # data extended the link: it is no longer what the author wrote
        target = link.url + self.plain(rest)
        key = (match.group(0), rest) if link.item else (target,)
        index = self._indexes.get(key)
        if index is None:
            index = self._indexes[key] = len(self.targets)
            self.targets.append(target)
            self.link_items.append(link.item)
        return index

    def plain(self, text: str) -> str:
        """``text`` with every placeholder replaced by its URL (no escaping)."""
        return self._restore(text, lambda link: link.url)

    def untracked(self, text: str, *, html_part: bool) -> str:
        """Put back, where a placeholder did not become a tracked link, what was written:
        a literal as in the source, a helper's URL (escaped in the HTML part)."""

        def written(link: Link) -> str:
            if link.source is not None:
                return link.source
            return html.escape(link.url) if html_part else link.url

        return self._restore(text, written)

    def _restore(self, text: str, value: Callable[[Link], str]) -> str:
        if self.marks.base not in text:
            return text

        def one(match: re.Match[str]) -> str:
            link = self._link(match.group(0))
            return match.group(0) if link is None else value(link)

        return self.marks.pattern.sub(one, text)


def _has_space(url: str) -> bool:
    return any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url)


# Skip comments, scripts and styles whole; rewrite only the start tags of <a> elements.
_HTML_LINKS = re.compile(
    r"<!--.*?-->|<(script|style)\b.*?</\1\s*>|<a\b(?:[^>\"']|\"[^\"]*\"|'[^']*')*>",
    re.IGNORECASE | re.DOTALL,
)
HREF = re.compile(r"(?<=\s)href\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s\"'=<>`]+))", re.I)
"""An ``href`` attribute in a start tag; the value is in whichever group is not None."""


def rewrite_html(body: str, links: MessageLinks, click: Callable[[int], str]) -> tuple[str, bool]:
    """Point each ``<a href>`` the author wrote at the click tracker (``click`` makes the
    tracked URL of a link index); report whether the body links the unsubscribe page."""
    has_unsubscribe = False

    def anchor(match: re.Match[str]) -> str:
        nonlocal has_unsubscribe
        tag = match.group(0)
        if tag[:2].lower() != "<a":
            return tag
        href = HREF.search(tag)
        if href is None:
            return tag
        url = html.unescape(next(g for g in href.groups() if g is not None)).strip()
        if url == links.unsubscribe_url:
            has_unsubscribe = True
            return tag
        index = links.tracked(url)
        if index is None:
            return tag  # data, mailto:, #anchors and relative links stay as rendered
        new = f'href="{html.escape(click(index))}"'
        return tag[: href.start()] + new + tag[href.end() :]

    body = _HTML_LINKS.sub(anchor, body)
    return body, has_unsubscribe


def rewrite_text(text: str, links: MessageLinks, click: Callable[[int], str]) -> str:
    """Point each URL the author wrote in a ``.txt`` template at the click tracker."""
    if links.marks.base not in text:
        return text

    def url(match: re.Match[str]) -> str:
        found = match.group(0)
        link = trim_url(found)
        index = links.tracked(link)
        return found if index is None else click(index) + found[len(link) :]

    return links.marks.in_text.sub(url, text)
