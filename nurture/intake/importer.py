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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from nurture.errors import InputFileError, InvalidValueError
from nurture.intake.columns import (
    ALIASES,
    ATTRIBUTES,
    FIELD_ALIASES,
    attribute_rank,
    column_key,
    mapping_warnings,
    parse_mapping,
)
from nurture.language.fields import SETTABLE_FIELDS, check_storable, name_key, parse_field
from nurture.store.database import refresh_statistics
from nurture.store.leads import LeadChanges, UpsertResult, upsert_leads
from nurture.store.suppression import suppressed

__all__ = ["column_key", "mapping_warnings", "parse_mapping"]

#: Columns nurture manages itself: ignored, with a warning, if a file has them.
RESERVED = frozenset({"id", "attributes", "created_at", "updated_at"})
#: The column ``--rejects`` adds: ignored when the fixed file comes back.
REASON_COLUMN = "reject_reason"
DELIMITERS = (",", ";", "\t", "|")
BATCH_SIZE = 1000


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


#: What :func:`open_text` makes of bytes that are not UTF-8.
_BAD_BYTES = re.compile("[\udc80-\udcff]")


def _has_bad_bytes(values: list[str]) -> bool:
    return _BAD_BYTES.search("".join(values)) is not None


def _pick_delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


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
    # Which column gives each attribute the examples read (Employees, Company size...):
    # a --map first, then the best spelling; the others keep their own names.
    named: dict[str, tuple[int, int]] = {}  # attribute -> (rank, index)
    for index, key in enumerate(keys):
        if index in giver or key not in ATTRIBUTES or key in mapping:
            continue
        rank = attribute_rank(key)
        if ATTRIBUTES[key] not in named or rank < named[ATTRIBUTES[key]][0]:
            named[ATTRIBUTES[key]] = (rank, index)
    for target in mapping.values():
        named.pop(target, None)
    attribute_of = {index: name for name, (_rank, index) in named.items()}
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
        attribute = mapping.get(key, attribute_of.get(index, key))
        if (
            key in ATTRIBUTES
            and index not in attribute_of
            and key not in mapping
            and ATTRIBUTES[key] in named
        ):
            winner = header[named[ATTRIBUTES[key]][1]]
            warnings.append(Problem(1, f"column {text!r} would also give {ATTRIBUTES[key]}: "
                                       f"{winner!r} gives it, this one is kept as the "
                                       f"attribute {key!r}"))  # fmt: skip
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
    columns: list[Column],
    values: list[str],
    warnings: list[str] | None = None,
    owners: Mapping[str, str] | None = None,
) -> LeadChanges:
    """Validate one row; raise :class:`InvalidValueError` naming every bad field and
    its column.

    An unknown timezone does not lose the lead: it is left out (the project's default
    timezone applies) and a warning with a did-you-mean goes to *warnings*. An owner
    given by name ("Sam Patel", as HubSpot writes it) is the salesperson of that name
    in *owners* (:func:`name_key` -> email); else it is kept as an attribute under the
    column's name, with a warning.
    """
    fields: dict[str, object] = {}
    attributes: dict[str, object] = {}
    errors: list[str] = []
    for column in columns:
        value = values[column.index] if column.index < len(values) else ""
        if not value.strip():
            if column.field == "email":
                named = column_key(column.header) != "email"
                errors.append("email is empty" + (f" (column {column.header!r})" if named else ""))
            continue
        try:
            if column.field is None:
                check_storable(column.header, value)
                attributes[column.key] = value.strip()
                continue
            if column.field == "owner" and "@" not in value:
                check_storable(column.header, value)
                found = (owners or {}).get(name_key(value))
                if found is not None:
                    fields["owner"] = found
                    continue
                key = column_key(column.header)
                key = key if key != "owner" else "owner_name"
                attributes[key] = value.strip()
                if warnings is not None:
                    warnings.append(
                        f"column {column.header!r}: {value.strip()!r} is neither an email nor "
                        f"the name of a salesperson in [sales] team or managers: kept as "
                        f"the attribute {key}, no owner set"
                    )
                continue
            fields[column.field] = parse_field(column.field, value)
        except InvalidValueError as exc:
            if column.field == "timezone" and warnings is not None:
                warnings.append(f"{exc}: the project's default timezone is used")
                continue
            errors.append(_in_column(str(exc), column))
    if errors:
        raise InvalidValueError("; ".join(errors))
    email = str(fields.pop("email"))
    return LeadChanges(email=email, fields=fields, attributes=attributes)


def _in_column(message: str, column: Column) -> str:
    """*message* naming the column it is about, unless it starts with its name."""
    if message.startswith((f"{column.header}:", f"{column.field}:")):
        return message
    return f"{message} (column {column.header!r})"


def read_records(
    name: str,
    text: IO[str],
    report: ImportReport,
    delimiter: str | None = None,
    mapping: dict[str, str] | None = None,
    owners: Mapping[str, str] | None = None,
) -> Iterator[Record]:
    """Yield each accepted row of a CSV stream; add problems and counts to *report*.
    *owners* names the salespeople (:func:`parse_row`)."""
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
            changes = parse_row(columns, values, notes, owners)
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
    owners: Mapping[str, str] | None = None,
) -> ImportReport:
    """Upsert every valid row of the CSV file at *path* into the lead store.

    Rows are written in batches of *batch_size*, each in its own transaction, so a very
    large file neither holds one long lock nor loses finished batches on an interruption.
    *mapping* (from :func:`parse_mapping`) says which column gives which field. With
    *dry_run*, every batch is rolled back: the report says what the import would do.
    *on_progress* is called with the number of bytes read so far. *owners* maps the
    salespeople's names (:func:`name_key`) to their emails, for owners given by name.
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
            for record in read_records(name, text, report, delimiter, mapping, owners):
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
    if not dry_run:
        refresh_statistics(engine)  # a pass right after plans for the leads written
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
    try:
        result = _write(engine, batch, report, dry_run)
    except IntegrityError:
        # Another writer (the API, a form) stored one of these emails between the
        # batch's read and its write: the batch again, a row at a time, so that a row
        # that still cannot be stored fails alone.
        result = UpsertResult()
        for email, record in list(batch.items()):
            try:
                one = _write(engine, {email: record}, report, dry_run)
            except IntegrityError as exc:
                why = str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__
                report.reject(record.line, f"could not be stored: {why}", record.values)
                continue
            result.created += one.created
            result.updated += one.updated
            result.unchanged += one.unchanged
    report.created += len(result.created)
    report.updated += sum(1 for email in result.updated if email not in carried)
    report.unchanged += sum(1 for email in result.unchanged if email not in carried)
    batch.clear()
    carried.clear()


def _write(
    engine: Engine, batch: dict[str, Record], report: ImportReport, dry_run: bool
) -> UpsertResult:
    """Upsert *batch* in one transaction (rolled back for a dry run); rows of erased
    people are rejected and taken out of it. May raise :class:`IntegrityError`."""
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
    return result
