"""Bounds on what a template or an expression may do: refused with its line, never a
hang, a memory blow-up or a crash of the caller."""

from __future__ import annotations

from pathlib import Path

import pytest

from nurture.errors import InputFileError, InvalidValueError
from nurture.language.expressions import compile_expression
from nurture.language.scoring import load_scoring
from nurture.language.sequence_files import load_sequence
from nurture.language.templates import RenderError, TemplateSet
from nurture.language.yamlfile import parse_yaml

RUNAWAY = {
    "power": ("{{ 9 ** (9 ** 9) }}", "is too large to compute"),
    "nested ranges": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "range() gives more than",
    ),
    "nested string loops": (
        '{% for a in "x" * 100000 %}{% for b in "x" * 100000 %}{% endfor %}{% endfor %}',
        "loops ran more than",
    ),
    "repetition": ('{{ "a" * 10 ** 9 }}', "builds a value of over"),
    "padding filter": ('{{ "a" | center(10 ** 9) }}', "is over the limit"),
    "padding method": ('{{ "a".ljust(10 ** 9) }}', "is over the limit"),
    "format width": ('{{ "%999999999s" | format(1) }}', "format width"),
    "doubling by ~": (
        '{% set ns = namespace(s="a" * 100000) %}'
        "{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
        "builds a value of over",
    ),
    "doubling by +": (
        '{% set ns = namespace(s="a" * 100000) %}'
        "{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}",
        "builds a value of over",
    ),
    "division by zero": ("{{ 1 / 0 }}", "ZeroDivisionError"),
    "recursion": ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recursion"),
}


def templates(tmp_path: Path, body: str, name: str = "t") -> TemplateSet:
    folder = tmp_path / "templates"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.html.j2").write_text(f"---\nsubject: Hi\n---\n<p>ok</p>\n{body}\n")
    return TemplateSet(folder)


@pytest.mark.parametrize("case", sorted(RUNAWAY))
def test_runaway_templates_fail_as_the_templates_problem(tmp_path: Path, case: str) -> None:
    body, reason = RUNAWAY[case]
    with pytest.raises(RenderError) as caught:
        templates(tmp_path, body).render("t", {"lead": {}})
    assert reason in str(caught.value)
    assert str(caught.value).startswith(f"{tmp_path / 'templates' / 't.html.j2'}")


def test_ordinary_loops_and_arithmetic_still_work(tmp_path: Path) -> None:
    body = "{% for i in range(3) %}{{ i }}{{ loop.index }}{% endfor %} {{ 2 ** 10 }} {{ 'ab' * 3 }}"
    rendered = templates(tmp_path, body).render("t", {"lead": {}})
    assert "011223 1024 ababab" in rendered.html


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("9 ** (9 ** 9) > 0", "too large to compute"),
        ("'a' * 10 ** 9", "builds a value of over"),
        ("1 / 0 > 1", "division by zero"),
        ("(" * 80 + "1" + ")" * 80, "nested too deeply"),
    ],
)
def test_runaway_expressions_are_refused(source: str, reason: str) -> None:
    with pytest.raises(InvalidValueError, match=reason):
        compile_expression(source).evaluate({})


def test_lead_data_loses_its_control_characters_in_the_body(tmp_path: Path) -> None:
    rendered = templates(tmp_path, "<p>{{ lead.name }}</p>").render(
        "t", {"lead": {"name": "Ann\x00\x07\x1b[2J Lee"}}
    )
    assert "<p>Ann[2J Lee</p>" in rendered.html
    assert not any(ch in rendered.text for ch in "\x00\x07\x1b")


def test_an_unknown_filter_is_the_templates_problem_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match=r"t.html.j2:5: No filter named 'capitalise' \(did you"):
        templates(tmp_path, "{{ lead.name | capitalise }}").unknown_variables("t")


