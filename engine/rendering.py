"""Render a variant into an email: sandboxed Jinja2, text part, tracked links, headers.

Templates come from campaign authors and variables from recipients, so both environments
are sandboxed, HTML is autoescaped and the subject cannot smuggle extra headers.
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import jinja2
import pluggy
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.errors import TemplateError
from engine.types import Variant
from engine.web.tokens import Tokens

SUBJECT_MAX_LEN = 250
# Says what the link offers: the page lets the reader stop this campaign or everything.
UNSUBSCRIBE_TEXT = "Unsubscribe (this campaign or all our emails)"
# Skip comments, scripts and styles whole; rewrite only the start tags of <a> elements.
_HTML_LINKS = re.compile(
    r"<!--.*?-->|<(script|style)\b.*?</\1\s*>|<a\b(?:[^>\"']|\"[^\"]*\"|'[^']*')*>",
    re.IGNORECASE | re.DOTALL,
)
_HREF = re.compile(r"(?<=\s)href\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s\"'=<>`]+))", re.I)
_TEXT_URL = re.compile(r"https?://[^\s<>\"'\[\]]+", re.IGNORECASE)
_TRAILING_PUNCTUATION = ".,;:!?'\""
_STYLE_BLOCK = re.compile(r"<style\b", re.IGNORECASE)
# Placeholders of ``item_url`` links before tracking (".invalid" never resolves, RFC 2606).
_ITEM_LINK_BASE = "https://item-link.tailormail.invalid/"
_ITEM_LINK = re.compile(re.escape(_ITEM_LINK_BASE) + r"\d+")


@dataclass
class RenderedEmail:
    """A rendered message body: ``links`` are the original URLs, by tracked-link index;
    ``link_items`` says, per link index, which item at which position (0 = first of the
    email's ``items``) a link made by ``item_url`` points at (None for other links)."""

    subject: str
    html: str
    text: str
    links: list[str]
    headers: dict[str, str]
    link_items: list[tuple[str, int] | None] = field(default_factory=list)


class Renderer:
    """Renders campaign variants from ``templates_dir`` for one tracking server."""

    def __init__(
        self,
        templates_dir: Path,
        tokens: Tokens,
        tracking_base_url: str,
        pm: pluggy.PluginManager | None = None,
    ) -> None:
        """Build the sandboxed environments; plugins adjust them via ``pm`` once, here."""
        self.templates_dir = Path(templates_dir)
        self.tokens = tokens
        self.base_url = tracking_base_url.rstrip("/")
        # Immutable: templates cannot mutate shared variables (one recipe list, many mails).
        self.env = ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader(self.templates_dir),
            undefined=jinja2.StrictUndefined,
            autoescape=is_html_template,
            # No stat() per message: ``check`` (run at the start of every run) reloads.
            auto_reload=False,
        )
        self.subject_env = ImmutableSandboxedEnvironment(
            undefined=jinja2.StrictUndefined, autoescape=False
        )
        if pm is not None:
            pm.hook.prepare_jinja2_environment(env=self.env)
        # Plugin filters and globals work in subject lines too, without a second hook call.
        self.subject_env.filters.update(self.env.filters)
        self.subject_env.tests.update(self.env.tests)
        self.subject_env.globals.update(self.env.globals)
        self._subjects: dict[str, jinja2.Template] = {}
        self._missing: set[str] = set()  # text templates known not to exist, until ``check``

    def render(self, *, variant: Variant, variables: dict[str, Any], send_id: int) -> RenderedEmail:
        """Render ``variant`` for one send; raises ``TemplateError`` naming the variant."""
        campaign = str((variables.get("campaign") or {}).get("name", ""))
        unsubscribe_url = f"{self.base_url}/u/{self.tokens.unsubscribe(send_id, campaign)}"
        item_links = ItemLinks(variables.get("items") or [])
        context = {**variables, "unsubscribe_url": unsubscribe_url, "item_url": item_links.url}
        subject = self._render_subject(variant, context)
        body = self._render_template(variant, variant.template, context)
        text = self._render_text(variant, context)
        if text is None:
            text = html_to_text(body)
        if _STYLE_BLOCK.search(body):
            body = self._inline_css(variant, body)

        indexes: dict[str, int] = {}  # identical URLs share one index (an item link: its key)

        def track(url: str) -> str:
            index = indexes.setdefault(url, len(indexes))
            target = item_links.target(url)
            # The target travels in the token: the redirect needs no database.
            return f"{self.base_url}/c/{self.tokens.click(send_id, index, target or url)}"

        body, has_unsubscribe = _rewrite_html_links(body, track, unsubscribe_url)
        if not has_unsubscribe:
            body = _before_body_end(body, _unsubscribe_footer(unsubscribe_url))
        text = _rewrite_text_links(text, track, unsubscribe_url)
        if unsubscribe_url not in text:
            text = f"{text.rstrip()}\n\n{UNSUBSCRIBE_TEXT}: {unsubscribe_url}\n"
        body, text = item_links.untracked(body), item_links.untracked(text)
        pixel_url = html.escape(f"{self.base_url}/o/{self.tokens.open(send_id)}")
        body = _before_body_end(body, f'<img src="{pixel_url}" width="1" height="1" alt="">')
        headers = {
            "List-Unsubscribe": f"<{unsubscribe_url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",  # RFC 8058
        }
        links = [item_links.target(url) or url for url in indexes]
        return RenderedEmail(subject, body, text, links, headers, item_links.items_of(indexes))

    def check(self, variants: Sequence[Variant], variables: dict[str, Any]) -> None:
        """Render every variant once (``send_id=0``); raise ``TemplateError`` on the first
        problem, so a broken template stops a run before anything is sent.

        Templates edited since the last run are read again from here on.
        """
        if self.env.cache is not None:
            self.env.cache.clear()
        self._missing.clear()
        for variant in variants:
            self.render(variant=variant, variables=variables, send_id=0)

    def _render_subject(self, variant: Variant, context: dict[str, Any]) -> str:
        try:
            template = self._subjects.get(variant.subject)
            if template is None:
                template = self._subjects[variant.subject] = self.subject_env.from_string(
                    variant.subject
                )
            rendered = template.render(context)
        except Exception as exc:
            raise self._error(variant, "subject", exc) from exc
        return clean_subject(rendered)

    def _render_template(
        self,
        variant: Variant,
        name: str,
        context: dict[str, Any],
        template: jinja2.Template | None = None,
    ) -> str:
        try:
            return (template or self.env.get_template(name)).render(context)
        except Exception as exc:
            raise self._error(variant, name, exc) from exc

    def compile(self, variant: Variant) -> None:
        """Compile the variant's subject, body and text sibling without rendering them;
        a syntax error is a ``TemplateError`` naming the template and line."""
        try:
            self.subject_env.from_string(variant.subject)
        except jinja2.TemplateSyntaxError as exc:
            raise self._error(variant, "subject", exc) from exc
        for name in (variant.template, text_sibling(variant.template)):
            try:
                self.env.get_template(name)
            except jinja2.TemplateNotFound as exc:
                if name == variant.template or exc.name != name:
                    raise self._error(variant, name, exc) from exc
            except jinja2.TemplateSyntaxError as exc:
                raise self._error(variant, name, exc) from exc

    def _render_text(self, variant: Variant, context: dict[str, Any]) -> str | None:
        """The sibling ``.txt`` template rendered, or None when there is none."""
        name = text_sibling(variant.template)
        if name in self._missing:
            return None
        try:
            template = self.env.get_template(name)
        except Exception as exc:
            if isinstance(exc, jinja2.TemplateNotFound) and exc.name == name:
                self._missing.add(name)
                return None
            raise self._error(variant, name, exc) from exc
        return self._render_template(variant, name, context, template)

    def _inline_css(self, variant: Variant, body: str) -> str:
        import css_inline  # maintained (Rust, servo's CSS parser); premailer is not

        try:
            # Never fetch remote stylesheets: rendering must not depend on the network.
            inliner = css_inline.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False)
            return str(inliner.inline(body))
        except Exception as exc:
            raise self._error(variant, variant.template, exc, "CSS inlining failed: ") from exc

    def _error(
        self, variant: Variant, name: str, exc: Exception, prefix: str = ""
    ) -> TemplateError:
        """A ``TemplateError`` naming the variant, the template and the line when known."""
        where, line = name, None
        if isinstance(exc, jinja2.TemplateSyntaxError):
            line = exc.lineno
            if exc.name and exc.name != name:
                where = f"{name}, in {exc.name}"
        else:
            tb = exc.__traceback__
            while tb is not None:
                # Jinja rewrites template frames into fake ones that carry this global.
                if "__jinja_exception__" in tb.tb_frame.f_globals:
                    filename = tb.tb_frame.f_code.co_filename
                    line = tb.tb_lineno
                    inner = self._template_name(filename)
                    where = name if inner in (None, name) else f"{name}, in {inner}"
                tb = tb.tb_next
        if line is not None:
            where += f", line {line}"
        if isinstance(exc, jinja2.TemplateNotFound):
            cause = f"template {exc.name!r} not found in {self.templates_dir}"
        elif isinstance(exc, jinja2.TemplateError):
            cause = exc.message or type(exc).__name__
        else:
            cause = f"{type(exc).__name__}: {exc}"
        return TemplateError(f"variant {variant.key!r} ({where}): {prefix}{cause}")

    def _template_name(self, filename: str) -> str | None:
        if filename.startswith("<"):
            return None  # "<template>": a subject line, compiled from a string
        try:
            path = Path(filename).resolve().relative_to(self.templates_dir.resolve())
        except (ValueError, OSError):
            return None
        return path.as_posix()


