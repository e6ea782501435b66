"""Importing leads from CSV: upsert by email, row by row validation, nothing good lost.

Parsing (:func:`read_records`) is pure and streams; :func:`import_csv` writes the
accepted rows through the store in batches, one transaction per batch.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sqlalchemy import Engine
from sqlmodel import Session

from nurture.errors import InputFileError, InvalidValueError
from nurture.language.fields import SETTABLE_FIELDS, check_storable, parse_field
from nurture.store.leads import LeadChanges, upsert_leads
from nurture.store.suppression import suppressed
from nurture.suggest import close_match, did_you_mean

#: Other spellings of the known columns (after :func:`column_key`), as the usual exports
#: write them (HubSpot, Salesforce, Pipedrive, Zoho, Mailchimp, Outlook, Google Contacts,
#: LinkedIn, Apollo...). Where a file has several columns for one field (Outlook's
#: "Business Phone" and "Mobile Phone"), the one earliest in its list wins and the others
#: stay custom attributes.
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "email": (
        "e_mail",
        "email_address",
        "e_mail_address",
        "emailaddress",
        "mail",
        "work_email",
        "business_email",
        "primary_email",
        "contact_email",
        "person_email",
        "email_1",
        "e_mail_1_value",
        "email_1_value",
        "email_s",
    ),
    "first_name": ("firstname", "first", "given_name", "fname", "person_first_name"),
    "last_name": ("lastname", "last", "surname", "family_name", "lname", "person_last_name"),
    "company": (
        "company_name",
        "organization",
        "organisation",
        "organization_name",
        "account_name",
        "account",
        "employer",
        "organization_1_name",
    ),
    "title": ("job_title", "position", "designation", "job_position", "role"),
    "phone": (
        "phone_number",
        "telephone",
        "work_phone",
        "business_phone",
        "direct_phone",
        "work_direct_phone",
        "phone_1_value",
        "mobile",
        "mobile_phone",
        "mobile_number",
    ),
    "timezone": ("tz", "time_zone", "timezone_name"),
    "owner": ("lead_owner", "contact_owner", "owner_email", "record_owner", "account_owner"),
    "source": ("lead_source", "original_source", "source_name"),
    "stage": ("lead_stage",),
    "status": ("contact_status",),
}
ALIASES = {alias: name for name, aliases in FIELD_ALIASES.items() for alias in aliases}
#: Columns nurture manages itself: ignored, with a warning, if a file has them.
RESERVED = frozenset({"id", "attributes", "created_at", "updated_at"})
#: The column ``--rejects`` adds: ignored when the fixed file comes back.
REASON_COLUMN = "reject_reason"
DELIMITERS = (",", ";", "\t", "|")
BATCH_SIZE = 1000


def column_key(header: str) -> str:
    """``"First Name"`` -> ``"first_name"``: the name a column is known by."""
    return re.sub(r"[^0-9a-z]+", "_", header.strip().lower()).strip("_")


@dataclass(frozen=True)
class Problem:
    """A row (or the header) that could not be taken as it is."""

    #: 1-based line of the file where the row starts.
    line: int
    message: str


@dataclass(frozen=True)
class Record:
    """One accepted row."""

    line: int
    changes: LeadChanges
    #: The row as it stood in the file (for ``--rejects`` if the write refuses it).
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class Column:
    index: int
    header: str
    #: A lead field name, or ``None`` for a custom attribute.
    field: str | None
    key: str


@dataclass
class ImportReport:
    """What an import did: counts per outcome and every problem with its line."""

    path: str
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    #: Rows whose email already appeared earlier in the same file (merged into it).
    duplicates: int = 0
    rejected: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    #: Nothing was written: the counts say what an import would do.
    dry_run: bool = False
    #: The file's header and its rejected rows as they stood, by line (for ``--rejects``).
    header: list[str] = field(default_factory=list)
    rejected_rows: dict[int, list[str]] = field(default_factory=dict)

    def reject(self, line: int, message: str, values: Sequence[str] | None) -> None:
        """Note a rejected row, keeping its values for the rejects file."""
        self.rejected.append(Problem(line, message))
        self.rejected_rows[line] = list(values) if values is not None else []

    def write_rejects(self, path: Path) -> int:
        """Write the rejected rows as CSV (the file's header plus a ``reject_reason``
        column), readable by the owner only: it holds personal data. Returns the count."""
        reasons = {problem.line: problem.message for problem in self.rejected}
        header = [h for h in self.header if column_key(h) != REASON_COLUMN]
        keep = [i for i, h in enumerate(self.header) if column_key(h) != REASON_COLUMN]
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(descriptor, "w", encoding="utf-8", newline="", errors="replace") as out:
            writer = csv.writer(out)
            writer.writerow([*header, REASON_COLUMN])
            for line in sorted(reasons):
                values = self.rejected_rows.get(line, [])
                row = [values[i] if i < len(values) else "" for i in keep]
                writer.writerow([*row, f"line {line}: {reasons[line]}"])
        return len(reasons)

    def summary(self) -> str:
        if self.dry_run:
            parts = [f"{self.created} would be created", f"{self.updated} would be updated"]
        else:
            parts = [f"{self.created} created", f"{self.updated} updated"]
        if self.unchanged:
            parts.append(f"{self.unchanged} unchanged")
        if self.duplicates:
            parts.append(f"{self.duplicates} duplicate rows merged")
        parts.append(f"{len(self.rejected)} rejected")
        prefix = "(dry run, nothing written) " if self.dry_run else ""
        return f"{prefix}{self.path}: {self.rows} rows: " + ", ".join(parts)


def open_text(raw: IO[bytes]) -> io.TextIOWrapper:
    """Decode a CSV byte stream: UTF-16 if it has that BOM, else UTF-8 with or without BOM.

    Bytes that are not UTF-8 are kept as lone surrogates so the row holding them can be
    rejected by line number while the rest of the file is imported.
    """
    head = raw.peek(4)[:4] if isinstance(raw, io.BufferedReader) else b""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return io.TextIOWrapper(raw, encoding="utf-16", newline="")
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")


def _has_bad_bytes(values: list[str]) -> bool:
    return any(re.search("[\udc80-\udcff]", value) for value in values)


def _pick_delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def parse_mapping(pairs: Iterable[str]) -> dict[str, str]:
    """``--map "Column Name=field"`` options -> {column key: field or attribute name}.

    The field is a lead field (``email``, ``company``...), ``-`` to ignore the column,
    or any other name for a custom attribute.
    """
    mapping: dict[str, str] = {}
    for pair in pairs:
        column, sep, target = pair.rpartition("=")
        if not sep or not column.strip() or not target.strip():
            raise InvalidValueError(f'--map {pair!r}: write it as "Column Name=field"')
        wanted = target.strip()
        if wanted != "-":
            wanted = column_key(wanted)
            if not wanted:
                raise InvalidValueError(f"--map {pair!r}: {target.strip()!r} is not a name")
            if wanted not in SETTABLE_FIELDS and close_match(wanted, SETTABLE_FIELDS):
                hint = did_you_mean(wanted, SETTABLE_FIELDS)
                raise InvalidValueError(
                    f"--map {pair!r}: {target.strip()!r} is not a lead field{hint}; "
                    "to keep it as a custom attribute, name it so it is not that close"
                )
        mapping[column_key(column)] = wanted
    return mapping


def _alias_rank(key: str, field_name: str) -> int:
    if key == field_name:
        return 0
    return 1 + FIELD_ALIASES.get(field_name, ()).index(key)


def _map_header(
    name: str, header: list[str], mapping: dict[str, str] | None = None
) -> tuple[list[Column], list[Problem]]:
    mapping = mapping or {}
    columns: list[Column] = []
    warnings: list[Problem] = []
    if _has_bad_bytes(header):
        raise InputFileError(
            f"{name}:1: the header is not valid UTF-8 text: save the file as UTF-8"
        )
    keys = [column_key(text) for text in header]
    unknown = [column for column in mapping if column not in keys]
    if unknown:
        found = ", ".join(repr(h) for h in header if h.strip()) or "nothing"
        raise InputFileError(
            f"{name}:1: --map names a column the file does not have: "
            f"{', '.join(repr(c) for c in unknown)} (found {found})"
        )
    # Which column gives each field: a --map first, then the exact name, then the
    # earliest alias; every other column stays a custom attribute under its own name.
    chosen: dict[str, tuple[int, int]] = {}  # field -> (rank, index)
    for index, key in enumerate(keys):
        target = mapping.get(key)
        if target is not None:
            if target == "-" or target not in SETTABLE_FIELDS:
                continue
            rank = -1
        else:
            target = ALIASES.get(key, key)
            if target not in SETTABLE_FIELDS:
                continue
            rank = _alias_rank(key, target)
        if target in chosen and chosen[target][0] == rank:
            raise InputFileError(
                f"{name}:1: columns {chosen[target][1] + 1} and {index + 1} both give "
                f"{target!r}: keep one of them, or say which with --map"
            )
        if target not in chosen or rank < chosen[target][0]:
            chosen[target] = (rank, index)
    giver = {index: target for target, (_rank, index) in chosen.items()}
    attributes: set[str] = set()
    for index, text in enumerate(header):
        key = keys[index]
        if mapping.get(key) == "-":
            continue
        if not key:
            warnings.append(Problem(1, f"column {index + 1} has no name: its values are ignored"))
            continue
        if key == REASON_COLUMN:
            warnings.append(Problem(1, f"column {text!r} (from --rejects) is ignored"))
            continue
        if index in giver:
            columns.append(Column(index, text, giver[index], giver[index]))
            continue
        attribute = mapping.get(key, key)
        if attribute in RESERVED:
            warnings.append(
                Problem(1, f"column {text!r} is managed by nurture: its values are ignored")
            )
            continue
        target = ALIASES.get(attribute, attribute)
        if target in chosen:
            winner = header[chosen[target][1]]
            warnings.append(
                Problem(
                    1,
                    f"column {text!r} would also give {target}: {winner!r} gives it, "
                    f"this one is kept as the attribute {attribute!r} "
                    f'(--map "{text}=FIELD" to choose)',
                )
            )
        if attribute in attributes:
            raise InputFileError(
                f"{name}:1: two columns give the attribute {attribute!r}: keep one of them"
            )
        attributes.add(attribute)
        columns.append(Column(index, text, None, attribute))
    if "email" not in chosen:
        found = ", ".join(repr(h) for h in header if h.strip()) or "nothing"
        raise InputFileError(
            f"{name}:1: no email column in the header (found {found}); "
            'name it with --map "Column Name=email"'
        )
    return columns, warnings


def parse_row(
    columns: list[Column], values: list[str], warnings: list[str] | None = None
) -> LeadChanges:
    """Validate one row; raise :class:`InvalidValueError` naming every bad field.

    An unknown timezone does not lose the lead: it is left out (the project's default
    timezone applies) and a warning with a did-you-mean goes to *warnings*.
    """
    fields: dict[str, object] = {}
    attributes: dict[str, object] = {}
    errors: list[str] = []
    for column in columns:
        value = values[column.index] if column.index < len(values) else ""
        if not value.strip():
            if column.field == "email":
                errors.append("email is empty")
            continue
        try:
            if column.field is None:
                check_storable(column.header, value)
                attributes[column.key] = value.strip()
                continue
            fields[column.field] = parse_field(column.field, value)
        except InvalidValueError as exc:
            if column.field == "timezone" and warnings is not None:
                warnings.append(f"{exc}: the project's default timezone is used")
                continue
            errors.append(str(exc))
    if errors:
        raise InvalidValueError("; ".join(errors))
    email = str(fields.pop("email"))
    return LeadChanges(email=email, fields=fields, attributes=attributes)


def read_records(
    name: str,
    text: IO[str],
    report: ImportReport,
    delimiter: str | None = None,
    mapping: dict[str, str] | None = None,
) -> Iterator[Record]:
    """Yield each accepted row of a CSV stream; add problems and counts to *report*."""
    header_line = text.readline()
    if not header_line.strip():
        raise InputFileError(
            f"{name}: the file is empty: expected a header row with an email column"
        )
    delimiter = delimiter or _pick_delimiter(header_line)
    header = next(csv.reader([header_line], delimiter=delimiter))
    columns, warnings = _map_header(name, header, mapping)
    report.warnings.extend(warnings)
    report.header = header
    reader = csv.reader(text, delimiter=delimiter)
    line_after = 1  # the reader's line count starts after the header we read ourselves
    while True:
        start = line_after + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line_after = reader.line_num + 1
            report.rows += 1
            report.reject(start, f"cannot parse this row: {exc}", None)
            continue
        line_after = reader.line_num + 1
        if not any(value.strip() for value in values):
            continue
        report.rows += 1
        if _has_bad_bytes(values):
            report.reject(start, "not valid UTF-8 text: save the file as UTF-8", values)
            continue
        if len(values) > len(header):
            why = f"{len(values)} values but the header has {len(header)} columns"
            report.reject(start, why, values)
            continue
        notes: list[str] = []
        try:
            changes = parse_row(columns, values, notes)
        except InvalidValueError as exc:
            report.reject(start, str(exc), values)
            continue
        report.warnings.extend(Problem(start, note) for note in notes)
        yield Record(start, changes, tuple(values))


def import_csv(
    engine: Engine,
    path: Path,
    *,
    delimiter: str | None = None,
    mapping: dict[str, str] | None = None,
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
    on_progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Upsert every valid row of the CSV file at *path* into the lead store.

    Rows are written in batches of *batch_size*, each in its own transaction, so a very
    large file neither holds one long lock nor loses finished batches on an interruption.
    *mapping* (from :func:`parse_mapping`) says which column gives which field. With
    *dry_run*, every batch is rolled back: the report says what the import would do.
    *on_progress* is called with the number of bytes read so far.
    """
    name = str(path)
    report = ImportReport(path=name, dry_run=dry_run)
    first_line: dict[str, int] = {}
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise InputFileError(f"{name}: cannot open: {exc.strerror}") from None
    with raw, open_text(raw) as text:
        batch: dict[str, Record] = {}
        # Emails of this batch that an earlier batch already wrote: their rows are
        # counted as duplicates, not again as updates.
        carried: set[str] = set()
        try:
            for record in read_records(name, text, report, delimiter, mapping):
                email = record.changes.email
                if email in first_line:
                    report.duplicates += 1
                    report.warnings.append(
                        Problem(
                            record.line,
                            f"{email} is also on line {first_line[email]}: "
                            "this row's values are merged over it",
                        )
                    )
                    if email in batch:
                        batch[email].changes.absorb(record.changes)
                        continue
                    carried.add(email)
                else:
                    first_line[email] = record.line
                batch[email] = record
                if len(batch) >= batch_size:
                    _flush(engine, batch, report, carried, dry_run)
                    if on_progress:
                        on_progress(raw.tell())
        except UnicodeDecodeError as exc:
            raise InputFileError(f"{name}: cannot decode the file: {exc}") from None
        _flush(engine, batch, report, carried, dry_run)
        if on_progress:
            on_progress(raw.tell())
    return report


def _flush(
    engine: Engine,
    batch: dict[str, Record],
    report: ImportReport,
    carried: set[str],
    dry_run: bool = False,
) -> None:
    if not batch:
        return
    with Session(engine, expire_on_commit=False) as session:
        try:
            for email in suppressed(session, batch):
                why = f"{email} was erased at the person's request (suppression list): not imported"
                record = batch.pop(email)
                report.reject(record.line, why, record.values)
            result = upsert_leads(session, [record.changes for record in batch.values()])
            if dry_run:
                session.rollback()
            else:
                session.commit()
        except BaseException:
            session.rollback()
            raise
    report.created += len(result.created)
    report.updated += sum(1 for email in result.updated if email not in carried)
    report.unchanged += sum(1 for email in result.unchanged if email not in carried)
    batch.clear()
    carried.clear()
