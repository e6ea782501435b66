"""The foundation through the real command line, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.acceptance.conftest import Run


def demo_with_leads(nurture: Run, tmp_path: Path) -> Path:
    """``nurture init demo``, its database, and its example leads imported."""
    nurture("init", "demo")
    demo = tmp_path / "demo"
    nurture("db", "upgrade", cwd=demo)
    nurture("--now", "2026-11-16T17:00Z", "leads", "import", "leads.csv", cwd=demo)
    return demo


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_init_upgrade_import_twice_list_show(nurture: Run, tmp_path: Path) -> None:
    assert nurture("init", "demo").returncode == 0
    demo = tmp_path / "demo"
    assert {p.name for p in demo.iterdir()} >= {
        "nurture.toml",
        "sequences",
        "templates",
        "scoring.yaml",
        "leads.csv",
    }
    assert nurture("db", "upgrade", cwd=demo).returncode == 0
    first = nurture("leads", "import", "leads.csv", cwd=demo)
    assert first.returncode == 0, first.stderr
    assert "10 created, 0 updated, 0 rejected" in first.stdout
    second = nurture("leads", "import", "leads.csv", cwd=demo)
    assert "0 created, 0 updated, 10 unchanged, 0 rejected" in second.stdout

    listed = json.loads(nurture("leads", "list", "--json", cwd=demo).stdout)
    assert len(listed) == 10
    assert len({lead["email"] for lead in listed}) == 10

    shown = nurture("leads", "show", "Maria.Lopez@BrightPath.io", "--json", cwd=demo)
    lead = json.loads(shown.stdout)
    assert {"email", "stage", "status", "owner", "timezone", "attributes"} <= lead.keys()
    assert lead["timezone"] == "America/Los_Angeles"
    assert lead["attributes"]["employees"] == "120"

    table = nurture("leads", "list", "--stage", "cold", cwd=demo)
    assert "maria.lopez@brightpath.io" in table.stdout and "10 leads" in table.stdout


def test_init_refuses_to_overwrite_a_project(nurture: Run, tmp_path: Path) -> None:
    assert nurture("init", "demo").returncode == 0
    (tmp_path / "demo" / "leads.csv").write_text("email\nmine@example.com\n")
    again = nurture("init", "demo")
    assert again.returncode == 2
    assert_one_line_error(again.stderr, "already holds a project", "nothing was changed")
    assert (tmp_path / "demo" / "leads.csv").read_text() == "email\nmine@example.com\n"


def test_schema_behind_says_how_to_fix_it(nurture: Run, tmp_path: Path) -> None:
    nurture("init", "demo")
    result = nurture("leads", "list", cwd=tmp_path / "demo")
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "no nurture schema yet", "nurture db upgrade")


def test_bad_setting_is_one_line_and_exit_2(nurture: Run, tmp_path: Path) -> None:
    nurture("init", "demo")
    result = nurture(
        "db", "upgrade", cwd=tmp_path / "demo", env={"NURTURE_SMTP_PORT": "not-a-port"}
    )
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "NURTURE_SMTP_PORT")


def test_no_project_is_one_line_and_exit_2(nurture: Run, tmp_path: Path) -> None:
    result = nurture("leads", "list", cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "no nurture.toml", "nurture init")


def test_database_url_from_the_environment(nurture: Run, tmp_path: Path) -> None:
    nurture("init", "demo")
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    result = nurture("db", "upgrade", cwd=tmp_path / "demo", env={"NURTURE_DATABASE_URL": url})
    assert result.returncode == 0
    assert (tmp_path / "elsewhere.db").exists()
    assert not (tmp_path / "demo" / "nurture.db").exists()


@pytest.mark.parametrize(
    ("content", "code", "fragments"),
    [
        (b"", 1, ["bad.csv: the file is empty"]),
        (b"name,company\nAnn,Acme\n", 1, ["bad.csv:1: no email column"]),
        (b"email\nmissing-at-sign\n", 1, ["bad.csv:2: rejected: invalid email"]),
    ],
)
def test_bad_files_get_one_clear_line(
    nurture: Run, tmp_path: Path, content: bytes, code: int, fragments: list[str]
) -> None:
    nurture("init", "demo")
    demo = tmp_path / "demo"
    nurture("db", "upgrade", cwd=demo)
    (demo / "bad.csv").write_bytes(content)
    result = nurture("leads", "import", "bad.csv", cwd=demo)
    assert result.returncode == code
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def test_non_utf8_file_keeps_its_good_rows(nurture: Run, tmp_path: Path) -> None:
    nurture("init", "demo")
    demo = tmp_path / "demo"
    nurture("db", "upgrade", cwd=demo)
    (demo / "latin1.csv").write_bytes(
        "email,first_name\nann@example.com,Ann\njozef@example.pl,Józef\n".encode("latin-1")
    )
    result = nurture("leads", "import", "latin1.csv", cwd=demo)
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "latin1.csv:3: rejected: not valid UTF-8")
    assert "1 created" in result.stdout
    shown = nurture("leads", "show", "ann@example.com", "--json", cwd=demo)
    assert json.loads(shown.stdout)["first_name"] == "Ann"


def test_missing_file_is_one_line(nurture: Run, tmp_path: Path) -> None:
    nurture("init", "demo")
    demo = tmp_path / "demo"
    nurture("db", "upgrade", cwd=demo)
    result = nurture("leads", "import", "nope.csv", cwd=demo)
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "nope.csv: cannot open")


def test_an_export_from_another_tool_dry_run_map_and_rejects(nurture: Run, tmp_path: Path) -> None:
    nurture("init", "demo")
    demo = tmp_path / "demo"
    nurture("db", "upgrade", cwd=demo)
    (demo / "export.csv").write_text(
        "E-mail Address,First Name,Correo personal,Time Zone\n"
        "ann@example.com,Ann,ann@home.example,Paris\n"
        "bob,Bob,,\n",
        encoding="utf-8",
    )
    dry = nurture("leads", "import", "export.csv", "--dry-run", "--rejects", "fix.csv", cwd=demo)
    assert dry.returncode == 1 and "Traceback" not in dry.stderr
    assert "(dry run, nothing written)" in dry.stdout and "1 would be created" in dry.stdout
    assert "export.csv:2: warning: unknown timezone 'Paris' (did you mean 'Europe/Paris'?)" in (
        dry.stderr
    )
    assert "export.csv:3: rejected: invalid email 'bob'" in dry.stderr
    assert "1 rejected rows written to fix.csv" in dry.stdout
    assert (demo / "fix.csv").read_text().splitlines()[1].startswith("bob,Bob,,,line 3: ")
    listed = nurture("leads", "list", "--json", cwd=demo)
    assert json.loads(listed.stdout) == []
    mapped = nurture("leads", "import", "export.csv", "--map", "Correo personal=email", cwd=demo)
    assert "1 created" in mapped.stdout
    shown = json.loads(nurture("leads", "show", "ann@home.example", "--json", cwd=demo).stdout)
    assert shown["first_name"] == "Ann" and shown["attributes"]["e_mail_address"] == (
        "ann@example.com"
    )
    # A near miss of a field is an attribute of that name, with a warning.
    typo = nurture("leads", "import", "export.csv", "--map", "First Name=frist_name",
                   "--dry-run", cwd=demo)  # fmt: skip
    assert typo.returncode == 1 and "Traceback" not in typo.stderr
    assert (
        "warning: --map: 'frist_name' is not a lead field (did you mean 'first_name'?): "
        "the column is kept as the attribute frist_name"
    ) in typo.stderr


def test_files_with_personal_data_are_private_and_secrets_never_printed(
    nurture: Run, tmp_path: Path
) -> None:
    demo = demo_with_leads(nurture, tmp_path)
    assert nurture("--now", "2026-11-16T17:00Z", "tick", cwd=demo).returncode == 0
    private = [demo / "nurture.db", *demo.glob("nurture.db-*"), *(demo / "outbox").rglob("*")]
    assert any(p.is_file() and "outbox" in str(p) for p in private)  # an email was written
    for path in private:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    settings = demo / "nurture.toml"
    text = settings.read_text()
    settings.write_text(text.replace('password = ""', "password = 98765432123", 1))
    assert "password = 98765432123" in settings.read_text()
    bad = nurture("status", cwd=demo)
    assert bad.returncode == 2 and "98765432123" not in bad.stdout + bad.stderr
    assert "[smtp] password" in bad.stderr
    settings.write_text(text)
    url = nurture("status", cwd=demo, env={"NURTURE_DATABASE_URL": "postgresql://u:s3cr3t@"})
    assert "s3cr3t" not in url.stdout + url.stderr


def test_terminal_output_never_carries_control_characters() -> None:
    from nurture.cli import safe_text
    from nurture.logs import _quote

    assert safe_text("Ann\x1b]0;owned\x07\x1b[2J\r") == "Ann?]0;owned??[2J?"
    assert safe_text("two\nlines\tand tabs") == "two\nlines\tand tabs"
    assert _quote("a\rb") == '"a\\rb"' and _quote("x\x1b[2J") == '"x\\x1b[2J"'


def test_lead_fields_written_by_another_tool_reach_the_terminal_without_escapes(
    nurture: Run, tmp_path: Path
) -> None:
    import sqlite3

    demo = demo_with_leads(nurture, tmp_path)
    email = nurture("leads", "list", "--json", cwd=demo)
    address = json.loads(email.stdout)[0]["email"]
    # Import and the API refuse control characters; a script writing the table does not.
    with sqlite3.connect(demo / "nurture.db") as db:
        db.execute(
            "UPDATE leads SET first_name = ?, company = ? WHERE email = ?",
            ("Ann\x1b]0;owned\x07", "Acme\x1b[2J\r", address),
        )
    for args in (("leads", "list"), ("leads", "show", address)):
        shown = nurture(*args, cwd=demo)
        assert shown.returncode == 0, shown.stderr
        assert "Ann?]0;owned?" in shown.stdout and "Acme?[2J?" in shown.stdout
        assert not any(ch in shown.stdout + shown.stderr for ch in "\x1b\x07\r")


def test_the_wal_files_of_an_open_database_are_private(tmp_path: Path) -> None:
    from sqlalchemy import text as sql

    from nurture.store.database import open_engine

    engine = open_engine(f"sqlite:///{tmp_path / 'n.db'}")
    with engine.begin() as connection:  # WAL: the -wal and -shm files exist while open
        connection.execute(sql("CREATE TABLE t (x TEXT)"))
        connection.execute(sql("INSERT INTO t VALUES ('personal data')"))
        files = sorted(p.name for p in tmp_path.iterdir())
        # (and the writers' turn file, empty)
        assert files == ["n.db", "n.db-shm", "n.db-wal", "n.db.writer"]
        for path in tmp_path.iterdir():
            assert path.stat().st_mode & 0o077 == 0, f"{path.name} is readable by others"
    engine.dispose()


def test_leads_forget_erases_and_an_import_cannot_bring_the_address_back(
    nurture: Run, tmp_path: Path
) -> None:
    demo = demo_with_leads(nurture, tmp_path)
    erased = nurture("leads", "forget", "Maria.Lopez@Brightpath.io", cwd=demo)
    assert erased.returncode == 0, erased.stderr
    assert erased.stdout.startswith("erased maria.lopez@brightpath.io") and "suppressed" in (
        erased.stdout
    )
    shown = nurture("leads", "show", "maria.lopez@brightpath.io", cwd=demo)
    assert shown.returncode != 0
    again = nurture("--now", "2026-11-17T17:00Z", "leads", "import", "leads.csv", cwd=demo)
    assert "leads.csv:2: rejected:" in again.stderr and "erased" in again.stderr
    listed = json.loads(nurture("leads", "list", "--json", cwd=demo).stdout)
    assert "maria.lopez@brightpath.io" not in {lead["email"] for lead in listed}
    twice = nurture("leads", "forget", "maria.lopez@brightpath.io", cwd=demo)
    assert "no lead maria.lopez@brightpath.io: the address is suppressed all the same" in (
        twice.stdout
    )


def test_forms_snippet_prints_a_form_to_paste(nurture: Run, tmp_path: Path) -> None:
    nurture("init", "demo")
    demo = tmp_path / "demo"
    shown = nurture("forms", "snippet", "pricing-guide", cwd=demo)
    assert shown.returncode == 0, shown.stderr
    html = shown.stdout
    assert '<form method="post" action="http://localhost:8080/f/pricing-guide"' in html
    assert 'type="email"' in html and "/f/pricing-guide/t" in html  # the fill-time token
    assert "<script" in html and "cdn" not in html.lower()
    unknown = nurture("forms", "snippet", "pricing", cwd=demo)
    assert unknown.returncode == 2
    assert_one_line_error(unknown.stderr, "no form 'pricing' in")


def test_settings_with_secrets_are_written_private_and_a_readable_file_is_named_once(
    nurture: Run, tmp_path: Path
) -> None:
    assert nurture("init", "demo").returncode == 0
    settings = tmp_path / "demo" / "nurture.toml"
    assert settings.stat().st_mode & 0o777 == 0o600
    demo = settings.parent
    assert nurture("db", "upgrade", cwd=demo).returncode == 0
    text = settings.read_text()
    settings.write_text(text.replace('password = ""', 'password = "Hunter2-smtp"', 1))
    settings.chmod(0o644)  # as an editor or a copy may leave it
    ran = nurture("status", cwd=demo)
    assert ran.returncode == 0, ran.stderr
    warned = [line for line in ran.stderr.splitlines() if "other users can read it" in line]
    assert len(warned) == 1, ran.stderr  # once
    assert str(settings) in warned[0] and f"chmod 600 {settings}" in warned[0]
    assert "[smtp] password" in warned[0] and "mode 0644" in warned[0]
    assert "Hunter2" not in ran.stdout + ran.stderr
    settings.chmod(0o600)
    assert "other users" not in nurture("status", cwd=demo).stderr
    # Without secrets in it (they come from NURTURE_* variables), a readable file is fine.
    settings.write_text(text)
    settings.chmod(0o644)
    quiet = nurture("status", cwd=demo, env={"NURTURE_SMTP_PASSWORD": "Hunter2-smtp"})
    assert "other users" not in quiet.stderr
