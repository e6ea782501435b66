"""Out-of-office answers in a real IMAP mailbox (dovecot on loopback), in German and
Spanish: not a reply, an ``out_of_office`` event with the return date read from the
text, the lead's sequence paused (no email while away) and resumed by the pass on the
next business day after the return, in the lead's timezone (the real command line with
``--now``)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
from sqlmodel import select

from nurture.config import load_settings
from nurture.mail.absence import out_of_office, return_date
from nurture.store.database import session_scope
from nurture.store.outbox import OutboxMessage
from nurture.store.pausing import set_paused
from tests.integration import test_replies
from tests.integration.test_replies import START, Inbox

inbox = test_replies.inbox
MARIA_TZ = "America/New_York"  # the project's default timezone: hers


def nurture_tick(inbox: Inbox, moment: datetime) -> str:
    """``nurture --now MOMENT tick``, the real command line in its own process."""
    done = subprocess.run(
        [sys.executable, "-m", "nurture", "--config", str(inbox.config.config_file), "tick",
         "--now", moment.isoformat()],
        env=dict(os.environ), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def leads_show(inbox: Inbox, moment: datetime) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "nurture", "--config", str(inbox.config.config_file),
         "--now", moment.isoformat(), "leads", "show", "maria@example.com"],
        env=dict(os.environ), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def away_answer(inbox: Inbox, original: EmailMessage, subject: str, body: str,
                **headers: str) -> None:  # fmt: skip
    reply = EmailMessage()
    reply["From"] = "María López <maria@example.com>"
    reply["To"] = str(original["Reply-To"] or original["From"])
    reply["Subject"] = subject
    reply["Message-ID"] = f"<{abs(hash((subject, body)))}@example.com>"
    reply["In-Reply-To"] = str(original["Message-ID"])
    for name, value in headers.items():
        reply[name.replace("_", "-")] = value
    reply.set_content(body + "\n\n> Hello María,\n> here is the guide you asked for.\n")
    inbox.imap.append(reply.as_bytes())


def test_a_german_out_of_office_pauses_the_lead_until_the_day_after_she_is_back(
    inbox: Inbox,
) -> None:
    inbox.tick(START)  # Monday 23 November
    [hello] = inbox.sent()
    # Given María answers automatically, in German, that she is back on Wednesday 2 December
    away_answer(inbox, hello, "Abwesenheitsnotiz: " + str(hello["Subject"]),
                "Vielen Dank für Ihre Nachricht. Ich bin bis zum 2. Dezember nicht im Büro "
                "und habe keinen Zugriff auf meine E-Mails.",
                Auto_Submitted="auto-replied")  # fmt: skip
    # When the pass reads the mailbox
    inbox.tick(START + timedelta(hours=1))
    # Then it is no reply: an out_of_office with her return date, no points
    assert inbox.events("email_replied") == []
    [away] = inbox.events("out_of_office")
    assert away.data["until"] == "2026-12-02" and away.data["until_read"] is True
    assert not away.points
    # And her sequence is paused until Thursday 3 December, 00:00 in New York
    enrollment = inbox.enrollment()
    assert (enrollment.status, enrollment.reason) == ("paused", "out of office until 2 December")
    assert enrollment.resume_at == datetime(2026, 12, 3, 5, 0, tzinfo=UTC)
    assert "out of office until 2 December" in leads_show(inbox, START + timedelta(hours=2))
    # When its next email falls due while she is away, it does not go
    inbox.tick(START + timedelta(days=2, hours=1))
    assert len(inbox.sent()) == 1
    nurture_tick(inbox, datetime(2026, 12, 3, 4, 59, tzinfo=UTC))
    assert len(inbox.sent()) == 1 and inbox.enrollment().status == "paused"
    # Then the pass on the next business day after her return resumes it, and it goes
    nurture_tick(inbox, datetime(2026, 12, 3, 5, 1, tzinfo=UTC))
    assert inbox.enrollment().status in ("active", "completed")
    assert inbox.enrollment().resume_at is None
    assert len(inbox.sent()) == 2
    assert "out of office" not in leads_show(inbox, datetime(2026, 12, 3, 6, 0, tzinfo=UTC))


def test_a_spanish_out_of_office_told_by_its_subject_waits_over_the_weekend(
    inbox: Inbox,
) -> None:
    inbox.tick(START)
    [hello] = inbox.sent()
    # Given a Spanish automatic answer, told only by its subject, back on Friday 4 December
    away_answer(inbox, hello, "Respuesta automática: " + str(hello["Subject"]),
                "Estaré fuera de la oficina hasta el 4 de diciembre. Para asuntos urgentes, "
                "escriba a info@example.com.")  # fmt: skip
    inbox.tick(START + timedelta(hours=1))
    [away] = inbox.events("out_of_office")
    assert away.data["until"] == "2026-12-04"
    # Then her enrollment waits for Monday 7 December (the weekend is no business day)
    enrollment = inbox.enrollment()
    assert enrollment.reason == "out of office until 4 December"
    assert enrollment.resume_at == datetime(2026, 12, 7, 5, 0, tzinfo=UTC)
    inbox.tick(datetime(2026, 12, 6, 12, 0, tzinfo=UTC))
    assert inbox.enrollment().status == "paused" and len(inbox.sent()) == 1
    inbox.tick(datetime(2026, 12, 7, 5, 30, tzinfo=UTC))
    assert len(inbox.sent()) == 2


def test_an_answer_with_no_date_keeps_the_lead_away_seven_days(inbox: Inbox) -> None:
    inbox.tick(START)
    [hello] = inbox.sent()
    # Given an automatic answer told by its headers only, that names no day
    away_answer(inbox, hello, "Re: " + str(hello["Subject"]), "I am travelling.",
                X_Autoreply="yes")  # fmt: skip
    inbox.tick(START + timedelta(hours=1))
    [away] = inbox.events("out_of_office")
    # Then she is away 7 days (Monday 30 November), back on Tuesday 1 December
    assert (away.data["until"], away.data["until_read"]) == ("2026-11-30", False)
    assert inbox.enrollment().resume_at == datetime(2026, 12, 1, 5, 0, tzinfo=UTC)
    assert inbox.enrollment().reason == "out of office until 30 November"


def test_a_pause_by_hand_while_away_is_not_undone_when_she_is_back(inbox: Inbox) -> None:
    inbox.tick(START)
    [hello] = inbox.sent()
    away_answer(inbox, hello, "Out of office: " + str(hello["Subject"]), "Back on 25 November.")
    inbox.tick(START + timedelta(hours=1))
    assert inbox.enrollment().status == "paused"
    # Given a person pauses her sequence while she is away
    with session_scope(inbox.engine) as session:
        assert set_paused(session, "nudge", "maria@example.com", pause=True,
                          now=START + timedelta(hours=2)) == 1  # fmt: skip
    # Then her return does not resume it
    inbox.tick(START + timedelta(days=5))
    assert (inbox.enrollment().status, inbox.enrollment().reason) == ("paused", "paused by hand")
    assert len(inbox.sent()) == 1
    with session_scope(inbox.engine) as session:
        assert session.exec(select(OutboxMessage)).all()[0].status == "sent"


def test_out_of_office_subjects_and_dates_in_eight_languages() -> None:
    today = datetime(2027, 3, 3).date()
    for subject, text in [
        ("Out of Office: Re: your guide", "I am out of the office until March 12."),
        ("Abwesenheitsnotiz", "Ich bin bis zum 12. März nicht im Büro."),
        ("Réponse automatique : votre guide", "Je serai absent jusqu'au 12 mars."),
        ("Respuesta automática", "Estaré fuera de la oficina hasta el 12 de marzo."),
        ("Risposta automatica", "Sarò fuori ufficio fino al 12 marzo."),
        ("Resposta automática", "Estarei ausente até 12 de março."),
        ("Automatisch antwoord", "Ik ben afwezig tot 12 maart."),
        ("Odpowiedź automatyczna", "Jestem poza biurem do 12 marca."),
    ]:
        message = EmailMessage()
        message["Subject"] = subject
        assert out_of_office(message), subject
        assert return_date(text, today) == datetime(2027, 3, 12).date(), text
    message = EmailMessage()
    message["Subject"] = "Re: your absence policy question"
    assert out_of_office(message) is None
    assert return_date("Thanks, talk soon.", today) is None


def test_a_real_reply_while_away_is_not_undone_by_the_return(inbox: Inbox) -> None:
    inbox.tick(START)
    [hello] = inbox.sent()
    away_answer(inbox, hello, "Out of office: " + str(hello["Subject"]), "Back on 30 November.")
    inbox.tick(START + timedelta(hours=1))
    assert inbox.enrollment().status == "paused"
    # Given she writes back herself while her answer said she is away
    inbox.answer(hello, body="Actually I saw your email, call me.")
    inbox.tick(START + timedelta(hours=2))
    # Then she is back: her sequence ends on her reply (exit_when: [replied]) at once,
    # and nothing resumes it
    assert (inbox.enrollment().status, inbox.enrollment().reason) == ("exited", "replied")
    inbox.tick(datetime(2026, 12, 2, 12, 0, tzinfo=UTC))
    assert inbox.enrollment().status == "exited" and len(inbox.sent()) == 1
    assert "out of office" not in leads_show(inbox, START + timedelta(hours=3))


def test_an_unproven_reply_while_away_stops_what_the_absence_paused(inbox: Inbox) -> None:
    inbox.tick(START)
    [hello] = inbox.sent()
    away_answer(inbox, hello, "Out of office: " + str(hello["Subject"]), "Back on 30 November.")
    inbox.tick(START + timedelta(hours=1))
    # Given a reply from her address that cites nothing we sent and nobody authenticated
    reply = EmailMessage()
    reply["From"] = "María López <maria@example.com>"
    reply["To"] = "ana@example.com"
    reply["Subject"] = "Stop"
    reply["Message-ID"] = "<unproven-1@example.com>"
    reply.set_content("Please stop writing to me.")
    inbox.imap.append(reply.as_bytes())
    inbox.tick(START + timedelta(hours=2))
    # Then the paused sequence ends as an active one would, and her return resumes nothing
    enrollment = inbox.enrollment()
    assert (enrollment.status, enrollment.reason) == (
        "exited", "replied (sender not authenticated)"
    )  # fmt: skip
    inbox.tick(datetime(2026, 12, 2, 12, 0, tzinfo=UTC))
    assert len(inbox.sent()) == 1


def forged_away(inbox: Inbox, body: str, *results: str) -> None:
    """An out-of-office from María's address that cites nothing we sent (anyone can
    write it), with the receiving server's *results* on top."""
    answer = EmailMessage()
    for value in results:
        answer["Authentication-Results"] = value
    answer["From"] = "María López <maria@example.com>"
    answer["To"] = "ana@example.com"
    answer["Subject"] = "Out of office"
    answer["Message-ID"] = f"<{abs(hash((body, results)))}@example.com>"
    answer.set_content(body)
    inbox.imap.append(answer.as_bytes())


