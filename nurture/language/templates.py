"""Email templates: ``templates/NAME.html.j2`` with a YAML front matter, rendered in
Jinja2's sandbox, strictly (an undefined variable is an error).

Every rendered email carries an unsubscribe link and the sender's postal address: when a
template does not place them itself, a footer adds them.
"""

from __future__ import annotations

import html
import re
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import html2text
from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    meta,
    nodes,
)
from markupsafe import Markup

from nurture.errors import InputFileError, NurtureError
from nurture.language.sandbox import BoundedSandbox, bounded
from nurture.language.wording import syntax, undefined
from nurture.language.yamlfile import key_line, parse_yaml
from nurture.suggest import did_you_mean

HTML_SUFFIX = ".html.j2"
TEXT_SUFFIX = ".txt.j2"
#: Names every email template may use.
VARIABLES = ("lead", "sender", "sequence", "step", "unsubscribe_url", "preheader", "subject")
FRONT_MATTER_KEYS = ("subject", "preheader")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)^---[ \t]*\r?\n", re.S | re.M)


class RenderError(NurtureError):
    """A template could not be rendered."""


def split_front_matter(source: str) -> tuple[str | None, str]:
    """Return (front matter text, body); the body keeps blank lines in place of the front
    matter so that line numbers in errors are the file's."""
    match = _FRONT_MATTER.match(source)
    if not match:
        return None, source
    return match.group(1), "\n" * match.group(0).count("\n") + source[match.end() :]


