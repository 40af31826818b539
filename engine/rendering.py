"""Render a variant into an email: sandboxed Jinja2, text part, tracked links, headers.

Templates come from campaign authors and variables from recipients, so both environments
are sandboxed, HTML is autoescaped and the subject cannot smuggle extra headers. Only
links the author wrote become tracked links (``engine.links``): a value never mints one.
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import jinja2
import pluggy
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.errors import TemplateError
from engine.links import (
    HREF,
    LinkMarks,
    MessageLinks,
    literal_links_extension,
    rewrite_html,
    rewrite_text,
)
from engine.tokens import Tokens
from engine.types import Variant

SUBJECT_MAX_LEN = 250
_ALTERED_LINK = (
    "a filter changed a link (item_url(), track_url() or a URL written in the template); "
    "use it unchanged, and build the URL before passing it to track_url()"
)
# Says what the link offers: the page lets the reader stop this campaign or everything.
UNSUBSCRIBE_TEXT = "Unsubscribe (this campaign or all our emails)"
_STYLE_BLOCK = re.compile(r"<style\b", re.IGNORECASE)


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


NO_ITEMS = (
    "this email had no items to show (the campaign's items_per_email is 0, or its recipe "
    "found none for this recipient): set items_per_email to 1 or more, or guard the "
    "template with {% if items %}"
)


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
        # Marks the URLs written in each template's source as it compiles (once, cached).
        self.marks = LinkMarks()
        self.env.add_extension(literal_links_extension(self.marks, is_html_template))
        if pm is not None:
            pm.hook.prepare_jinja2_environment(env=self.env)
        # Plugin filters and globals work in subject lines too, without a second hook call.
        self.subject_env.filters.update(self.env.filters)
        self.subject_env.tests.update(self.env.tests)
        self.subject_env.globals.update(self.env.globals)
        self._subjects: dict[str, jinja2.Template] = {}
        self._missing: set[str] = set()  # text templates known not to exist, until ``check``

    def render(
        self,
        *,
        variant: Variant,
        variables: dict[str, Any],
        send_id: int,
        allow_host: Callable[[str], bool] | None = None,
    ) -> RenderedEmail:
        """Render ``variant`` for one send; raises ``TemplateError`` naming the variant
        (and, when the email has no items to show, saying so: a template that lists items
        then fails on the first one). ``allow_host``: the hosts ``track_url`` may track
        (None: any, as the author wrote the call)."""
        try:
            return self._render(
                variant=variant, variables=variables, send_id=send_id, allow_host=allow_host
            )
        except TemplateError as exc:
            if "items" in variables and not variables["items"]:
                raise TemplateError(f"{exc}; {NO_ITEMS}") from exc
            raise

    def _render(
        self,
        *,
        variant: Variant,
        variables: dict[str, Any],
        send_id: int,
        allow_host: Callable[[str], bool] | None,
    ) -> RenderedEmail:
        """``render``'s work.

        Only links the author wrote are tracked (see ``engine.links``); the text part made
        from the HTML is made from the already tracked HTML and never rewritten again.
        """
        campaign = str((variables.get("campaign") or {}).get("name", ""))
        unsubscribe_url = f"{self.base_url}/u/{self.tokens.unsubscribe(send_id, campaign)}"
        items = variables.get("items") or []
        links = MessageLinks(self.marks, items, unsubscribe_url, allow_host)
        context = {
            **variables,
            "unsubscribe_url": unsubscribe_url,
            "item_url": links.item_url,
            "track_url": links.track_url,
        }
        subject = links.untracked(self._render_subject(variant, context), html_part=False)
        body = self._render_template(variant, variant.template, context)
        text = self._render_text(variant, context)
        if _STYLE_BLOCK.search(body):
            body = self._inline_css(variant, body)

        def click(index: int) -> str:
            # The target travels in the token: the redirect needs no database.
            token = self.tokens.click(send_id, index, links.targets[index])
            return f"{self.base_url}/c/{token}"

        body, has_unsubscribe = rewrite_html(body, links, click)
        body = links.untracked(body, html_part=True)
        if text is None:
            text = html_to_text(body)
        else:
            text = links.untracked(rewrite_text(text, links, click), html_part=False)
        if unsubscribe_url not in text:
            text = f"{text.rstrip()}\n\n{UNSUBSCRIBE_TEXT}: {unsubscribe_url}\n"
        if not has_unsubscribe:
            body = _before_body_end(body, _unsubscribe_footer(unsubscribe_url))
        for part, name in ((subject, "subject"), (body, variant.template), (text, "text part")):
            if self.marks.leaked(part):
                raise self._error(variant, name, jinja2.TemplateRuntimeError(_ALTERED_LINK))
        pixel_url = html.escape(f"{self.base_url}/o/{self.tokens.open(send_id)}")
        body = _before_body_end(body, f'<img src="{pixel_url}" width="1" height="1" alt="">')
        headers = {
            "List-Unsubscribe": f"<{unsubscribe_url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",  # RFC 8058
        }
        return RenderedEmail(subject, body, text, links.targets, headers, links.link_items)

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
        # lazy: only a variant with a <style> block needs it; css_inline is maintained
        # (Rust, servo's CSS parser), premailer is not
        import css_inline

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


def clean_subject(subject: str) -> str:
    """Collapse whitespace, drop control characters (no header injection), cap the length."""
    collapsed = " ".join(subject.split())
    printable = "".join(c for c in collapsed if unicodedata.category(c) != "Cc")
    return printable[:SUBJECT_MAX_LEN].rstrip()


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
    found = HREF.search(match.group(1) or "")
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
