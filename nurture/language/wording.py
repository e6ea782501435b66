"""What the parsers underneath (Jinja2, ruamel.yaml) say, in a marketer's words.

Pure functions from a library's message to one that says what is wrong and how to fix
it; a message they do not recognise is passed on as it is, never lost."""

from __future__ import annotations

import re

#: Internal class names Jinja puts in its messages, and what a marketer calls them.
_CLASS_NAMES = {
    "'nurture.language.expressions.LeadView object'": "lead",
    "'nurture.language.expressions.View object'": "the variable",
}

_BLOCK = re.compile(
    r"Unexpected end of template\. Jinja was looking for the following tags: .*"
    r"The innermost block that needs to be closed is '(\w+)'\.?"
)
_UNKNOWN_TAG = re.compile(
    r"Encountered unknown tag '(\w+)'\. Jinja was looking for the following tags: .*"
    r"The innermost block that needs to be closed is '(\w+)'\.?"
)


def syntax(message: str) -> str:
    """A Jinja2 syntax error (of an expression or a template) in plain words."""
    text = (message or "").strip()
    fixed = {
        "unexpected end of template, expected ')'.": "a '(' is never closed: add ')'",
        "unexpected end of template, expected ','.": (
            "a '(' or '[' is never closed (add ')' or ']'), or a ',' is missing"
        ),
        "unexpected end of template, expected 'name'.": (
            "nothing after '|': name a filter, like | default('')"
        ),
        "unexpected 'end of template'": (
            "the expression stops too early: something is missing at its end"
        ),
        "unexpected '}', expected ')'": "a '(' is never closed before '}}': add ')'",
        "unexpected '}', expected ']'": "a '[' is never closed before '}}': add ']'",
        "unexpected '}'": "a '}' alone: close a {{ ... }} with '}}'",
        "chunk after expression": (
            "unexpected text after the expression (compare with '==', join with 'and' or 'or')"
        ),
    }
    if text in fixed:
        return fixed[text]
    if text.startswith("unexpected char") and ("'\"'" in text or '"\'"' in text):
        return "a quote is never closed"
    got = re.fullmatch(r"expected token '[^']+', got '([^']+)'", text)
    if got:
        return f"unexpected {got.group(1)!r}: is an operator, a '|' or a comma missing before it?"
    if text.startswith("Expected an expression, got"):
        return "an expression is missing here (like {% if lead.company is defined %})"
    block = _BLOCK.fullmatch(text)
    if block:
        return f"the '{block.group(1)}' block is never closed: add {{% end{block.group(1)} %}}"
    tag = _UNKNOWN_TAG.fullmatch(text)
    if tag:
        return (
            f"{{% {tag.group(1)} %}} here, but the '{tag.group(2)}' block open here "
            f"needs {{% end{tag.group(2)} %}} first"
        )
    return text


def undefined(message: str) -> str:
    """An undefined name or attribute, without Jinja's internal class names:
    ``lead has no attribute 'source'``."""
    text = message
    for internal, shown in _CLASS_NAMES.items():
        text = text.replace(internal, shown)
    return text


def lead_field_hint(message: str) -> str:
    """For a lead without a field: how to write the expression so that it does not fail
    (``lead.source | default('') == 'x'``); else ``""``."""
    found = re.search(r"lead has no attribute '(\w+)'", message)
    if not found:
        return ""
    name = found.group(1)
    return (
        f"some leads have no {name}: write lead.{name} | default('') == ... "
        f"or lead.{name} is defined and ..."
    )


#: ruamel.yaml's messages, and what they mean for a person writing a file.
_YAML = (
    ("mapping values are not allowed here",
     "a ':' inside a value: put the value in quotes, or check the indentation"),
    ("could not find expected ':'",
     "this line is not 'key: value': check the colon and the indentation"),
    ("found character '\\t' that cannot start any token", "a tab: indent with spaces"),
    ("found a tab character", "a tab: indent with spaces"),
    ("found unexpected end of stream", "a quote opened here is never closed"),
    ("expected <block end>, but found '-'",
     "this list item is not indented like the items above it"),
    ("expected <block end>, but found",
     "this line is not indented like the lines above it"),
    ("did not find expected key", "this line is not indented like the lines above it"),
    ("did not find expected '-' indicator",
     "this list item is not indented like the items above it"),
    ("expected ',' or ']'", "a '[' list is not closed with ']', or a ',' is missing"),
    ("expected ',' or '}'", "a '{' mapping is not closed with '}', or a ',' is missing"),
    ("found undefined alias", "'*name' refers to no '&name' above it"),
    ("found unknown escape character",
     "a backslash in double quotes: use single quotes around this value"),
    ("found duplicate key", "a key appears twice in this mapping"),
)  # fmt: skip


def yaml_problem(problem: str, context: str = "") -> str:
    """A YAML parser's *problem* (and *context*) in plain words, or the problem as is."""
    for fragment, plain in _YAML:
        if fragment in problem or (context and fragment in context):
            if fragment == "found duplicate key":
                key = re.search(r'duplicate key "([^"]+)"', problem)
                if key:
                    return f"the key {key.group(1)!r} appears twice in this mapping"
            return plain
    return problem
