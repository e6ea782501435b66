"""``exit_when: [account_replied]`` with a real IMAP mailbox (dovecot on loopback): a
reply from one lead of an account (its company, else its email's domain unless free
mail) ends the sequence for the others, names who replied, and the start's last check
sends them nothing once the reply is recorded."""

from __future__ import annotations

import threading
from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import inspect, text
from sqlmodel import select

from nurture import hooks
from nurture.engine.context import Context
from nurture.intake.erasure import erase
from nurture.sales.dossier import gather
from nurture.stages.passes import poll_replies
from nurture.store.accounts import tell_colleagues
from nurture.store.database import session_scope
from nurture.store.enrollments import Enrollment
from nurture.store.events import Event
from nurture.store.leads import Lead, LeadChanges, upsert_leads
from nurture.store.outbox import OutboxMessage, Queued
from tests.integration import test_replies
from tests.integration.test_replies import START, Inbox
from tests.integration.test_send_promises import _once

inbox = test_replies.inbox

ABM = """\
name: abm
audience: "lead.source == 'abm'"
from: "Sam Lee <sam@example.com>"
exit_when: [account_replied, replied]
steps:
  - id: hello
    email: welcome
  - id: later
    wait: 2 days
    email: case-study
"""
STOPPED = "abm: stopped: Ana Ruiz at BrightPath replied"


def _accounts(inbox: Inbox) -> None:
    (inbox.config.sequences_dir / "abm.yaml").write_text(ABM)
    people = [
        ("ana@brightpath.io", "Ana", "Ruiz", "BrightPath"),
        ("leo@brightpath-eu.com", "Leo", "Berg", "brightpath"),  # one company, another domain
        ("zoe@brightpath.io", "Zoe", "Kim", "Northwind"),  # one domain, another company
        ("tom@acme.com", "Tom", "Ng", None),
        ("una@acme.com", "Una", "Ode", None),  # the account of acme.com: its domain
        ("ivy@gmail.com", "Ivy", "Poe", None),
        ("max@gmail.com", "Max", "Roe", None),  # free mail: no account in common
    ]
    with session_scope(inbox.engine) as session:
        upsert_leads(session, [
            LeadChanges(email, {"first_name": first, "last_name": last, "company": company,
                                "source": "abm"})
            for email, first, last, company in people
        ])  # fmt: skip


def _reply(inbox: Inbox, sender: str, to: str) -> None:
    [original] = [m for m in inbox.sent() if to in str(m["To"])][:1]
    reply = EmailMessage()
    reply["From"] = sender
    reply["To"] = str(original["Reply-To"] or original["From"])
    reply["Subject"] = "Re: " + str(original["Subject"])
    reply["Message-ID"] = make_msgid(domain="example.net")
    reply["In-Reply-To"] = str(original["Message-ID"])
    reply.set_content("Yes, let us talk on Thursday.")
    inbox.imap.append(reply.as_bytes())


def _enrollments(inbox: Inbox) -> dict[str, Enrollment]:
    with session_scope(inbox.engine) as session:
        rows = session.exec(select(Lead.email, Enrollment)
                            .join(Enrollment, Enrollment.lead_id == Lead.id)
                            .where(Enrollment.sequence == "abm"))  # fmt: skip
        return {email: enrollment for email, enrollment in rows}


def test_a_reply_from_one_of_an_account_stops_the_others(inbox: Inbox) -> None:
    _accounts(inbox)
    inbox.tick(START)
    assert len(inbox.sent()) == 8  # María and the seven
    # Given Ana of BrightPath and Tom of acme.com answer the first email
    _reply(inbox, "Ana Ruiz <ana@brightpath.io>", "ana@brightpath.io")
    _reply(inbox, "Tom Ng <tom@acme.com>", "tom@acme.com")
    _reply(inbox, "Ivy Poe <ivy@gmail.com>", "ivy@gmail.com")
    # When the pass reads the mailbox
    inbox.tick(START + timedelta(hours=1))
    # Then their colleagues' sequences stop, saying who replied; the others go on
    states = {email: (e.status, e.reason) for email, e in _enrollments(inbox).items()}
    assert states["ana@brightpath.io"] == ("exited", "replied")
    assert states["leo@brightpath-eu.com"] == ("exited", "Ana Ruiz at BrightPath replied")
    assert states["una@acme.com"] == ("exited", "Tom Ng at acme.com replied")
    assert states["zoe@brightpath.io"][0] == "active"
    assert states["max@gmail.com"][0] == "active"
    # And the app's lead page says so
    with session_scope(inbox.engine) as session:
        leo = session.exec(select(Lead).where(Lead.email == "leo@brightpath-eu.com")).one()
        lines = gather(session, leo, None, START + timedelta(hours=2)).sequences(ZoneInfo("UTC"))
    assert lines == [STOPPED]
    # When the next emails fall due, only those still in the sequence get one
    inbox.tick(START + timedelta(days=2, hours=1))
    later = {str(m["To"]).rpartition("<")[2].rstrip(">") for m in inbox.sent()[8:]}
    assert later == {"zoe@brightpath.io", "max@gmail.com", "maria@example.com"}


