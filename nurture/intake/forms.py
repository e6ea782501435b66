"""Web forms: ``forms/NAME.yaml`` declares what ``POST /f/NAME`` accepts and what it
does with it. Loading and checking the files, reading one submission into a lead, the
fill-time token and the HTML snippet are here; the route is :mod:`nurture.web.forms`.

A form file::

    fields:                   # input name -> lead field (or any other name: lead.NAME)
      email: email
      first_name: first_name
      employees: employees
    required: [email]
    set: {source: pricing-guide}
    success_url: https://www.example.com/thanks
    error_url: https://www.example.com/pricing-guide#error
    origins: ["https://www.example.com"]
    consent: {required: true, text: "Email me about Acme", version: "2026-01"}
    double_opt_in: false
    confirm_from: "Ana Ruiz <ana@example.com>"
    min_seconds: 3
    rate_limit: 5 per 10 minutes
"""

from __future__ import annotations

import hashlib
import html
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nurture import clock
from nurture.errors import InputFileError, InvalidValueError
from nurture.intake.incoming import LeadItem
from nurture.language.fields import SETTABLE_FIELDS, parse_field
from nurture.language.yamlfile import key_line, load_yaml
from nurture.problems import Problem
from nurture.store.leads import LeadChanges
from nurture.tokens import sign, verify

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
#: Lead fields a visitor may fill in (never stage, status or owner).
VISITOR_FIELDS = ("email", "first_name", "last_name", "company", "title", "phone", "timezone")
#: Inputs the snippet adds: the fill-time token and the consent box.
TOKEN_INPUT, CONSENT_INPUT = "_t", "consent"
TIME_PURPOSE = "form-time"
#: A fill-time token older than this is refused (the page sat open for a day); each
#: works once (:func:`token_key`).
TOKEN_MAX_AGE = 24 * 3600
MAX_VALUE = 2000
KEYS = ("fields", "required", "set", "labels", "success_url", "error_url", "origins",
        "consent", "double_opt_in", "confirm_from", "confirm_subject", "min_seconds",
        "rate_limit", "honeypot")  # fmt: skip


@dataclass(frozen=True)
class Consent:
    required: bool
    text: str
    version: str | None


@dataclass(frozen=True)
class Form:
    """One form, as its file declares it."""

    name: str
    path: Path
    #: Input name -> lead field, or the name of a custom attribute.
    fields: dict[str, str]
    required: tuple[str, ...] = ("email",)
    #: Fields and attributes every lead from this form gets.
    set_values: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    success_url: str | None = None
    error_url: str | None = None
    #: Origins allowed to post (CORS, and the Origin of plain form posts).
    origins: tuple[str, ...] = ()
    consent: Consent | None = None
    double_opt_in: bool = False
    confirm_from: str = ""
    confirm_subject: str = "Please confirm your email address"
    min_seconds: float = 3.0
    rate_limit: str = "5 per 10 minutes"
    honeypot: str = "nickname"

    def label(self, name: str) -> str:
        return self.labels.get(name) or name.replace("_", " ").capitalize()


def _url(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise InvalidValueError(f"{key}: an http:// or https:// URL")
    return value


def _text_map(value: Any, key: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str | int | float) for v in
                                               value.values()):  # fmt: skip
        raise InvalidValueError(f"{key}: a mapping of names to text")
    return {str(k): str(v) for k, v in value.items()}