def inside_folder(path: Path, folder: Path) -> bool:
    """Whether *path*, links followed, is a file inside *folder*: a template that is a
    link to ``../nurture.toml`` must never put the settings into an email."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a link loop
        return False


class LinkOutsideError(InputFileError):
    """A template is a link to a file outside the templates folder."""


def _refuse_outside(path: Path, folder: Path) -> None:
    if path.exists() and not inside_folder(path, folder):
        raise LinkOutsideError(
            f"{path}: links to a file outside the templates folder: refused "
            "(copy the file into the folder instead)"
        )


class _ProjectLoader(FileSystemLoader):
    def get_source(self, environment: Any, template: str) -> tuple[str, str, Callable[[], bool]]:
        source, filename, uptodate = super().get_source(environment, template)
        folder = Path(self.searchpath[0])
        if not inside_folder(Path(filename), folder):
            raise TemplateNotFound(
                template, f"{template} links to a file outside the templates folder"
            )
        return split_front_matter(source)[1], filename, uptodate


#: Control characters that have no place in an email (NUL above all: some servers refuse
#: the message); tab, line feed and carriage return stay.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _printable(value: Any) -> Any:
    """Every ``{{ value }}`` passes here: lead data loses its control characters."""
    if isinstance(value, str) and value.isprintable():  # no control character (most values)
        return value
    if isinstance(value, Markup):
        return Markup(_CONTROL.sub("", value))
    if isinstance(value, str):
        return _CONTROL.sub("", value)
    return value


def _autoescape(name: str | None) -> bool:
    return name is not None and (".html" in name or name.endswith(".htm"))


@dataclass(frozen=True)
class RenderedEmail:
    """The parts of one email, ready to become a MIME message."""

    subject: str
    preheader: str
    html: str
    text: str


@dataclass(frozen=True)
class EmailTemplate:
    """What the front matter of one email template says."""

    name: str
    path: Path
    subject: str
    preheader: str
    #: A hand-written ``NAME.txt.j2`` exists for the plain-text part.
    has_text_part: bool
    #: Lines of the front matter's subject and preheader (for errors in them).
    subject_line: int = 2
    preheader_line: int = 2


def clean_header(value: str) -> str:
    """A value safe for one header line: control characters (CR and LF above all) become
    spaces, so lead data can never add a header."""
    if value.isprintable() and "  " not in value and value[:1] != " " and value[-1:] != " ":
        return value  # printable: no control character, and no white space but " "
    return re.sub(r"\s+", " ", re.sub(r"[\x00-\x1f\x7f]", " ", value)).strip()


class TemplateSet:
    """The email templates of one project."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._loaded: dict[str, tuple[tuple[int, bool], EmailTemplate]] = {}
        #: Each template's two files (a Path made once: making one costs a stat's worth).
        self._paths: dict[str, tuple[Path, Path]] = {}
        self.env = BoundedSandbox(
            loader=_ProjectLoader(str(directory)),
            undefined=StrictUndefined,
            autoescape=_autoescape,
            keep_trailing_newline=True,
            finalize=_printable,
        )
        #: Subjects, preheaders and notes: plain text, compiled once per source.
        self._text_env = self.env.overlay(autoescape=False)
        self._strings: dict[str, Template] = {}

    def names(self) -> list[str]:
        """Email templates: every ``*.html.j2`` not starting with ``_`` (layouts and
        partials start with ``_``)."""
        if not self.directory.is_dir():
            return []
        return sorted(
            path.name[: -len(HTML_SUFFIX)]
            for path in self.directory.glob(f"*{HTML_SUFFIX}")
            if not path.name.startswith("_")
        )

    def _files(self) -> list[str]:
        """Every file of the templates folder (layouts and partials too)."""
        if not self.directory.is_dir():
            return []
        return sorted(path.name for path in self.directory.iterdir() if path.is_file())

    def exists(self, name: str) -> bool:
        return (self.directory / f"{name}{HTML_SUFFIX}").is_file()

    def load(self, name: str) -> EmailTemplate:
        """Read the front matter of template *name*; raise ``path:line`` errors.

        The result is kept until the file changes, so a running daemon sees edits.
        """
        paths = self._paths.get(name)
        if paths is None:
            if len(self._paths) > 1000:
                self._paths.clear()
            paths = self._paths[name] = (
                self.directory / f"{name}{HTML_SUFFIX}", self.directory / f"{name}{TEXT_SUFFIX}"
            )
        path, text_path = paths
        try:
            stamp = (path.stat().st_mtime_ns, text_path.exists())
        except OSError:
            stamp = None
        cached = self._loaded.get(name)
        if stamp is not None and cached is not None and cached[0] == stamp:
            return cached[1]
        template = self._load(name, path)
        if stamp is not None:
            self._loaded[name] = (stamp, template)
        return template

    def _load(self, name: str, path: Path) -> EmailTemplate:
        _refuse_outside(path, self.directory)
        _refuse_outside(self.directory / f"{name}{TEXT_SUFFIX}", self.directory)
        try:
            source = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputFileError(f"{path}: no such template") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputFileError(f"{path}: cannot read: {exc}") from None
        front, _ = split_front_matter(source)
        if front is None:
            raise InputFileError(
                f"{path}:1: the template must open with a front matter block "
                "(---, subject: ..., ---)"
            )
        data = parse_yaml(front, str(path), first_line=2) or {}
        if not isinstance(data, dict):
            raise InputFileError(f"{path}:2: the front matter must be a mapping of keys")
        for key in data:
            if key not in FRONT_MATTER_KEYS:
                raise InputFileError(
                    f"{path}:{key_line(data, key, 0) + 1}: unknown front matter key "
                    f"{key!r} (use: {', '.join(FRONT_MATTER_KEYS)})"
                )
        subject = data.get("subject")
        if not isinstance(subject, str) or not subject.strip():
            raise InputFileError(f"{path}:2: the front matter needs a subject")
        preheader = data.get("preheader") or ""
        return EmailTemplate(
            name=name,
            path=path,
            subject=subject,
            preheader=str(preheader),
            has_text_part=(self.directory / f"{name}{TEXT_SUFFIX}").is_file(),
            subject_line=key_line(data, "subject", 1) + 1,
            preheader_line=key_line(data, "preheader", 1) + 1,
        )

    def unknown_variables(self, name: str) -> list[tuple[int, str]]:
        """Top-level names the template (or its front matter) uses that no email has."""
        template = self.load(name)
        found: list[tuple[int, str]] = []
        sources = [(f"{name}{HTML_SUFFIX}", None)]
        if template.has_text_part:
            sources.append((f"{name}{TEXT_SUFFIX}", None))
        for file_name, _ in sources:
            source = self.env.loader.get_source(self.env, file_name)[0]  # type: ignore[union-attr]
            tree = self._parse(source, file_name)
            try:
                undeclared = meta.find_undeclared_variables(tree) - set(VARIABLES)
                undeclared -= set(self.env.globals)
            except TemplateSyntaxError as exc:  # an unknown filter or test
                exc.filename = str(self.directory / file_name)
                raise RenderError(self._located(exc)) from None
            for node in tree.find_all(nodes.Name):
                if node.name in undeclared:
                    found.append((node.lineno, node.name))
                    undeclared.discard(node.name)
        return found

    def _parse(self, source: str, file_name: str) -> Any:
        try:
            return self.env.parse(source, file_name, str(self.directory / file_name))
        except TemplateSyntaxError as exc:
            raise RenderError(self._located(exc)) from None
        except RecursionError:
            raise RenderError(f"{self.directory / file_name}: nested too deeply to read") from None

    def _located(self, exc: TemplateSyntaxError) -> str:
        """``path:line: message`` of a syntax error, with a did-you-mean for an unknown
        filter or test."""
        message = _located(exc, self.directory)
        opened = unclosed_quote_line(getattr(exc, "source", None) or "", exc.lineno)
        if opened is not None:
            where = exc.filename or str(self.directory / (exc.name or "?"))
            return f"{where}:{opened}: a quote opened here is never closed in its tag"
        unknown = re.search(r"No (filter|test) named '([^']+)'", exc.message or "")
        if unknown:
            known = self.env.filters if unknown.group(1) == "filter" else self.env.tests
            message = message.rstrip(".") + did_you_mean(unknown.group(2), known)
        return message

    def render(self, name: str, variables: Mapping[str, Any]) -> RenderedEmail:
        """Render email *name*; raise :class:`RenderError` as ``path:line: message``."""
        template = self.load(name)
        context = dict(variables)
        subject = clean_header(
            self._render_string(template.subject, context, template.path, template.subject_line)
        )
        preheader = clean_header(
            self._render_string(template.preheader, context, template.path, template.preheader_line)
        )
        context["preheader"] = preheader
        context["subject"] = subject
        body = self._render_file(f"{name}{HTML_SUFFIX}", context).lstrip()
        unsubscribe = str(context.get("unsubscribe_url", ""))
        postal = _postal_address(context)
        body = _with_preheader(body, preheader)
        body = _with_html_footer(body, unsubscribe, postal)
        if template.has_text_part:
            text = self._render_file(f"{name}{TEXT_SUFFIX}", context)
        else:
            text = html_to_text(body)
        text = _with_text_footer(text, unsubscribe, postal)
        return RenderedEmail(subject=subject, preheader=preheader, html=body, text=text)

    def render_text(
        self, source: str, variables: Mapping[str, Any], where: str, line: int = 1
    ) -> str:
        """Render a one-off text template (a task note, a notification) that starts at
        *line* of the file *where*; errors name that file and the line inside it."""
        return self._render_string(source, dict(variables), Path(where), line or 1)

    def _render_file(self, file_name: str, context: dict[str, Any]) -> str:
        try:
            with bounded():
                return self.env.get_template(file_name).render(context)
        except TemplateNotFound as exc:
            located = re.match(r"(.+?:\d+): ", _runtime_location(exc, self.directory / file_name))
            where = located.group(1) if located else str(self.directory / file_name)
            if exc.name == file_name:
                where = str(self.directory / file_name)
            why = exc.message if exc.message and "outside" in exc.message else None
            name = str(exc.name or "")
            alike = [f for f in self._files() if f.startswith("_") == name.startswith("_")]
            hint = did_you_mean(name, alike) if name else ""
            raise RenderError(
                f"{where}: {why or f'includes or extends missing template {exc.name!r}{hint}'}"
            ) from None
        except TemplateSyntaxError as exc:
            raise RenderError(self._located(exc)) from None
        except RecursionError:
            raise RenderError(
                f"{self.directory / file_name}: recursion too deep (a macro that calls itself?)"
            ) from None
        except Exception as exc:
            raise RenderError(_runtime_location(exc, self.directory / file_name)) from None

    def _render_string(self, source: str, context: dict[str, Any], path: Path, line: int) -> str:
        if "{" not in source and "\r" not in source:
            return source  # no tag at all (a fixed preheader): Jinja2 would give it as it is
        try:
            template = self._strings.get(source)
            if template is None:
                if len(self._strings) > 1000:
                    self._strings.clear()
                template = self._strings[source] = self._text_env.from_string(source)
            with bounded():
                return template.render(context)
        except TemplateSyntaxError as exc:
            message = self._located(exc).split(": ", 1)[-1]
            raise RenderError(f"{path}:{line + max(exc.lineno - 1, 0)}: {message}") from None
        except RecursionError:
            raise RenderError(f"{path}:{line}: recursion too deep") from None
        except Exception as exc:
            inner = [n for f, n in traceback.walk_tb(exc.__traceback__)
                     if f.f_code.co_filename == "<template>"]  # fmt: skip
            at = line + (inner[-1] - 1 if inner else 0)
            raise RenderError(f"{path}:{at}: {_explain(exc)}") from None