_HTML_SUFFIXES = (".html", ".htm", ".xhtml")
_JINJA_SUFFIXES = (".j2", ".jinja", ".jinja2")


def is_text_template(name: str | None) -> bool:
    """A text part (``x.txt``, ``x.txt.j2``...): a ``.txt`` among the name's suffixes."""
    return name is not None and ".txt" in PurePosixPath(name).suffixes


def is_html_template(name: str | None) -> bool:
    """Whether Jinja autoescapes ``name``: every template but a text part is HTML, whatever
    its extension (``.html``, ``.html.j2``, ``.jinja``, ``.j2``, ``.xhtml``, none)."""
    return not is_text_template(name)


@functools.lru_cache(maxsize=256)  # a pure function of the name, asked once per message
def text_sibling(name: str) -> str:
    """The text part's template for the body ``name``: ``.txt`` in place of ``.html``
    (``.htm``, ``.xhtml``), else before a ``.j2``/``.jinja`` suffix, else appended.

    ``x.html`` ↔ ``x.txt``, ``x.html.j2`` ↔ ``x.txt.j2``, ``x.j2`` ↔ ``x.txt.j2``,
    ``x.jinja`` ↔ ``x.txt.jinja``, ``x`` ↔ ``x.txt``.
    """
    path = PurePosixPath(name)
    suffixes = path.suffixes
    stem = path.name[: len(path.name) - len("".join(suffixes))]
    lowered = [suffix.lower() for suffix in suffixes]
    if html := [n for n, suffix in enumerate(lowered) if suffix in _HTML_SUFFIXES]:
        suffixes[html[0]] = ".txt"
    elif lowered and lowered[-1] in _JINJA_SUFFIXES:
        suffixes.insert(len(suffixes) - 1, ".txt")
    else:
        suffixes.append(".txt")
    return path.with_name(stem + "".join(suffixes)).as_posix()


