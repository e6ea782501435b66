"""Template rendering: sandbox, strictness, footer, and safe headers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from nurture.language.expressions import LeadView, View
from nurture.language.templates import RenderError, TemplateSet, clean_header
from nurture.mail.compose import Sender, build_message


def make(
    tmp_path: Path, name: str, body: str, subject: str = "Hello {{ lead.first_name }}"
) -> TemplateSet:
    (tmp_path / f"{name}.html.j2").write_text(f'---\nsubject: "{subject}"\n---\n{body}')
    return TemplateSet(tmp_path)


def variables(**lead: str) -> dict[str, object]:
    return {
        "lead": LeadView({"email": "ann@example.com", **lead}),
        "sender": View({"name": "Ana", "postal_address": "1 Main St, Springfield"}),
        "sequence": View({"name": "s"}),
        "step": View({"id": "x"}),
        "unsubscribe_url": "https://t.example.com/u/TOKEN",
    }


@pytest.mark.parametrize(
    "body",
    [
        "{{ lead.__class__ }}",
        "{{ ''.__class__.__mro__ }}",
        "{{ lead._values }}",
        "{{ cycler.__init__.__globals__ }}",
    ],
)
def test_templates_cannot_reach_python_internals(tmp_path: Path, body: str) -> None:
    templates = make(tmp_path, "evil", body)
    with pytest.raises(RenderError, match=r"evil\.html\.j2:4: "):
        templates.render("evil", variables(first_name="Ann"))


def test_undefined_variable_is_an_error_with_its_line(tmp_path: Path) -> None:
    templates = make(tmp_path, "t", "<p>Hi</p>\n<p>{{ lead.nickname }}</p>")
    with pytest.raises(RenderError, match=r"t\.html\.j2:5: undefined variable: .*nickname"):
        templates.render("t", variables(first_name="Ann"))


def test_default_makes_a_variable_optional_and_html_is_escaped(tmp_path: Path) -> None:
    templates = make(
        tmp_path, "t", "<p>{{ lead.nickname | default('friend') }} {{ lead.company }}</p>"
    )
    rendered = templates.render("t", variables(first_name="Ann", company="<b>Acme</b>"))
    assert "friend &lt;b&gt;Acme&lt;/b&gt;" in rendered.html
    assert rendered.subject == "Hello Ann"


def test_footer_adds_unsubscribe_and_postal_address_when_missing(tmp_path: Path) -> None:
    rendered = make(tmp_path, "t", "<html><body><p>Hi</p></body></html>").render(
        "t", variables(first_name="Ann")
    )
    assert rendered.html.index("https://t.example.com/u/TOKEN") < rendered.html.index("</body>")
    assert "1 Main St, Springfield" in rendered.html
    assert "https://t.example.com/u/TOKEN" in rendered.text
    assert "1 Main St, Springfield" in rendered.text


def test_template_that_places_the_link_gets_no_second_one(tmp_path: Path) -> None:
    body = '<p>Hi</p><a href="{{ unsubscribe_url }}">stop</a> {{ sender.postal_address }}'
    rendered = make(tmp_path, "t", body).render("t", variables(first_name="Ann"))
    assert rendered.html.count("https://t.example.com/u/TOKEN") == 1


def test_a_name_with_cr_lf_cannot_add_a_header(tmp_path: Path) -> None:
    templates = make(tmp_path, "t", "<p>Hi</p>")
    evil = "Ann\r\nBcc: victim@example.com"
    rendered = templates.render("t", variables(first_name=evil))
    message = build_message(
        rendered,
        sender=Sender.parse("Ana <ana@example.com>", "1 Main St"),
        to_email="ann@example.com",
        to_name=evil,
        date=datetime(2026, 11, 23, tzinfo=UTC),
        unsubscribe="https://t.example.com/u/TOKEN",
    )
    raw = message.as_string()
    header_block = raw.split("\n\n", 1)[0]
    assert "\nBcc:" not in header_block
    assert message["Bcc"] is None
    assert message["Subject"] == "Hello Ann Bcc: victim@example.com"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.get_content_type() == "multipart/alternative"


def test_missing_front_matter_and_subject_are_reported(tmp_path: Path) -> None:
    (tmp_path / "a.html.j2").write_text("<p>no front matter</p>")
    (tmp_path / "b.html.j2").write_text("---\npreheader: x\n---\n<p>b</p>")
    templates = TemplateSet(tmp_path)
    with pytest.raises(Exception, match=r"a\.html\.j2:1: .*front matter"):
        templates.load("a")
    with pytest.raises(Exception, match=r"b\.html\.j2:2: .*needs a subject"):
        templates.load("b")


def test_the_plain_text_part_is_words_then_urls_on_lines_of_their_own() -> None:
    from nurture.language.templates import html_to_text

    body = (
        "<html><head><title>Hi</title></head><body><h2>Weekly reporting</h2>"
        '<p>Would it be worth 15 minutes? <a href="https://example.com/book?a=1&amp;b=2">'
        "Here is my\ncalendar</a>.</p>"
        '<p>Read <a href="https://example.com/a-very-long-path/with-hyphens-that-must-never'
        '-be-broken-across-lines/ok">the case study</a> and '
        '<a href="mailto:ana@example.com">write to me</a>.</p>'
        '<p><a href="https://example.com/u/token-with-hyphens">Unsubscribe</a></p>'
        "</body></html>"
    )
    assert html_to_text(body).splitlines() == [
        "Weekly reporting",
        "",
        "Would it be worth 15 minutes? Here is my calendar.",
        "https://example.com/book?a=1&b=2",
        "",
        "Read the case study and write to me.",
        "https://example.com/a-very-long-path/with-hyphens-that-must-never-be-broken-across"
        "-lines/ok",
        "",
        "Unsubscribe",
        "https://example.com/u/token-with-hyphens",
    ]


def test_an_unclosed_quote_is_reported_where_it_opens(tmp_path: Path) -> None:
    (tmp_path / "q.html.j2").write_text(
        '---\nsubject: Hi\n---\n<p>{{ "it\'s fine" }}</p>\n<p>{{ "unclosed }}</p>\n'
        '<p>line 6</p>\n<p>{{ lead.name }} said "hi"</p>\n'
    )
    with pytest.raises(RenderError, match=r"q.html.j2:5: a quote opened here is never closed"):
        TemplateSet(tmp_path).unknown_variables("q")


def test_a_missing_partial_is_named_with_the_line_that_includes_it(tmp_path: Path) -> None:
    (tmp_path / "t.html.j2").write_text(
        '---\nsubject: Hi\n---\n<p>a</p>\n<p>b</p>\n{% include "_nope.html.j2" %}\n'
    )
    with pytest.raises(RenderError) as caught:
        TemplateSet(tmp_path).render("t", {"lead": {}})
    assert str(caught.value) == (
        f"{tmp_path / 't.html.j2'}:6: includes or extends missing template '_nope.html.j2'"
    )


def test_clean_header_and_printable_keep_their_rules_on_every_character() -> None:
    """Their shortcut for values with nothing to clean changes nothing they give."""
    import re

    from markupsafe import Markup

    from nurture.language.templates import _CONTROL, _printable

    def cleaned(value: str) -> str:
        return re.sub(r"\s+", " ", re.sub(r"[\x00-\x1f\x7f]", " ", value)).strip()

    for code in [*range(0x3100), *range(0xFE00, 0x10000), 0x1F600, 0xE0001, 0x10FFFF]:
        if 0xD800 <= code < 0xE000:
            continue
        for value in (chr(code), f"a{chr(code)}b", f"a {chr(code)} b", f"{chr(code)} "):
            assert clean_header(value) == cleaned(value), hex(code)
            assert _printable(value) == _CONTROL.sub("", value), hex(code)
            marked = _printable(Markup(value))
            assert isinstance(marked, Markup) and marked == _CONTROL.sub("", value)


def test_a_text_without_tags_renders_as_jinja_renders_it(tmp_path: Path) -> None:
    """Subjects and preheaders with no tag skip Jinja2: what it gives is the text itself."""
    templates = TemplateSet(tmp_path)
    for source in ["", "The guide, plus three numbers", " a \n\n", "100% # % }} #} %}", "\\n",
                   "é\u2028\x85\x0b\x0c\t", "line\n", "-a -}", "% for x in y"]:  # fmt: skip
        assert templates.render_text(source, {}, "x.yaml") == source
        assert templates._text_env.from_string(source).render() == source