_TAG = re.compile(r"\{\{(.*?)\}\}|\{%(.*?)%\}")
_STRING = re.compile(r"\"[^\"]*\"|'[^']*'")


def unclosed_quote_line(source: str, reported: int) -> int | None:
    """The line, before *reported*, of a one-line tag with an odd number of quotes of a
    kind (``{{ "unclosed }}``): Jinja reads on until the next quote and reports where it
    stumbles, lines later."""
    for number, line in enumerate(source.splitlines()[: max(reported - 1, 0)], 1):
        for match in _TAG.finditer(line):
            inside = match.group(1) if match.group(1) is not None else match.group(2)
            left = _STRING.sub("", re.sub(r"\\.", "", inside))
            if '"' in left or "'" in left:
                return number
    return None


def _postal_address(context: Mapping[str, Any]) -> str:
    sender = context.get("sender")
    getter = getattr(sender, "get", None)
    return str(getter("postal_address", "") if getter else "")


def _located(exc: TemplateSyntaxError, directory: Path) -> str:
    where = exc.filename or str(directory / (exc.name or "?"))
    return f"{where}:{exc.lineno}: {syntax(exc.message or '')}"


def _runtime_location(exc: Exception, default: Path) -> str:
    """``path:line: message`` of a rendering error, from the template frames Jinja keeps
    in the traceback."""
    where = f"{default}"
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        filename = frame.f_code.co_filename
        if filename.endswith((".j2", ".html", ".txt")):
            where = f"{filename}:{lineno}"
    return f"{where}: {_explain(exc)}"