class ItemLinks:
    """``item_url(item)`` for one message: a link to an item that knows its position.

    Each (position, URL) gets a placeholder URL that the link rewriting turns into its own
    tracked link, so the same URL at two positions makes two links, and a click says which
    item at which position drew it. Positions count from 0 in the email's ``items``.
    """

    def __init__(self, items: Sequence[Any]) -> None:
        """Links for the message whose template variable ``items`` is ``items``."""
        self.items = list(items)
        self._keys: dict[tuple[int, str], str] = {}
        self._links: dict[str, tuple[str, str, int]] = {}  # placeholder -> url, item, position

    def url(self, item: Any, url: str | None = None) -> str:
        """The template helper: the tracked link to ``item`` (its ``url`` unless given)."""
        position = self._position(item)
        item_id = str(item["id"])
        target = url if url is not None else item.get("url")
        if not isinstance(target, str) or not target.lower().startswith(("http://", "https://")):
            raise ValueError(
                f"item_url(): item {item_id!r} has no http(s) 'url' attribute "
                "(import one with the catalogue, or call item_url(item, url))"
            )
        key = (position, target)
        placeholder = self._keys.get(key)
        if placeholder is None:
            placeholder = self._keys[key] = f"{_ITEM_LINK_BASE}{len(self._keys)}"
            self._links[placeholder] = (target, item_id, position)
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

    def _resolve(self, url: str) -> tuple[str, str, int] | None:
        """URL, item and position of a placeholder (a suffix the template added is kept)."""
        match = _ITEM_LINK.match(url) if url.startswith(_ITEM_LINK_BASE) else None
        found = self._links.get(match.group(0)) if match else None
        if match is None or found is None:
            return None
        return found[0] + url[match.end() :], found[1], found[2]

    def target(self, url: str) -> str | None:
        """The real URL behind a placeholder, or None for any other URL."""
        found = self._resolve(url)
        return found[0] if found else None

    def items_of(self, links: Iterable[str]) -> list[tuple[str, int] | None]:
        """Per tracked link, in index order: ``(item_id, position)`` or None."""
        found = (self._resolve(url) for url in links)
        return [(hit[1], hit[2]) if hit else None for hit in found]

    def untracked(self, text: str) -> str:
        """Put the real URL back where a placeholder was not a link (an ``<img src>``)."""
        if not self._links or _ITEM_LINK_BASE not in text:
            return text
        return _ITEM_LINK.sub(lambda m: self._links.get(m.group(0), (m.group(0),))[0], text)