def parse_form(name: str, path: Path, data: Any) -> tuple[Form | None, list[Problem]]:
    """Check one form file's content; every problem with its line."""
    problems: list[Problem] = []

    def bad(key: str, message: str) -> None:
        problems.append(Problem(str(path), key_line(data, key, 1), message))

    if not NAME.fullmatch(name):
        return None, [Problem(str(path), None, "name the file with lower-case letters, "
                              "digits, - and _ (it is the form's URL: /f/NAME)")]  # fmt: skip
    if not isinstance(data, dict):
        return None, [Problem(str(path), 1, "a form is a mapping (fields:, set:, ...)")]
    for key in data:
        if key not in KEYS:
            bad(str(key), f"unknown key {key!r} (keys: {', '.join(KEYS)})")
    values: dict[str, Any] = {"name": name, "path": path}
    checks = {
        "fields": lambda v: _fields(v),
        "required": lambda v: tuple(_names(v, "required")),
        "set": lambda v: _set_values(_text_map(v, "set")),
        "labels": lambda v: _text_map(v, "labels"),
        "success_url": lambda v: _url(v, "success_url"),
        "error_url": lambda v: _url(v, "error_url"),
        "origins": lambda v: tuple(_origin(o) for o in _names(v, "origins")),
        "consent": _consent,
        "double_opt_in": lambda v: _flag(v, "double_opt_in"),
        "confirm_from": lambda v: _sender(v),
        "confirm_subject": lambda v: _line(v, "confirm_subject"),
        "min_seconds": lambda v: _seconds(v),
        "rate_limit": lambda v: _rate(v),
        "honeypot": lambda v: _line(v, "honeypot"),
    }
    target = {"set": "set_values"}
    for key, check in checks.items():
        if key not in data:
            continue
        try:
            values[target.get(key, key)] = check(data[key])
        except InvalidValueError as exc:
            bad(key, str(exc))
    if "fields" not in data:
        problems.append(Problem(str(path), 1, "fields: required (input name: lead field)"))
    fields = values.get("fields", {})
    if fields and "email" not in fields.values():
        bad("fields", "one input must map to email")
    for name_ in values.get("required", ()):
        if fields and name_ not in fields:
            bad("required", f"required input {name_!r} is not one of fields")
    if values.get("double_opt_in") and not values.get("confirm_from"):
        bad("double_opt_in", "double_opt_in needs confirm_from (who the confirmation is from)")
    if problems:
        return None, problems
    return Form(**values), []