def _explain(exc: Exception) -> str:
    """The error's message in a marketer's words."""
    message = (exc.message if isinstance(exc, TemplateError) else None) or str(exc)
    if not isinstance(exc, TemplateError):
        message = f"{type(exc).__name__}: {message}"
    message = undefined(message)
    if "is undefined" in message or "has no attribute" in message:
        name = re.fullmatch(r"'(\w+)' is undefined", message)
        hint = did_you_mean(name.group(1), VARIABLES) if name else ""
        message = f"undefined variable: {message}{hint} (use | default(...) to allow it)"
    return message


def html_to_text(body: str) -> str:
    """The plain-text part derived from the HTML part: the words as they read, and each
    web link's URL on a line of its own after the paragraph that has it (never wrapped,
    never broken at a hyphen, no Markdown)."""
    urls: list[str] = []

    def mark(match: re.Match[str]) -> str:
        url = html.unescape(match.group(2)).strip()
        inner = match.group(3)
        if not url.lower().startswith(("http://", "https://")):
            return inner
        urls.append(url)
        label = html.unescape(re.sub(r"<[^>]+>", "", inner)).strip()
        shown = "" if label == url else inner
        return f"{shown}{_LINK_MARK}{len(urls) - 1}{_LINK_MARK}"

    visible = _HIDDEN.sub("", body)
    visible = _HEADING.sub(r"<\1p>", visible)  # headings read as paragraphs, without '#'
    visible = _ANCHOR.sub(mark, visible)
    converter = html2text.HTML2Text()
    converter.body_width = 0  # a mail client wraps; a URL must never be broken
    converter.ignore_images = True
    converter.ignore_emphasis = True
    converter.ignore_links = True
    converter.ignore_tables = True
    lines: list[str] = []
    for line in converter.handle(visible).splitlines():
        found = [urls[int(n)] for n in _MARKED.findall(line)]
        text = _MARKED.sub("", line).rstrip()
        text = re.sub(r" +([.,;:!?])", r"\1", text)  # "calendar ." once the link is out
        if text.strip() or not found:
            lines.append(text)
        lines.extend(found)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


_HIDDEN = re.compile(r"<(div|span)[^>]*display:\s*none[^>]*>.*?</\1>", re.I | re.S)
_ANCHOR = re.compile(r"<a\b[^>]*?\bhref\s*=\s*([\"'])(.*?)\1[^>]*>(.*?)</a\s*>", re.I | re.S)
_HEADING = re.compile(r"<(/?)h[1-6]\b[^>]*>", re.I)
_LINK_MARK = "NURTURELINKMARK"
_MARKED = re.compile(rf"{_LINK_MARK}(\d+){_LINK_MARK}")


def _with_preheader(body: str, preheader: str) -> str:
    if not preheader or preheader in body or html.escape(preheader) in body:
        return body
    hidden = (
        '<div style="display:none;max-height:0;overflow:hidden;opacity:0">'
        f"{html.escape(preheader)}</div>"
    )
    match = re.search(r"<body[^>]*>", body, re.I)
    if match:
        return body[: match.end()] + hidden + body[match.end() :]
    return hidden + body


def _with_html_footer(body: str, unsubscribe: str, postal: str) -> str:
    parts = []
    if postal and html.escape(postal) not in body and postal not in body:
        parts.append(html.escape(postal))
    if unsubscribe and html.escape(unsubscribe) not in body and unsubscribe not in body:
        parts.append(f'<a href="{html.escape(unsubscribe)}">Unsubscribe</a>')
    if not parts:
        return body
    footer = (
        '<div style="margin-top:24px;font-size:12px;color:#777">' + "<br>".join(parts) + "</div>"
    )
    index = body.lower().rfind("</body>")
    if index >= 0:
        return body[:index] + footer + body[index:]
    return body + footer


def _with_text_footer(text: str, unsubscribe: str, postal: str) -> str:
    lines = []
    if postal and postal not in text:
        lines.append(postal)
    if unsubscribe and unsubscribe not in text:
        lines.append(f"Unsubscribe: {unsubscribe}")
    if not lines:
        return text
    return text.rstrip("\n") + "\n\n--\n" + "\n".join(lines) + "\n"