def clean_subject(subject: str) -> str:
    """Collapse whitespace, drop control characters (no header injection), cap the length."""
    collapsed = " ".join(subject.split())
    printable = "".join(c for c in collapsed if unicodedata.category(c) != "Cc")
    return printable[:SUBJECT_MAX_LEN].rstrip()


def _rewrite_html_links(
    body: str, track: Callable[[str], str], unsubscribe_url: str
) -> tuple[str, bool]:
    """Point every http(s) ``<a href>`` at the click tracker; report an unsubscribe link."""
    has_unsubscribe = False

    def anchor(match: re.Match[str]) -> str:
        nonlocal has_unsubscribe
        tag = match.group(0)
        if tag[:2].lower() != "<a":
            return tag
        href = _HREF.search(tag)
        if href is None:
            return tag
        url = html.unescape(next(g for g in href.groups() if g is not None)).strip()
        if url == unsubscribe_url:
            has_unsubscribe = True
            return tag
        if not url.lower().startswith(("http://", "https://")):
            return tag  # mailto:, tel:, #anchors and relative links stay as written
        new = f'href="{html.escape(track(url))}"'
        return tag[: href.start()] + new + tag[href.end() :]

    return _HTML_LINKS.sub(anchor, body), has_unsubscribe


def _rewrite_text_links(text: str, track: Callable[[str], str], unsubscribe_url: str) -> str:
    """Point every http(s) URL of the text part at the click tracker."""

    def url(match: re.Match[str]) -> str:
        found = match.group(0)
        # Sentence punctuation and an unbalanced closing parenthesis are not the URL's.
        end = len(found)
        while end and (
            found[end - 1] in _TRAILING_PUNCTUATION
            or (found[end - 1] == ")" and found[:end].count("(") < found[:end].count(")"))
        ):
            end -= 1
        link, rest = found[:end], found[end:]
        if not link or link == unsubscribe_url:
            return found
        return track(link) + rest

    return _TEXT_URL.sub(url, text)