def test_an_out_of_office_without_proof_pauses_nothing(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NURTURE_REPLIES_AUTHSERV_ID", "mx.ours.example")
    inbox.config = load_settings(inbox.config.config_file)
    inbox.tick(START)
    # Given an out-of-office from her address citing nothing of ours, not authenticated
    forged_away(inbox, "I am away until 20 December.")
    inbox.tick(START + timedelta(hours=1))
    # Then it is recorded as a machine event, and her sequence goes on
    [away] = inbox.events("out_of_office")
    assert away.machine and "until" not in away.data
    enrollment = inbox.enrollment()
    assert (enrollment.status, enrollment.resume_at) == ("active", None)
    assert "out of office" not in leads_show(inbox, START + timedelta(hours=2))
    inbox.tick(START + timedelta(days=2, hours=1))
    assert len(inbox.sent()) == 2
    # When the receiving server authenticated her domain, then it pauses her
    forged_away(inbox, "I am away until 10 December.",
                "mx.ours.example; dmarc=pass header.from=example.com")  # fmt: skip
    inbox.tick(START + timedelta(days=2, hours=2))
    assert (inbox.enrollment().status, inbox.enrollment().reason) == (
        "paused", "out of office until 10 December"
    )  # fmt: skip


def test_an_answer_with_no_date_never_shortens_an_absence(inbox: Inbox) -> None:
    inbox.tick(START)
    [hello] = inbox.sent()
    away_answer(inbox, hello, "Out of office: " + str(hello["Subject"]), "Back on 10 December.")
    inbox.tick(START + timedelta(hours=1))
    resume_at = datetime(2026, 12, 11, 5, 0, tzinfo=UTC)
    assert inbox.enrollment().resume_at == resume_at
    # Given a second automatic answer that names no day (7 days: 30 November)
    away_answer(inbox, hello, "Automatic reply", "I am travelling.", X_Autoreply="yes")
    inbox.tick(START + timedelta(hours=2))
    # Then she still waits until her named return
    enrollment = inbox.enrollment()
    assert (enrollment.resume_at, enrollment.reason) == (resume_at,
                                                         "out of office until 10 December")
    inbox.tick(datetime(2026, 12, 2, 12, 0, tzinfo=UTC))
    assert inbox.enrollment().status == "paused" and len(inbox.sent()) == 1


def test_a_return_date_already_come_pauses_nothing(inbox: Inbox) -> None:
    inbox.tick(START)  # Monday 23 November
    [hello] = inbox.sent()
    # Given an answer that she is back today (its text, not next year's 23 November)
    away_answer(inbox, hello, "Out of office: " + str(hello["Subject"]),
                "I am back on 23 November.")  # fmt: skip
    inbox.tick(START + timedelta(hours=1))
    [away] = inbox.events("out_of_office")
    assert (away.data["until"], away.data["back_now"]) == ("2026-11-23", True)
    assert inbox.enrollment().status == "active"
    inbox.tick(START + timedelta(days=2, hours=1))
    assert len(inbox.sent()) == 2


def test_resuming_a_whole_sequence_leaves_an_absence_paused(inbox: Inbox) -> None:
    inbox.tick(START)
    [hello] = inbox.sent()
    away_answer(inbox, hello, "Out of office: " + str(hello["Subject"]), "Back on 10 December.")
    inbox.tick(START + timedelta(hours=1))
    # Given the operator resumes the sequence (`nurture enrollments resume nudge`)
    with session_scope(inbox.engine) as session:
        assert set_paused(session, "nudge", None, pause=False,
                          now=START + timedelta(hours=2)) == 0  # fmt: skip
    # Then María, away, gets nothing when her next email falls due
    inbox.tick(START + timedelta(days=2, hours=1))
    assert len(inbox.sent()) == 1 and inbox.enrollment().status == "paused"
    # While resuming her by hand ends her absence's pause
    with session_scope(inbox.engine) as session:
        assert set_paused(session, "nudge", "maria@example.com", pause=False,
                          now=START + timedelta(days=2, hours=2)) == 1  # fmt: skip
    inbox.tick(START + timedelta(days=2, hours=3))
    assert len(inbox.sent()) == 2
