"""Importing leads from CSV: upsert by email, row by row validation, nothing good lost.

Parsing (:func:`read_records`) is pure and streams; :func:`import_csv` writes the
accepted rows through the store in batches, one transaction per batch.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sqlalchemy import Engine

from nurture.errors import InputFileError, InvalidValueError
from nurture.leads import SETTABLE_FIELDS, parse_field
from nurture.store import LeadChanges, session_scope, upsert_leads
from nurture.suppression import suppressed

#: Other spellings of the known columns (after :func:`column_key`).
ALIASES = {
    "e_mail": "email",
    "email_address": "email",
    "mail": "email",
    "firstname": "first_name",
    "given_name": "first_name",
    "lastname": "last_name",
    "surname": "last_name",
    "family_name": "last_name",
    "job_title": "title",
    "organization": "company",
    "organisation": "company",
    "company_name": "company",
    "phone_number": "phone",
    "telephone": "phone",
    "tz": "timezone",
    "time_zone": "timezone",
    "contact_status": "status",
    "lead_owner": "owner",
    "lead_source": "source",
    "lead_stage": "stage",
}
#: Columns nurture manages itself: ignored, with a warning, if a file has them.
RESERVED = frozenset({"id", "attributes", "created_at", "updated_at"})
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

    def summary(self) -> str:
        parts = [f"{self.created} created", f"{self.updated} updated"]
        if self.unchanged:
            parts.append(f"{self.unchanged} unchanged")
        if self.duplicates:
            parts.append(f"{self.duplicates} duplicate rows merged")
        parts.append(f"{len(self.rejected)} rejected")
        return f"{self.path}: {self.rows} rows: " + ", ".join(parts)


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


def _map_header(name: str, header: list[str]) -> tuple[list[Column], list[Problem]]:
    columns: list[Column] = []
    warnings: list[Problem] = []
    seen: dict[str, int] = {}
    if _has_bad_bytes(header):
        raise InputFileError(
            f"{name}:1: the header is not valid UTF-8 text: save the file as UTF-8"
        )
    for index, text in enumerate(header):
        key = column_key(text)
        if not key:
            warnings.append(Problem(1, f"column {index + 1} has no name: its values are ignored"))
            continue
        key = ALIASES.get(key, key)
        if key in RESERVED:
            warnings.append(
                Problem(1, f"column {text!r} is managed by nurture: its values are ignored")
            )
            continue
        if key in seen:
            raise InputFileError(
                f"{name}:1: columns {seen[key] + 1} and {index + 1} both give {key!r}: "
                "keep one of them"
            )
        seen[key] = index
        columns.append(Column(index, text, key if key in SETTABLE_FIELDS else None, key))
    if "email" not in seen:
        found = ", ".join(repr(h) for h in header if h.strip()) or "nothing"
        raise InputFileError(f"{name}:1: no email column in the header (found {found})")
    return columns, warnings


def parse_row(columns: list[Column], values: list[str]) -> LeadChanges:
    """Validate one row; raise :class:`InvalidValueError` naming every bad field."""
    fields: dict[str, object] = {}
    attributes: dict[str, object] = {}
    errors: list[str] = []
    for column in columns:
        value = values[column.index] if column.index < len(values) else ""
        if not value.strip():
            if column.field == "email":
                errors.append("email is empty")
            continue
        if column.field is None:
            attributes[column.key] = value.strip()
            continue
        try:
            fields[column.field] = parse_field(column.field, value)
        except InvalidValueError as exc:
            errors.append(str(exc))
    if errors:
        raise InvalidValueError("; ".join(errors))
    email = str(fields.pop("email"))
    return LeadChanges(email=email, fields=fields, attributes=attributes)


def read_records(
    name: str, text: IO[str], report: ImportReport, delimiter: str | None = None
) -> Iterator[Record]:
    """Yield each accepted row of a CSV stream; add problems and counts to *report*."""
    header_line = text.readline()
    if not header_line.strip():
        raise InputFileError(
            f"{name}: the file is empty: expected a header row with an email column"
        )
    delimiter = delimiter or _pick_delimiter(header_line)
    header = next(csv.reader([header_line], delimiter=delimiter))
    columns, warnings = _map_header(name, header)
    report.warnings.extend(warnings)
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
            report.rejected.append(Problem(start, f"cannot parse this row: {exc}"))
            continue
        line_after = reader.line_num + 1
        if not any(value.strip() for value in values):
            continue
        report.rows += 1
        if _has_bad_bytes(values):
            report.rejected.append(Problem(start, "not valid UTF-8 text: save the file as UTF-8"))
            continue
        if len(values) > len(header):
            report.rejected.append(
                Problem(start, f"{len(values)} values but the header has {len(header)} columns")
            )
            continue
        try:
            yield Record(start, parse_row(columns, values))
        except InvalidValueError as exc:
            report.rejected.append(Problem(start, str(exc)))


def import_csv(
    engine: Engine,
    path: Path,
    *,
    delimiter: str | None = None,
    batch_size: int = BATCH_SIZE,
    on_progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Upsert every valid row of the CSV file at *path* into the lead store.

    Rows are written in batches of *batch_size*, each in its own transaction, so a very
    large file neither holds one long lock nor loses finished batches on an interruption.
    *on_progress* is called with the number of bytes read so far.
    """
    name = str(path)
    report = ImportReport(path=name)
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
            for record in read_records(name, text, report, delimiter):
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
                    _flush(engine, batch, report, carried)
                    if on_progress:
                        on_progress(raw.tell())
        except UnicodeDecodeError as exc:
            raise InputFileError(f"{name}: cannot decode the file: {exc}") from None
        _flush(engine, batch, report, carried)
        if on_progress:
            on_progress(raw.tell())
    return report


def _flush(
    engine: Engine, batch: dict[str, Record], report: ImportReport, carried: set[str]
) -> None:
    if not batch:
        return
    with session_scope(engine) as session:
        for email in suppressed(session, batch):
            why = f"{email} was erased at the person's request (suppression list): not imported"
            report.rejected.append(Problem(batch.pop(email).line, why))
        result = upsert_leads(session, [record.changes for record in batch.values()])
    report.created += len(result.created)
    report.updated += sum(1 for email in result.updated if email not in carried)
    report.unchanged += sum(1 for email in result.unchanged if email not in carried)
    batch.clear()
    carried.clear()