def _before_body_end(body: str, snippet: str) -> str:
    """Insert ``snippet`` before the last ``</body>``, or append it."""
    at = body.lower().rfind("</body")
    return body + snippet if at < 0 else body[:at] + snippet + body[at:]


def _unsubscribe_footer(unsubscribe_url: str) -> str:
    href = html.escape(unsubscribe_url)
    return (
        '<p style="font-size:12px;color:#666666;margin-top:24px">'
        f'Don\'t want these emails? <a href="{href}">Unsubscribe</a> '
        "from this campaign or from all our emails (you choose on the next page).</p>"
    )


# html_to_text works with a few regular expressions over the whole body (no parser in
# Python per tag): it runs for every message whose variant has no ``.txt`` template.
_TEXT_SKIPPED = re.compile(
    r"<!--.*?-->|<![^>]*>|<\?[^>]*>|<(script|style|title|template|noscript)\b.*?</\1\s*>"
    r"|<head\b.*?(?:</head\s*>|(?=<body\b))",  # </head> may be omitted: the body still shows
    re.IGNORECASE | re.DOTALL,
)
_TEXT_LINK = re.compile(r"<a(\s(?:[^>\"']|\"[^\"]*\"|'[^']*')*)?>(.*?)</a\s*>", re.I | re.DOTALL)
_ATTRS = r"(?:[^>\"']|\"[^\"]*\"|'[^']*')*"
_TEXT_BLOCKS = (
    "p|div|section|article|header|footer|table|tr|ul|ol|blockquote|pre|h[1-6]|hr|address|figure"
)
# Constant replacements, no Python call per tag: block tags (start or end) make a
# paragraph break, <br> a line break, <li> a bullet, a cell a space, any other tag nothing.
_TEXT_TAGS = (
    (re.compile(rf"</?(?:{_TEXT_BLOCKS})\b{_ATTRS}>", re.IGNORECASE), "\n\n"),
    (re.compile(rf"<br\b{_ATTRS}>", re.IGNORECASE), "\n"),
    (re.compile(rf"<li\b{_ATTRS}>", re.IGNORECASE), "\n- "),
    (re.compile(rf"<t[dh]\b{_ATTRS}>", re.IGNORECASE), " "),
    (re.compile(rf"</?[a-zA-Z][a-zA-Z0-9]*{_ATTRS}>"), ""),
)


def _tags_to_breaks(fragment: str) -> str:
    for pattern, replacement in _TEXT_TAGS:
        fragment = pattern.sub(replacement, fragment)
    return fragment


def _text_link(match: re.Match[str]) -> str:
    # Still HTML (escaped) here: the whole body is unescaped once, at the end.
    label = _tags_to_breaks(match.group(2))
    found = _HREF.search(match.group(1) or "")
    if found is None:
        return label
    href = next(g for g in found.groups() if g is not None).strip()
    target = html.unescape(href)
    if not target or target.startswith(("#", "javascript:")):
        return label
    if target == " ".join(html.unescape(label).split()):
        return label
    return f"{label} [{href}]" if label.strip() else f"[{href}]"


def html_to_text(body: str) -> str:
    """A plain-text alternative of ``body``: readable text, each link's URL in brackets."""
    body = " ".join(_TEXT_SKIPPED.sub("", body).split())
    body = _TEXT_LINK.sub(_text_link, body)
    body = html.unescape(_tags_to_breaks(body))
    # Collapse what entities brought back (&nbsp;), trim every line, at most one blank line.
    body = _LINE_EDGES.sub("\n", _SPACES.sub(" ", body))
    text = _BLANK_LINES.sub("\n\n", body).strip()
    return text + "\n" if text else ""


_SPACES = re.compile(r"[^\S\n]+")
_LINE_EDGES = re.compile(r" ?\n ?")
_BLANK_LINES = re.compile(r"\n{3,}")
