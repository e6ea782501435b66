"""The CSV reader on its own: header mapping, row validation and line numbers."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from nurture.errors import InputFileError, InvalidValueError
from nurture.intake.importer import (
    ImportReport,
    Record,
    column_key,
    mapping_warnings,
    open_text,
    parse_mapping,
    read_records,
)


def parse(text: str, delimiter: str | None = None) -> tuple[list[Record], ImportReport]:
    report = ImportReport(path="leads.csv")
    records = list(read_records("leads.csv", io.StringIO(text), report, delimiter))
    return records, report


def test_column_names_are_normalised_and_aliases_known() -> None:
    assert column_key(" First Name ") == "first_name"
    assert column_key("E-mail") == "e_mail"
    records, _ = parse("E-mail,First Name,Surname,Company Size\nA@B.com,Ann,Lee,40\n")
    changes = records[0].changes
    assert changes.email == "a@b.com"
    assert changes.fields == {"first_name": "Ann", "last_name": "Lee"}
    assert changes.attributes == {"employees": "40"}  # the name the examples read


def test_each_bad_row_is_rejected_with_its_line_and_every_reason() -> None:
    records, report = parse(
        "email,timezone,stage\n"
        "good@example.com,Europe/Warsaw,warm\n"
        "bad@,Mars/Base,boiling\n"
        ",UTC,cold\n"
        "also.good@example.com,,\n"
    )
    assert [r.changes.email for r in records] == ["good@example.com", "also.good@example.com"]
    assert [(p.line, p.message) for p in report.rejected] == [
        (3, report.rejected[0].message),
        (4, "email is empty"),
    ]
    message = report.rejected[0].message
    assert "invalid email 'bad@'" in message
    assert "unknown stage 'boiling'" in message
    assert report.rows == 4


def test_an_unknown_timezone_keeps_the_lead_on_the_projects_timezone_with_a_hint() -> None:
    records, report = parse(
        "email,timezone\na@example.com,Paris\nb@example.com,GMT+1\nc@example.com,Mars/Base\n"
    )
    assert [r.changes.email for r in records] == ["a@example.com", "b@example.com", "c@example.com"]
    assert all("timezone" not in r.changes.fields for r in records)
    assert report.rejected == []
    warnings = {w.line: w.message for w in report.warnings}
    assert "unknown timezone 'Paris' (did you mean 'Europe/Paris'?)" in warnings[2]
    assert "the project's default timezone is used" in warnings[2]
    # Etc/GMT+1 is UTC-1: an offset is never "corrected" into the reversed POSIX name.
    assert "Etc/GMT" not in warnings[3] and "an offset has no daylight saving" in warnings[3]
    assert "Mars/Base" in warnings[4]


def test_the_usual_export_headers_of_crms_and_mail_tools_are_known() -> None:
    outlook = "First Name,Last Name,Company,Job Title,Business Phone,Mobile Phone,E-mail Address\n"
    records, report = parse(outlook + "Ann,Lee,Acme,CTO,+1 555,+1 666,Ann@Acme.com\n")
    changes = records[0].changes
    assert changes.email == "ann@acme.com"
    assert changes.fields == {
        "first_name": "Ann",
        "last_name": "Lee",
        "company": "Acme",
        "title": "CTO",
        "phone": "+1 555",
    }
    # The second phone stays with the lead, and the file says so.
    assert changes.attributes == {"mobile_phone": "+1 666"}
    assert "'Business Phone' gives it" in report.warnings[0].message
    hubspot = "Record ID,Email,Contact owner,Time Zone,Company Name\n"
    records, _ = parse(hubspot + "7,b@x.io,Sam@Example.com,Europe/Paris,Beta\n")
    assert records[0].changes.fields == {
        "owner": "sam@example.com",
        "timezone": "Europe/Paris",
        "company": "Beta",
    }
    assert records[0].changes.attributes == {"record_id": "7"}


def test_map_says_which_column_gives_which_field() -> None:
    mapping = parse_mapping(["Correo=email", "Mobile Phone=phone", "Notes=-", "Size=employees"])
    report = ImportReport(path="leads.csv")
    text = "Correo,Business Phone,Mobile Phone,Notes,Size\nz@x.io,1,2,secret,40\n"
    [record] = read_records("leads.csv", io.StringIO(text), report, None, mapping)
    assert record.changes.email == "z@x.io"
    assert record.changes.fields == {"phone": "2"}
    assert record.changes.attributes == {"business_phone": "1", "employees": "40"}
    # Any name that is not exactly a field is an attribute; a near miss only warns.
    assert parse_mapping(["Org=compnay"]) == {"org": "compnay"}
    assert mapping_warnings(parse_mapping(["Org=compnay"])) == [
        "--map: 'compnay' is not a lead field (did you mean 'company'?): the column is kept "
        "as the attribute compnay"
    ]
    with pytest.raises(InvalidValueError, match="write it as"):
        parse_mapping(["Org"])
    wrong = parse_mapping(["Nope=email"])
    with pytest.raises(InputFileError, match="--map names a column the file does not have: 'nope'"):
        list(read_records("leads.csv", io.StringIO(text), report, None, wrong))


def test_nul_and_control_characters_reject_their_row_only() -> None:
    records, report = parse(
        "email,first_name,notes\na@x.io,A\x00n,ok\nb@x.io,Bo,x\x1b[2J\nc@x.io,Cy,fine\n"
    )
    assert [r.changes.email for r in records] == ["c@x.io"]
    assert [(p.line, p.message) for p in report.rejected] == [
        (2, "first_name: the NUL character (U+0000) is not allowed"),
        (3, "notes: a control character (U+001B) is not allowed"),
    ]


def test_line_numbers_count_quoted_newlines_and_skip_blank_lines() -> None:
    records, report = parse('email,notes\na@example.com,"two\nlines"\n\nbroken,x\n')
    assert records[0].line == 2
    assert report.rejected[0].line == 5


def test_a_row_with_too_many_values_is_rejected() -> None:
    _, report = parse("email,company\na@example.com,Acme,extra\n")
    assert report.rejected[0].message == "3 values but the header has 2 columns"


def test_short_rows_are_fine() -> None:
    records, report = parse("email,company,title\na@example.com,Acme\n")
    assert records[0].changes.fields == {"company": "Acme"}
    assert not report.rejected


def test_semicolon_files_from_spreadsheets_are_read() -> None:
    records, _ = parse("email;company\na@example.com;Acme, Inc.\n")
    assert records[0].changes.fields == {"company": "Acme, Inc."}


def test_empty_file_is_refused_clearly() -> None:
    with pytest.raises(InputFileError, match=r"leads\.csv: the file is empty"):
        parse("")


def test_file_without_email_column_names_what_it_found() -> None:
    with pytest.raises(InputFileError, match=r"leads.csv:1: no email column .*'name', 'company'"):
        parse("name,company\nAnn,Acme\n")


def test_two_columns_for_one_field_are_refused() -> None:
    with pytest.raises(InputFileError, match=r"columns 1 and 3 both give 'email'"):
        parse("email,name,EMAIL\n")
    with pytest.raises(InputFileError, match=r"columns 1 and 2 both give 'phone'.*--map"):
        parse("Phone_number,Phone Number,email\n")


def test_unnamed_and_reserved_columns_are_ignored_with_a_warning() -> None:
    records, report = parse("email,,id\na@example.com,x,7\n")
    assert records[0].changes.attributes == {}
    assert [w.message for w in report.warnings] == [
        "column 2 has no name: its values are ignored",
        "column 'id' is managed by nurture: its values are ignored",
    ]


def decode(tmp_path: Path, data: bytes) -> list[Record]:
    path = tmp_path / "leads.csv"
    path.write_bytes(data)
    report = ImportReport(path="leads.csv")
    with path.open("rb") as raw, open_text(raw) as text:
        records = list(read_records("leads.csv", text, report))
    return records + report.rejected  # type: ignore[operator]


def test_utf8_with_bom_and_utf16_are_read(tmp_path: Path) -> None:
    text = "email,first_name\nj@example.pl,Józef\n"
    for data in (b"\xef\xbb\xbf" + text.encode(), text.encode("utf-16")):
        (record,) = decode(tmp_path, data)
        assert isinstance(record, Record)
        assert record.changes.fields == {"first_name": "Józef"}


def test_non_utf8_rows_are_rejected_and_the_rest_kept(tmp_path: Path) -> None:
    data = "email,first_name\na@example.com,Ann\nj@example.pl,Józef\n".encode("latin-1")
    good, bad = decode(tmp_path, data)
    assert isinstance(good, Record) and good.changes.email == "a@example.com"
    assert bad.line == 3 and "not valid UTF-8" in bad.message  # type: ignore[union-attr]