def test_a_template_linking_outside_the_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "nurture.toml").write_text('[api]\nkey = "secret-api-key"\n')
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "_footer.html.j2").symlink_to(tmp_path / "nurture.toml")
    (folder / "inside.html.j2").write_text("---\nsubject: Hi\n---\n{% include '_footer.html.j2' %}")
    (folder / "leak.html.j2").symlink_to(tmp_path / "nurture.toml")
    with pytest.raises(RenderError, match="links to a file outside the templates folder") as one:
        TemplateSet(folder).render("inside", {"lead": {}})
    assert "secret-api-key" not in str(one.value)
    with pytest.raises(InputFileError, match="links to a file outside the templates folder"):
        TemplateSet(folder).render("leak", {"lead": {}})
    # A link that stays inside the folder is fine.
    (folder / "_sig.html.j2").write_text("Ana")
    (folder / "_alias.html.j2").symlink_to(folder / "_sig.html.j2")
    (folder / "ok.html.j2").write_text("---\nsubject: Hi\n---\n{% include '_alias.html.j2' %}")
    assert "Ana" in TemplateSet(folder).render("ok", {"lead": {}}).html


def alias_bomb(levels: int = 9) -> str:
    text = 'a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]\n'
    previous = "a"
    for name in "bcdefghijklmnop"[: levels - 1]:
        text += f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]\n"
        previous = name
    return text


def test_yaml_alias_bombs_are_refused_everywhere(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match=r"bomb.yaml:\d+: aliases here expand to over"):
        parse_yaml(alias_bomb(), "bomb.yaml")
    sequence = tmp_path / "bomb.yaml"
    sequence.write_text("name: bomb\n" + alias_bomb())
    found, problems = load_sequence(sequence, lambda name: True)
    assert found is None and "aliases here expand" in problems[0].message
    scoring = tmp_path / "scoring.yaml"
    scoring.write_text(alias_bomb())
    rules, problems = load_scoring(scoring)
    assert rules is None and "aliases here expand" in problems[0].message
    front = "---\nsubject: Hi\n" + alias_bomb() + "---\n<p>x</p>\n"
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "t.html.j2").write_text(front)
    with pytest.raises(InputFileError, match=r"t.html.j2:\d+: aliases here expand"):
        TemplateSet(folder).load("t")
    # A few honest aliases are fine.
    assert parse_yaml("a: &x [1, 2]\nb: *x\n", "ok.yaml") == {"a": [1, 2], "b": [1, 2]}


def test_a_sequence_nested_past_any_reader_is_that_files_problem(tmp_path: Path) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: deep\naudience: " + "[" * 5000 + "]" * 5000 + "\n")
    found, problems = load_sequence(deep, lambda name: True)
    assert found is None and "nested too deeply" in problems[0].message


@pytest.mark.parametrize(
    "body",
    [
        # CVE-2025-27516: jinja2 3.1.5's sandbox let |attr("format") reach str.format.
        '{{ ("{0.__class__.__mro__}" | attr("format"))(lead) }}',
        '{% set f = "{0.__init__.__globals__[os].environ}" | attr("format") %}{{ f(cycler) }}',
        '{{ "{0.__class__}".format(lead) }}',
    ],
)
def test_format_cannot_escape_the_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str
) -> None:
    monkeypatch.setenv("NURTURE_SMTP_PASSWORD", "smtp-secret-value")
    with pytest.raises(RenderError, match=r"t.html.j2:5: access to attribute .* is unsafe") as one:
        templates(tmp_path, body).render("t", {"lead": {"first_name": "Ann"}})
    assert "smtp-secret-value" not in str(one.value)


def test_range_is_a_real_range(tmp_path: Path) -> None:
    body = "{{ range(5) | length }} {{ range(10)[3] }} {{ range(3) | list }} {{ range(4) | sum }}"
    html = templates(tmp_path, body).render("t", {"lead": {}}).html
    assert "5 3 [0, 1, 2] 6" in html


def test_a_template_s_own_globals_come_before_the_environment_s() -> None:
    from nurture.language.sandbox import BoundedSandbox, bounded

    env = BoundedSandbox()
    template = env.from_string("{{ greeting }} {{ range(3) | list }}", globals={"greeting": "hi"})
    assert template.render() == "hi [0, 1, 2]"
    assert env.from_string("{{ range }}", globals={"range": "mine"}).render() == "mine"
    assert env.from_string("{{ greeting is defined }}").render() == "False"
    with bounded(), pytest.raises(Exception, match="range\\(\\) gives more than"):
        env.from_string("{{ range(10 ** 9) | length }}").render()
