"""Rendering variants: sandbox, autoescape, text part, tracked links, headers, errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jinja2
import pluggy
import pytest

import engine.hookspecs
from engine.errors import TemplateError
from engine.hookspecs import PROJECT, hookimpl
from engine.links import LinkMarks
from engine.rendering import RenderedEmail, Renderer, html_to_text
from engine.tokens import TokenData, Tokens
from engine.types import Variant

BASE = "https://t.example.com"
TOKENS = Tokens(b"rendering-test-secret-0123456789")
VARS: dict[str, Any] = {
    "campaign": {"name": "weekly", "description": "Weekly picks"},
    "recipient": {"first_name": "Ada"},
    "items": [{"title": "Tea", "url": "https://shop.example/tea?a=1&b=2"}],
}


def write(root: Path, name: str, source: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)


def render(
    tmp_path: Path,
    source: str,
    *,
    subject: str = "Hi {{ recipient.first_name }}",
    variables: dict[str, Any] | None = None,
    text: str | None = None,
    send_id: int = 9,
) -> RenderedEmail:
    write(tmp_path, "weekly/a.html", source)
    if text is not None:
        write(tmp_path, "weekly/a.txt", text)
    renderer = Renderer(tmp_path, TOKENS, BASE + "/")
    variant = Variant("a", subject, "weekly/a.html")
    return renderer.render(variant=variant, variables=variables or VARS, send_id=send_id)


def click_links(markup: str) -> list[str]:
    return re.findall(re.escape(BASE) + r"/c/([A-Za-z0-9_-]+)", markup)


def unsubscribe_url(send_id: int = 9) -> str:
    return f"{BASE}/u/{TOKENS.unsubscribe(send_id, 'weekly')}"


def test_links_are_rewritten_deduplicated_and_unescaped(tmp_path: Path) -> None:
    email = render(
        tmp_path,
        """<html><body>
        {% for item in items %}<a href="{{ track_url(item.url) }}">{{ item.title }}</a>{% endfor %}
        <a class="x" HREF='https://shop.example/tea?a=1&amp;b=2'>again</a>
        <a href=https://other.example/>bare</a>
        <a href="mailto:help@example.com">mail</a> <a href="#top">top</a>
        <a href="/relative">rel</a> <a name="anchor">no href</a>
        <!-- <a href="https://commented.example/">c</a> -->
        <a href="{{ unsubscribe_url }}">Unsubscribe</a>
        </body></html>""",
    )
    assert email.links == ["https://shop.example/tea?a=1&b=2", "https://other.example/"]
    tokens = click_links(email.html)
    assert len(tokens) == 3
    decoded = [TOKENS.verify(t, "click") for t in tokens]
    assert [(d.send_id, d.link_index, d.url) for d in decoded if d] == [
        (9, 0, "https://shop.example/tea?a=1&b=2"),
        (9, 0, "https://shop.example/tea?a=1&b=2"),
        (9, 1, "https://other.example/"),
    ]
    assert "shop.example" not in email.html
    for kept in ('href="mailto:help@example.com"', 'href="#top"', 'href="/relative"'):
        assert kept in email.html
    assert "https://commented.example/" in email.html
    assert f'href="{unsubscribe_url()}"' in email.html
    assert email.html.count(unsubscribe_url()) == 1  # no extra footer


def test_open_pixel_before_body_end(tmp_path: Path) -> None:
    email = render(tmp_path, "<html><body><p>Hi</p></body></html>")
    pixel = f'<img src="{BASE}/o/{TOKENS.open(9)}" width="1" height="1" alt="">'
    assert email.html.endswith(pixel + "</body></html>")
    fragment = render(tmp_path, "<p>Hi</p>")
    assert fragment.html.endswith(pixel)


def test_unsubscribe_footer_and_headers(tmp_path: Path) -> None:
    email = render(tmp_path, "<html><body><p>No unsubscribe link here</p></body></html>")
    footer = f'<a href="{unsubscribe_url()}">Unsubscribe</a> from this campaign or from all'
    assert footer in email.html  # the footer says what the link can stop
    assert email.html.index(unsubscribe_url()) < email.html.index("</body>")
    assert email.headers == {
        "List-Unsubscribe": f"<{unsubscribe_url()}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert unsubscribe_url() in email.text
    assert email.links == []
    token = unsubscribe_url().rsplit("/", 1)[1]
    assert TOKENS.verify(token, "unsubscribe") == TokenData("unsubscribe", 9, campaign="weekly")


def test_text_part_from_sibling_template(tmp_path: Path) -> None:
    email = render(
        tmp_path,
        '<p><a href="https://a.example/x">X</a></p>',
        text=(
            "Hello {{ recipient.first_name }} & co,\n"
            "Read https://b.example/post. Or (https://a.example/x).\n"
            "Stop: {{ unsubscribe_url }}\n"
        ),
    )
    assert email.text.startswith("Hello Ada & co,")  # .txt is not autoescaped
    assert email.links == ["https://a.example/x", "https://b.example/post"]
    assert "b.example" not in email.text
    assert re.search(r"/c/[A-Za-z0-9_-]+\. Or \(" + re.escape(BASE) + r"/c/\S+\)\.", email.text)
    a_html, a_text = click_links(email.html)[0], click_links(email.text)[1]
    assert a_html == a_text  # one URL, one index, one token
    assert f"Stop: {unsubscribe_url()}" in email.text
    assert email.text.count(unsubscribe_url()) == 1


def test_text_part_from_html(tmp_path: Path) -> None:
    email = render(
        tmp_path,
        """<html><head><title>T</title><style>p { color: red }</style></head><body>
        <h1>Picks for {{ recipient.first_name }}</h1>
        <script>var x = "hidden";</script>
        <p>Fresh   items &amp; more:</p>
        <ul>{% for item in items %}<li><a href="{{ track_url(item.url) }}">{{ item.title }}</a></li>
        {% endfor %}</ul>
        <p><a href="mailto:help@example.com">Help</a></p>
        </body></html>""",
    )
    text = email.text
    assert "Picks for Ada" in text
    assert "Fresh items & more:" in text
    assert "hidden" not in text and "color" not in text
    assert re.search(r"^- Tea \[" + re.escape(BASE) + r"/c/[A-Za-z0-9_-]+\]$", text, re.M)
    assert "Help [mailto:help@example.com]" in text
    assert f"Unsubscribe (this campaign or all our emails): {unsubscribe_url()}" in text


def test_html_to_text_helper() -> None:
    text = html_to_text(
        '<p>One<br>Two</p><p><a href="https://x.example/">https://x.example/</a>'
        '<a href="#a">Jump</a></p>'
    )
    assert text == "One\nTwo\n\nhttps://x.example/Jump\n"
    # </head> may be omitted: the body is still text.
    assert html_to_text("<head><title>T</title><body><p>Body</p>") == "Body\n"
    assert html_to_text("<table><tr><td>a</td><td>b</td></tr></table>") == "a b\n"


def test_recipient_values_are_autoescaped(tmp_path: Path) -> None:
    variables = {"recipient": {"first_name": "<script>alert(1)</script>"}}
    email = render(
        tmp_path,
        "<p>Hi {{ recipient.first_name }}</p>",
        variables=variables,
        subject="For {{ recipient.first_name }}",
    )
    assert "<script>" not in email.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in email.html
    # The subject is a header, not HTML: no entities, just the text.
    assert email.subject == "For <script>alert(1)</script>"


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ("a.html", "a.txt"),
        ("a.html.j2", "a.txt.j2"),
        ("a.jinja", "a.txt.jinja"),
        ("a.j2", "a.txt.j2"),
        ("a.xhtml", "a.txt"),
        ("a.htm", "a.txt"),
    ],
)
def test_every_body_template_is_autoescaped_and_finds_its_text_sibling(
    tmp_path: Path, body: str, text: str
) -> None:
    """Issue 5 item 12: escaping depends on what the template is, not on its extension."""
    write(tmp_path, f"weekly/{body}", "<p>Hi {{ recipient.first_name }}</p>")
    write(tmp_path, f"weekly/{text}", "Hi {{ recipient.first_name }}")
    renderer = Renderer(tmp_path, TOKENS, BASE)
    variables = {**VARS, "recipient": {"first_name": "<b>Ada</b> & co"}}
    email = renderer.render(
        variant=Variant("a", "s", f"weekly/{body}"), variables=variables, send_id=1
    )
    assert "<p>Hi &lt;b&gt;Ada&lt;/b&gt; &amp; co</p>" in email.html
    assert email.text.startswith("Hi <b>Ada</b> & co\n")  # the text part is not escaped


def test_undefined_names_variant_template_and_line(tmp_path: Path) -> None:
    write(tmp_path, "weekly/b.html", "<p>\nHello\n{{ recipient.frist_name }}\n</p>")
    renderer = Renderer(tmp_path, TOKENS, BASE)
    variant = Variant("b", "Hi", "weekly/b.html")
    with pytest.raises(TemplateError) as info:
        renderer.render(variant=variant, variables=VARS, send_id=1)
    message = str(info.value)
    assert message.startswith("variant 'b' (weekly/b.html, line 3): ")
    assert "frist_name" in message
    assert isinstance(info.value.__cause__, jinja2.UndefinedError)


def test_error_in_included_template_names_both(tmp_path: Path) -> None:
    write(tmp_path, "partials/footer.html", "ok\n{{ nope }}")
    write(tmp_path, "weekly/a.html", "<p>x</p>\n{% include 'partials/footer.html' %}")
    renderer = Renderer(tmp_path, TOKENS, BASE)
    with pytest.raises(TemplateError, match=r"weekly/a.html, in partials/footer.html, line 2"):
        renderer.render(variant=Variant("a", "s", "weekly/a.html"), variables={}, send_id=1)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("<p>{% for x in %}</p>", r"variant 'a' \(weekly/a.html, line 1\): Expected an expression"),
        ("{{ ''.__class__.__mro__ }}", r"variant 'a' \(weekly/a.html, line 1\): .*unsafe"),
        ("\n{{ x.__globals__ }}", r"line 2\): .*unsafe"),
        ("{{ 1 / 0 }}", r"line 1\): ZeroDivisionError"),
    ],
)
def test_template_errors(tmp_path: Path, source: str, expected: str) -> None:
    with pytest.raises(TemplateError, match=expected):
        render(tmp_path, source, subject="s", variables={"x": lambda: None})


def test_sandbox_raises_security_error_as_template_error(tmp_path: Path) -> None:
    with pytest.raises(TemplateError) as info:
        render(tmp_path, "{{ ''.__class__.__mro__[1].__subclasses__() }}")
    assert isinstance(info.value.__cause__, jinja2.sandbox.SecurityError)


def test_shared_variables_cannot_be_mutated(tmp_path: Path) -> None:
    items = ["a"]
    with pytest.raises(TemplateError, match="unsafe"):
        render(tmp_path, "{{ items.append('b') }}", subject="s", variables={"items": items})
    assert items == ["a"]


def test_missing_template(tmp_path: Path) -> None:
    renderer = Renderer(tmp_path, TOKENS, BASE)
    with pytest.raises(TemplateError, match=r"variant 'z' \(weekly/z.html\): template .*not found"):
        renderer.render(variant=Variant("z", "s", "weekly/z.html"), variables={}, send_id=1)


def test_subject_is_header_safe(tmp_path: Path) -> None:
    variables = {"name": "Ada\r\nBcc: victim@example.com\x00"}
    email = render(tmp_path, "<p>x</p>", subject="  Hi\t{{ name }}\n ", variables=variables)
    assert email.subject == "Hi Ada Bcc: victim@example.com"
    long = render(tmp_path, "<p>x</p>", subject="{{ 'x' * 1000 }}")
    assert long.subject == "x" * 250


def test_subject_error_names_variant(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"variant 'a' \(subject, line 1\): .*'missing'"):
        render(tmp_path, "<p>x</p>", subject="Hi {{ missing }}")


def test_style_block_is_inlined(tmp_path: Path) -> None:
    email = render(
        tmp_path,
        """<html><head><style>.cta { color: #ff0000; font-weight: bold }</style></head>
        <body><a class="cta" href="https://a.example/">Go</a></body></html>""",
    )
    assert "<style" not in email.html
    anchor = re.search(r"<a [^>]*>Go</a>", email.html)
    assert anchor is not None
    assert re.search(r'style="[^"]*color:\s*#f(f0000|00)\b', anchor.group(0))
    assert 'class="cta"' in anchor.group(0)
    assert click_links(anchor.group(0))
    assert email.links == ["https://a.example/"]


def test_no_style_block_is_left_untouched(tmp_path: Path) -> None:
    source = '<p style="color:red">Hi</p>'
    email = render(tmp_path, source)
    assert email.html.startswith(source)


def test_check_renders_every_variant(tmp_path: Path) -> None:
    write(tmp_path, "weekly/a.html", "<p>{{ recipient.first_name }}</p>")
    write(tmp_path, "weekly/b.html", "<p>\n{{ recipient.frist_name }}</p>")
    renderer = Renderer(tmp_path, TOKENS, BASE)
    good = Variant("a", "Hi {{ recipient.first_name }}", "weekly/a.html")
    bad = Variant("b", "Hi", "weekly/b.html")
    renderer.check([good], VARS)
    with pytest.raises(TemplateError, match=r"variant 'b' \(weekly/b.html, line 2\)"):
        renderer.check([good, bad], VARS)


def test_prepare_jinja2_environment_hook(tmp_path: Path) -> None:
    class Shout:
        @hookimpl
        def prepare_jinja2_environment(self, env: jinja2.Environment) -> None:
            env.filters["shout"] = lambda value: str(value).upper() + "!"

    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(engine.hookspecs)
    pm.register(Shout())
    write(tmp_path, "weekly/a.html", "<p>{{ recipient.first_name | shout }}</p>")
    renderer = Renderer(tmp_path, TOKENS, BASE, pm)
    assert isinstance(renderer.env, jinja2.sandbox.SandboxedEnvironment)
    variant = Variant("a", "{{ recipient.first_name | shout }}", "weekly/a.html")
    email = renderer.render(variant=variant, variables=VARS, send_id=1)
    assert "<p>ADA!</p>" in email.html
    assert email.subject == "ADA!"


ITEMS = [
    {"id": "tea", "url": "https://shop.example/tea"},
    {"id": "mug", "url": "https://shop.example/tea"},  # the same URL at another position
    {"id": "pot"},
]


def test_item_url_makes_one_link_per_item_position(tmp_path: Path) -> None:
    source = (
        "<html><body>{% for item in items[:2] %}<a href='{{ item_url(item) }}'>t</a>"
        '<a href="{{ item_url(item) }}">again</a><img src="{{ item_url(item) }}">'
        "{% endfor %}<a href='{{ item_url(items[2], \"https://shop.example/pot\") }}'>p</a>"
        "<a href='https://shop.example/tea'>plain</a></body></html>"
    )
    text = (
        "{% for item in items %}{{ item.id }}: "
        "{{ item_url(item, 'https://x.example/' ~ item.id) }}?ref=txt\n{% endfor %}"
    )
    email = render(tmp_path, source, variables=VARS | {"items": ITEMS}, text=text)
    assert email.links == [
        "https://shop.example/tea",
        "https://shop.example/tea",
        "https://shop.example/pot",
        "https://shop.example/tea",
        "https://x.example/tea?ref=txt",
        "https://x.example/mug?ref=txt",
        "https://x.example/pot?ref=txt",
    ]
    assert email.link_items == [
        ("tea", 0),
        ("mug", 1),
        ("pot", 2),
        None,
        ("tea", 0),
        ("mug", 1),
        ("pot", 2),
    ]
    tokens = click_links(email.html)
    assert len(tokens) == 6  # two links for each of two items, the pot, the plain link
    first, again = (TOKENS.verify(t, "click") for t in tokens[:2])
    assert first == again and first is not None and first.url == "https://shop.example/tea"
    assert 'src="https://shop.example/tea"' in email.html  # an image is no tracked link
    assert "tailormail.invalid" not in email.html + email.text


def test_item_url_errors_name_the_item(tmp_path: Path) -> None:
    source = "<a href='{{ item_url(item) }}'>x</a>"
    with pytest.raises(TemplateError, match="item 'pot' has no http"):
        render(
            tmp_path,
            "{% for item in items %}" + source + "{% endfor %}",
            variables=VARS | {"items": ITEMS},
        )
    with pytest.raises(TemplateError, match="one of the email's items"):
        render(tmp_path, "<a href='{{ item_url({'id': 'x', 'url': 'https://a.example'}) }}'>x</a>")


def test_plain_http_links_are_tracked_too_in_both_parts(tmp_path: Path) -> None:
    email = render(
        tmp_path,
        '<p><a href="http://shop.example/a">a</a> <a href="HTTP://Shop.example/B">b</a></p>',
        text="See http://shop.example/a and https://shop.example/c.",
    )
    assert email.links == [
        "http://shop.example/a",
        "HTTP://Shop.example/B",
        "https://shop.example/c",
    ]
    assert "shop.example" not in email.html and "shop.example" not in email.text
    html_targets = [TOKENS.verify(t, "click") for t in click_links(email.html)]
    assert [d.url for d in html_targets if d] == ["http://shop.example/a", "HTTP://Shop.example/B"]
    text_targets = [TOKENS.verify(t, "click") for t in click_links(email.text)]
    assert [d.url for d in text_targets if d] == ["http://shop.example/a", "https://shop.example/c"]
    assert re.match(r"See \S+/c/[\w-]+ and \S+/c/[\w-]+\.\n", email.text)  # "." stays text


def test_the_open_pixel_goes_before_the_last_body_end(tmp_path: Path) -> None:
    source = "<html><body><pre>&lt;/body&gt; written </body as text</pre><p>Hi</p></body></html>"
    email = render(tmp_path, source)
    pixel = f'<img src="{BASE}/o/{TOKENS.open(9)}" width="1" height="1" alt="">'
    assert email.html.count(pixel) == 1
    assert email.html.endswith(pixel + "</body></html>")


EVIL = "https://evil.example/phish?x=1"


def click_targets(email: RenderedEmail, part: str) -> list[str]:
    decoded = [TOKENS.verify(t, "click") for t in click_links(getattr(email, part))]
    return [d.url for d in decoded if d is not None]


def test_urls_from_data_are_never_tracked(tmp_path: Path) -> None:
    """Issue 17: a value (name, title, attribute) never becomes a tracked link."""
    variables = VARS | {
        "recipient": {"first_name": f"Ada {EVIL}", "website": EVIL},
        "items": [{"id": "tea", "title": f"Tea, see {EVIL}", "url": "https://shop.example/tea"}],
    }
    source = (
        "<p>Hi {{ recipient.first_name }}</p>"
        '<p><a href="{{ recipient.website }}">site</a> '
        "<a href='https://shop.example{{ recipient.website }}'>bent</a></p>"
        '{% for item in items %}<a href="{{ item_url(item) }}">{{ item.title }}</a>{% endfor %}'
        '<a href="https://shop.example/about">About</a>'
    )
    text = "Hi {{ recipient.first_name }} ({{ recipient.website }}): https://shop.example/help\n"
    written = {
        "https://shop.example/tea",
        "https://shop.example/about",
        "https://shop.example/help",
    }
    with_text = render(tmp_path, source, variables=variables, text=text)
    (tmp_path / "weekly" / "a.txt").unlink()
    derived = render(tmp_path, source, variables=variables)
    for email in (with_text, derived):
        assert set(email.links) <= written
        for part in ("html", "text"):
            assert set(click_targets(email, part)) <= written, part
        assert f'<a href="{EVIL.replace("&", "&amp;")}">site</a>' in email.html
        assert f"Hi Ada {EVIL.replace('&', '&amp;')}</p>" in email.html
    assert with_text.text.startswith(f"Hi Ada {EVIL} ({EVIL}): {BASE}/c/")
    assert f"Hi Ada {EVIL}" in derived.text and f"site [{EVIL}]" in derived.text
    assert "tailormail.invalid" not in "".join(e.html + e.text for e in (with_text, derived))


def test_the_text_part_made_from_html_is_not_rewritten_again(tmp_path: Path) -> None:
    email = render(
        tmp_path,
        '<p>Visit https://shop.example/visible or <a href="https://shop.example/a">a</a></p>',
    )
    assert email.links == ["https://shop.example/a"]
    (token,) = click_links(email.html)
    assert f"a [{BASE}/c/{token}]" in email.text  # the HTML's own tracked link
    assert "Visit https://shop.example/visible or" in email.text  # text, as in the HTML


def test_a_literal_extended_by_data_is_not_tracked(tmp_path: Path) -> None:
    """Only text written in the template may follow a link: a value may not bend it."""
    source = (
        "{% for item in items %}<a href='{{ item_url(item) }}{{ recipient.tail }}'>x</a>"
        "<a href='{{ item_url(item) }}?ref=mail'>y</a>{% endfor %}"
        "<a href='https://shop.example{{ recipient.tail }}'>z</a>"
        # Text the author wrote after an expression, but not a path, query or fragment.
        "<p>{{ recipient.first_name }}@evil.example</p>"
        "{% for item in items %}<a href='{{ item_url(item) }}{{ recipient.at }}'>w</a>{% endfor %}"
    )
    recipient = {"first_name": "Ada", "tail": ".evil.example/", "at": "@evil.example"}
    email = render(tmp_path, source, variables=VARS | {"recipient": recipient, "items": ITEMS[:1]})
    assert email.links == ["https://shop.example/tea?ref=mail"]
    assert "href='https://shop.example/tea.evil.example/'" in email.html
    assert "href='https://shop.example.evil.example/'" in email.html
    assert "href='https://shop.example/tea@evil.example'" in email.html


def test_track_url_tracks_what_the_author_passes_and_leaves_other_values(
    tmp_path: Path,
) -> None:
    source = (
        '<a href="{{ track_url("https://shop.example/p/" ~ recipient.first_name) }}">p</a>'
        '<a href="{{ track_url("mailto:help@example.com") }}">m</a>'
        '<a href="{{ track_url(none) }}">n</a><a href="{{ track_url(unsubscribe_url) }}">u</a>'
    )
    email = render(tmp_path, source)
    assert email.links == ["https://shop.example/p/Ada"]
    assert 'href="mailto:help@example.com"' in email.html and 'href="None"' in email.html
    assert f'href="{unsubscribe_url()}"' in email.html  # the unsubscribe link stays one


def test_a_filter_that_alters_a_link_is_a_template_error(tmp_path: Path) -> None:
    source = "{% for item in items %}<a href='{{ item_url(item) | upper }}'>x</a>{% endfor %}"
    with pytest.raises(TemplateError, match=r"variant 'a' \(weekly/a.html\): a filter changed"):
        render(tmp_path, source, variables=VARS | {"items": ITEMS[:1]})


def test_literal_urls_are_found_once_per_template_not_per_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    mark = LinkMarks.mark

    def counting(marks: LinkMarks, data: str, **kwargs: bool) -> str:
        calls.append(data)
        return mark(marks, data, **kwargs)

    monkeypatch.setattr(LinkMarks, "mark", counting)
    write(tmp_path, "weekly/a.html", '<a href="https://a.example/">a</a>{{ recipient.first_name }}')
    renderer = Renderer(tmp_path, TOKENS, BASE)
    variant = Variant("a", "s", "weekly/a.html")
    emails = [renderer.render(variant=variant, variables=VARS, send_id=n) for n in range(3)]
    assert calls == ['<a href="https://a.example/">a</a>']
    assert [e.links for e in emails] == [["https://a.example/"]] * 3