def _names(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidValueError(f"{key}: a list of names")
    return list(value)


def _fields(value: Any) -> dict[str, str]:
    mapping = _text_map(value, "fields")
    for name, target in mapping.items():
        if name in (TOKEN_INPUT, CONSENT_INPUT):
            raise InvalidValueError(f"fields: {name!r} is the snippet's own input")
        if target in SETTABLE_FIELDS and target not in VISITOR_FIELDS:
            raise InvalidValueError(f"fields: a visitor may not set {target} (use set:)")
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", target):
            raise InvalidValueError(f"fields: {target!r}: a lead field or a snake_case name")
    return mapping


def _set_values(mapping: dict[str, str]) -> dict[str, str]:
    for name, value in mapping.items():
        if name in ("email", "status"):
            raise InvalidValueError(f"set: {name} cannot be set for every lead")
        if name in SETTABLE_FIELDS:
            parse_field(name, value)
    return mapping


def _origin(value: str) -> str:
    if not re.fullmatch(r"https?://[^/\s]+", value):
        raise InvalidValueError(f"origins: {value!r}: scheme and host, like https://example.com")
    return value


def _consent(value: Any) -> Consent:
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        raise InvalidValueError("consent: {required: true, text: ..., version: ...}")
    version = value.get("version")
    return Consent(_flag(value.get("required", True), "consent.required"), value["text"],
                   None if version is None else str(version))  # fmt: skip


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidValueError(f"{key}: true or false")
    return value


def _line(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip() or "\n" in value:
        raise InvalidValueError(f"{key}: one line of text")
    return value.strip()


def _sender(value: Any) -> str:
    from nurture.mail.compose import Sender

    if not isinstance(value, str) or "@" not in Sender.parse(value).email:
        raise InvalidValueError('confirm_from: an address, like "Ana Ruiz <ana@example.com>"')
    return value


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 3600:
        raise InvalidValueError("min_seconds: 0 to 3600")
    return float(value)


def _rate(value: Any) -> str:
    from limits import parse

    try:
        parse(str(value))
    except ValueError:
        raise InvalidValueError(f"rate_limit: {value!r}: like '5 per 10 minutes'") from None
    return str(value)


def load_forms(directory: Path) -> tuple[dict[str, Form], list[Problem]]:
    """Every ``forms/*.yaml``; a bad file is reported and left out, the others load."""
    forms: dict[str, Form] = {}
    problems: list[Problem] = []
    if not directory.is_dir():
        return forms, problems
    for path in sorted(directory.glob("*.yaml")):
        try:
            data = load_yaml(path)
        except InputFileError as exc:
            from nurture.problems import problem_from_error

            problems.append(problem_from_error(exc, path))
            continue
        form, found = parse_form(path.stem, path, data)
        problems.extend(found)
        if form is not None:
            forms[form.name] = form
    return forms, problems


def read_submission(form: Form, values: dict[str, str], ip: str) -> LeadItem:
    """The lead a submission describes; :class:`InvalidValueError` with a message for
    the visitor (which input, what is wrong)."""
    fields: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    errors: list[str] = []
    for name, target in form.fields.items():
        value = (values.get(name) or "").strip()
        if not value:
            if name in form.required:
                errors.append(f"{form.label(name)} is required")
            continue
        if len(value) > MAX_VALUE:
            errors.append(f"{form.label(name)} is too long")
            continue
        if target in SETTABLE_FIELDS:
            try:
                fields[target] = parse_field(target, value)
            except InvalidValueError:
                errors.append(f"{form.label(name)} is not valid")
        else:
            attributes[target] = value
    consent = None
    if form.consent is not None:
        if (values.get(CONSENT_INPUT) or "").strip():
            consent = {"text": form.consent.text, "version": form.consent.version, "ip": ip}
        elif form.consent.required:
            errors.append("Please tick the consent box")
    if errors:
        raise InvalidValueError("; ".join(errors))
    for name, value in form.set_values.items():
        if name in SETTABLE_FIELDS:
            fields[name] = parse_field(name, value)
        else:
            attributes[name] = value
    if form.double_opt_in:
        fields["status"] = "pending"  # a new lead waits; nobody known is held back
    email = str(fields.pop("email"))
    return LeadItem(LeadChanges(email, fields, attributes), consent)


def time_token(secret: str, form: str, now: float | None = None) -> str:
    """The token the snippet puts in its form when the page loads: the form, the moment
    and a random nonce (two pages loaded in one second get two tokens), signed."""
    moment = now if now is not None else clock.now().timestamp()
    return sign(secret, TIME_PURPOSE, f"{form}:{int(moment)}:{secrets.token_urlsafe(9)}")


def filled_too_fast(secret: str, form: Form, token: str, now: float) -> str | None:
    """Why the fill-time token refuses a submission at *now*, or ``None``. (Spending
    it, so that it works once, is the caller's: :func:`token_key`.)"""
    if form.min_seconds <= 0:
        return None
    payload = verify(secret, TIME_PURPOSE, token or "")
    # FORM:ISSUED:NONCE, or FORM:ISSUED from before tokens had a nonce.
    name, issued, *_ = [*(payload or "").split(":"), "", ""]
    if name != form.name or not issued.isdigit():
        return "no valid fill-time token (the snippet's script sets it)"
    age = now - int(issued)
    if age < form.min_seconds:
        return f"sent {age:.0f} s after the page loaded (at least {form.min_seconds:g} s)"
    if age > TOKEN_MAX_AGE:
        return "the page was loaded too long ago"
    return None


def token_key(token: str) -> str:
    """The name under which a spent fill-time token is remembered (a digest: the token
    itself is not kept)."""
    return "form:" + hashlib.sha256(token.encode()).hexdigest()[:40]


def snippet(form: Form, base_url: str) -> str:
    """An HTML snippet to paste into a page: the form, a hidden honeypot, and a small
    script that fetches the fill-time token (no library, no CDN)."""
    action = f"{base_url}/f/{form.name}"
    esc = html.escape
    lines = [f'<form method="post" action="{esc(action)}" accept-charset="utf-8" '
             f'class="nurture-form" data-nurture-form="{esc(form.name)}">']  # fmt: skip
    for name, target in form.fields.items():
        kind = {"email": "email", "phone": "tel"}.get(target, "text")
        required = " required" if name in form.required else ""
        lines.append(f'  <p><label>{esc(form.label(name))} <input type="{kind}" '
                     f'name="{esc(name)}"{required}></label></p>')  # fmt: skip
    if form.consent is not None:
        required = " required" if form.consent.required else ""
        lines.append(f'  <p><label><input type="checkbox" name="{CONSENT_INPUT}" value="yes"'
                     f"{required}> {esc(form.consent.text)}</label></p>")  # fmt: skip
    lines += [
        '  <p style="position:absolute;left:-10000px" aria-hidden="true"><label>Leave this '
        f'empty <input type="text" name="{esc(form.honeypot)}" tabindex="-1" '
        'autocomplete="off"></label></p>',
        f'  <input type="hidden" name="{TOKEN_INPUT}" value="">',
        '  <p><button type="submit">Send</button></p>',
        "</form>",
        "<script>",
        f'fetch("{esc(action)}/t").then(function (r) {{ return r.json(); }}).then(function (d) {{',
        f'  document.querySelectorAll(\'form[data-nurture-form="{esc(form.name)}"] '
        f"input[name={TOKEN_INPUT}]').forEach(function (i) {{ i.value = d.token; }});",
        "});",
        "</script>",
    ]
    return "\n".join(lines) + "\n"