def test_the_start_sends_nothing_to_a_colleague_once_the_reply_is_recorded(
    inbox: Inbox,
) -> None:
    _accounts(inbox)
    inbox.tick(START)
    ctx = Context.open(inbox.engine, inbox.config)

    # Given the delivery has read its batch (Leo's second email among it), when Ana's
    # reply arrives and is recorded at that moment
    def reply_now(*_: Any) -> None:
        _reply(inbox, "Ana Ruiz <ana@brightpath.io>", "ana@brightpath.io")
        thread = threading.Thread(target=poll_replies, args=(ctx,))
        thread.start()
        thread.join(60)

    def when_leo_is_in_the_batch(session: Any, rows: list[Queued]) -> None:
        if any(row.recipient == "leo@brightpath-eu.com" for row in rows):
            reply_now()

    with hooks.at("claim.after_read", _once(when_leo_is_in_the_batch)):
        inbox.tick(START + timedelta(days=2, hours=1))
    # Then Leo's email never goes: the start finds the reply and it is cancelled
    assert not any("leo@" in str(m["To"]) for m in inbox.sent()[8:])
    with session_scope(inbox.engine) as session:
        [leo_later] = session.exec(select(OutboxMessage)
                                   .where(OutboxMessage.recipient == "leo@brightpath-eu.com")
                                   .where(OutboxMessage.step == "later"))  # fmt: skip
    assert leo_later.status == "cancelled"
    assert "Ana Ruiz at BrightPath replied" in (leo_later.last_error or "")
    # And once Ana is erased, the reason it was cancelled for names her no more
    erase(inbox.engine, "ana@brightpath.io")
    assert _rows_naming(inbox.engine, "Ana Ruiz at", "ana@brightpath.io") == []
    with session_scope(inbox.engine) as session:
        leo_later = session.get_one(OutboxMessage, leo_later.id)
    assert "a colleague at BrightPath replied" in (leo_later.last_error or "")


def _rows_naming(engine: Any, *words: str, tables: tuple[str, ...] = ()) -> list[str]:
    """Every row of every table (or of *tables*) whose text holds one of *words*
    (``table: row``)."""
    found = []
    with engine.connect() as connection:
        for table in tables or inspect(engine).get_table_names():
            if table == "alembic_version":
                continue
            for row in connection.execute(text(f'SELECT * FROM "{table}"')):
                said = " ".join(str(value) for value in row)
                if any(word.lower() in said.lower() for word in words):
                    found.append(f"{table}: {said[:200]}")
    return found


def test_an_erasure_leaves_the_replier_s_name_nowhere(inbox: Inbox) -> None:
    _accounts(inbox)
    inbox.tick(START)
    _reply(inbox, "Ana Ruiz <ana@brightpath.io>", "ana@brightpath.io")
    inbox.tick(START + timedelta(hours=1))
    assert _enrollments(inbox)["leo@brightpath-eu.com"].reason == "Ana Ruiz at BrightPath replied"
    # When Ana is erased
    erased = erase(inbox.engine, "ana@brightpath.io")
    # Then no row anywhere names her
    # (the nudge sequence's sender is another Ana Ruiz, at example.com)
    assert _rows_naming(inbox.engine, "Ana Ruiz at", "ana@brightpath.io") == []
    assert _rows_naming(inbox.engine, "Ana Ruiz", tables=("events", "enrollments")) == []
    assert erased.removed["colleagues_told"] == 1
    # And Leo's record still says a colleague of BrightPath replied
    leo = _enrollments(inbox)["leo@brightpath-eu.com"]
    assert (leo.status, leo.reason) == ("exited", "a colleague at BrightPath replied")
    with session_scope(inbox.engine) as session:
        lead = session.exec(select(Lead).where(Lead.email == "leo@brightpath-eu.com")).one()
        [told] = session.exec(select(Event).where(Event.lead_id == lead.id)
                              .where(Event.type == "account_replied"))  # fmt: skip
        assert told.data == {"name": "a colleague", "account": "BrightPath"}
        lines = gather(session, lead, None, START + timedelta(hours=2)).sequences(ZoneInfo("UTC"))
    assert lines == ["abm: stopped: a colleague at BrightPath replied"]


def test_colleagues_are_told_in_one_insert(inbox: Inbox) -> None:
    # Given an account with many leads in a sequence
    (inbox.config.sequences_dir / "abm.yaml").write_text(ABM)
    with session_scope(inbox.engine) as session:
        upsert_leads(session, [LeadChanges(f"p{i}@bigcorp.com", {"source": "abm"})
                               for i in range(40)])  # fmt: skip
    inbox.tick(START)
    with session_scope(inbox.engine) as session:
        replier = session.exec(select(Lead).where(Lead.email == "p0@bigcorp.com")).one()
    inserts: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO EVENTS"):
            inserts.append(statement)

    # When one of them replies, then the 39 others are told by one INSERT
    sqlalchemy_event.listen(inbox.engine, "before_cursor_execute", count)
    try:
        with session_scope(inbox.engine) as session:
            told = tell_colleagues(session, replier.id or 0, source_id="<r1@bigcorp.com>",
                                   now=START + timedelta(hours=1))  # fmt: skip
    finally:
        sqlalchemy_event.remove(inbox.engine, "before_cursor_execute", count)
    assert len(told) == 39 and len(inserts) == 1
    # And once only, however often the reply is read
    with session_scope(inbox.engine) as session:
        assert tell_colleagues(session, replier.id or 0, source_id="<r1@bigcorp.com>",
                               now=START + timedelta(hours=2)) == []  # fmt: skip
        assert len(session.exec(select(Event).where(Event.type == "account_replied")).all()) == 39
