"""Claiming a batch of the outbox for sending, in one transaction, under a claim token
of its own (:mod:`nurture.store.sending`): every message is checked first. A lead who
opted out or left the sequence since is not emailed (the message is cancelled); the
sending window and the daily caps hold a message back (it waits, it is not dropped).

The claim's checks save work; they are not the promise. The promise is the start's
check (:func:`nurture.store.sending.start`), made again in the transaction that hands
each message to the server, with the caps counted atomically there (:func:`caps_for`).
"""

from __future__ import annotations

import secrets
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from nurture import hooks, logs
from nurture.config import LimitsSection
from nurture.config.sections import sender_key
from nurture.engine.advance import leaves_because
from nurture.engine.catalog import Catalog
from nurture.engine.context import Context
from nurture.language.accounts import company_domain
from nurture.language.expressions import LeadView
from nurture.language.fields import ContactStatus
from nurture.language.scoring import ScoringRules, scores_now
from nurture.language.sequences import Sequence
from nurture.language.timing import local_day, next_allowed, zone
from nurture.mail.health import watch_health
from nurture.mail.pacing import DeliveryReport
from nurture.mail.senders import sender_paces
from nurture.store.advancing import DueLead, leads_by_id
from nurture.store.bulk import unindexed
from nurture.store.counters import Cap, SendCount, SendCountMember, member_key
from nurture.store.database import session_scope
from nurture.store.enrollments import EnrollmentStatus, Standing, standings
from nurture.store.events import Event, EventFact, LeadEvents, events_by_lead
from nurture.store.outbox import (
    MessageKind,
    OutboxMessage,
    OutboxStatus,
    Queued,
    read_due,
    sweep_held,
)
from nurture.store.sender_health import hold_for_sender, release_unpaused
from nurture.store.senders import PaceView, Refusal, SenderPace, read_pace, verdict
from nurture.store.sending import Claimed, PaceCheck, cancel, defer, hold, lease


def caps_for(
    item: Claimed, now: datetime, limits: LimitsSection, default_timezone: str
) -> list[Cap | PaceCheck]:
    """The caps a send of *item* counts against, in the order they are checked: its
    ``[[senders]]`` entry's pacing (paused, ``min_gap``, ``hourly``, warm-up, ``daily``:
    :func:`~nurture.store.senders.take_pace`), its sender mailbox's day (in the
    project's timezone), its lead's own day and its recipient domain's day (different
    leads). Only a sequence's email is capped."""
    if item.kind != MessageKind.email or item.lead_id is None:
        return []
    return [*_pacing(item), *_daily_caps(item, now, limits, default_timezone)]


def _pacing(item: Claimed) -> list[PaceCheck]:
    """The sender's pacing, when it has a ``[[senders]]`` entry."""
    return [] if item.pace is None else [PaceCheck(item.pace, item.id)]


def _daily_caps(
    item: Claimed, now: datetime, limits: LimitsSection, default_timezone: str
) -> list[Cap]:
    assert item.lead_id is not None
    sender_day = local_day(now, default_timezone)
    lead_today = local_day(now, item.lead_timezone or default_timezone)
    return [
        Cap(sender_counter(item.sender, sender_day.iso), sender_day.iso,
            limits.per_sender_daily, sender_day.ends,
            f"{item.sender} reached its cap of {limits.per_sender_daily} emails today"),
        Cap(f"lead:{item.lead_id}:{lead_today.iso}", lead_today.iso, limits.per_lead_daily,
            lead_today.ends, f"lead reached its cap of {limits.per_lead_daily} emails today"),
        *_domain_caps(item, now, limits, default_timezone),
    ]  # fmt: skip


def _domain_caps(
    item: Claimed, now: datetime, limits: LimitsSection, default_timezone: str
) -> list[Cap]:
    """``[limits] per_domain_daily``: the different leads of the recipient's domain
    emailed today (the project's day), each counted once; free-mail domains are not."""
    domain = company_domain(item.recipient)
    if limits.per_domain_daily is None or domain is None or item.lead_id is None:
        return []
    today = local_day(now, default_timezone)
    key = domain_counter(domain, today.iso)
    reason = domain_reason(domain, limits.per_domain_daily, default_timezone)
    return [Cap(member_key(str(item.lead_id), key), today.iso, limits.per_domain_daily,
                today.ends, reason)]  # fmt: skip


def sender_counter(sender: str, day: str) -> str:
    """The counter of the emails *sender* (a mailbox) started on *day*."""
    return f"sender:{sender}:{day}"


def domain_counter(domain: str, day: str) -> str:
    """The counter of the different leads of *domain* emailed on *day*."""
    return f"domain:{domain}:{day}"


def domain_reason(domain: str, cap: int, timezone: str) -> str:
    """Why an email to *domain* waits: ``domain example.com: 20 leads emailed today,
    next at 00:00 (Europe/Warsaw)``."""
    return f"domain {domain}: {cap} leads emailed today, next at 00:00 ({timezone})"


class _Caps:
    """Emails sent today per sender mailbox and per lead, read in two queries per batch
    and counted on as the batch is claimed: a message over a cap is not leased at all."""

    def __init__(
        self,
        session: Session,
        ctx: Context,
        rows: list[Queued],
        leads: dict[int, DueLead],
        now: datetime,
    ) -> None:
        self.now = now
        self.limits = ctx.config.settings.limits
        self.default_tz = ctx.default_timezone
        #: The project's day: the one the sender and domain caps count.
        self.day = local_day(now, self.default_tz)
        self.leads = leads
        # Sent, or being sent by any worker right now (counted as sent now), and
        # uncertain (it may have gone: counted at the moment it was tried).
        in_flight = [OutboxStatus.leased.value, OutboxStatus.sending.value]
        uncertain = OutboxStatus.uncertain.value
        counted = (
            sa_select(
                col(OutboxMessage.sender),
                col(OutboxMessage.lead_id),
                col(OutboxMessage.sent_at),
                col(OutboxMessage.status),
                col(OutboxMessage.next_attempt_at),
            )
            .where(col(OutboxMessage.kind) == MessageKind.email.value)
            # Found by lead (ix_outbox_lead_sent), not by walking every email ever sent.
            .where(unindexed(col(OutboxMessage.status)).in_(
                [OutboxStatus.sent.value, uncertain, *in_flight]))
        )  # fmt: skip

        def since(moment: datetime) -> Any:
            return or_(
                col(OutboxMessage.sent_at) >= moment,
                col(OutboxMessage.status).in_(in_flight),
                and_(
                    col(OutboxMessage.status) == uncertain,
                    col(OutboxMessage.next_attempt_at) >= moment,
                ),
            )

        self.senders = self._read_senders(session, rows)
        # A lead's day is its own: read two days back, count from its midnight.
        self.lead_sends: defaultdict[int, list[datetime]] = defaultdict(list)
        for _, lead_id, sent_at, status, tried_at in session.execute(
            counted.where(col(OutboxMessage.lead_id).in_(_lead_ids(rows))).where(
                since(now - timedelta(days=2))
            )
        ):
            if lead_id is not None:
                moment = sent_at or (tried_at if status == uncertain else now)
                self.lead_sends[lead_id].append(moment)
        self.claimed: Counter[int] = Counter()
        self._read_domains(session, rows)

    def _read_senders(self, session: Session, rows: list[Queued]) -> Counter[str]:
        """The emails of each sender of the batch started today (its counter, as the
        start counts them: sending, sent, uncertain), and those leased by any worker
        and not started yet (counted as sent now). Two reads of rows that stay few,
        however many emails the day has sent."""
        day = self.day.iso
        senders = {row.sender for row in rows}
        keys = {sender_counter(sender, day): sender for sender in senders}
        found: Counter[str] = Counter()
        for key, n in session.exec(
            select(SendCount.key, SendCount.n).where(col(SendCount.key).in_(keys))
        ):
            found[keys[key]] += n
        for sender, n in session.execute(
            sa_select(col(OutboxMessage.sender), func.count())
            .where(col(OutboxMessage.status) == OutboxStatus.leased.value)
            .where(col(OutboxMessage.kind) == MessageKind.email.value)
            .where(col(OutboxMessage.sender).in_(senders))
            .group_by(col(OutboxMessage.sender))
        ):
            found[sender] += n
        return found

    def _read_domains(self, session: Session, rows: list[Queued]) -> None:
        """The leads of each recipient domain of the batch emailed today, from the
        counters the starts took (two reads, only with ``per_domain_daily`` set)."""
        self.domains: Counter[str] = Counter()
        self.members: set[tuple[str, str]] = set()
        if self.limits.per_domain_daily is None:
            return
        keys = {domain_counter(domain, self.day.iso) for domain in
                filter(None, (company_domain(r.recipient) for r in rows))}  # fmt: skip
        if not keys:
            return
        for key, n in session.exec(
            select(SendCount.key, SendCount.n).where(col(SendCount.key).in_(keys))
        ):
            self.domains[key] = n
        self.members = {
            (key, member)
            for key, member in session.exec(
                select(SendCountMember.key, SendCountMember.member)
                .where(col(SendCountMember.key).in_(keys))
                .where(col(SendCountMember.member).in_({str(i) for i in _lead_ids(rows)}))
            )
        }

    def _domain_hold(self, row: Queued) -> tuple[datetime, str] | None:
        cap = self.limits.per_domain_daily
        domain = company_domain(row.recipient)
        if cap is None or domain is None:
            return None
        key = domain_counter(domain, self.day.iso)
        if (key, str(row.lead_id)) in self.members or self.domains[key] < cap:
            return None
        return (self.day.ends,
                domain_reason(domain, cap, self.default_tz))  # fmt: skip

    def hold(self, row: Queued) -> tuple[datetime, str] | None:
        """When *row* may go instead of now, and why; ``None`` if it may go now."""
        held = self._domain_hold(row)
        if held is not None:
            return held
        if self.senders[row.sender] >= self.limits.per_sender_daily:
            return (
                self.day.ends,
                f"{row.sender} reached its cap of {self.limits.per_sender_daily} emails today",
            )
        assert row.lead_id is not None  # only a lead's email is capped
        lead = self.leads[row.lead_id]
        lead_today = local_day(self.now, lead.timezone or self.default_tz)
        today = sum(1 for moment in self.lead_sends[row.lead_id] if moment >= lead_today.begins)
        if today + self.claimed[row.lead_id] >= self.limits.per_lead_daily:
            return (
                lead_today.ends,
                f"lead reached its cap of {self.limits.per_lead_daily} emails today",
            )
        self.senders[row.sender] += 1
        self.claimed[row.lead_id] += 1
        domain = company_domain(row.recipient) if self.limits.per_domain_daily else None
        if domain is not None:  # counted as emailed today for the rest of the batch
            key = domain_counter(domain, self.day.iso)
            if (key, str(row.lead_id)) not in self.members:
                self.members.add((key, str(row.lead_id)))
                self.domains[key] += 1
        return None


class _Pacing:
    """The ``[[senders]]`` pacing of a batch's senders, read once per batch (without
    the start's lock: these checks save work, the start keeps the promise) and counted
    on as the batch is claimed: a message its sender's pacing holds back waits, saying
    why, and the sender's later messages wait a gap more each."""

    def __init__(self, session: Session, paces: dict[str, SenderPace],
                 rows: list[Queued], now: datetime) -> None:  # fmt: skip
        self.paces, self.now = paces, now
        connection = session.connection()
        self.views: dict[str, PaceView] = {
            sender: read_pace(connection, paces[sender], now)
            for sender in {sender_key(r.sender) for r in rows if r.kind == MessageKind.email}
            if sender in paces
        }
        self.pending: Counter[str] = Counter()
        self.behind: Counter[str] = Counter()

    def refused(self, row: Queued) -> Refusal | None:
        """Why *row*'s sender may not send it now (``None``: it may, and is counted)."""
        sender = sender_key(row.sender)
        pace = self.paces.get(sender)
        if pace is None:
            return None
        refused = verdict(pace, self.views[sender], self.now, self.pending[sender],
                          self.behind[sender])  # fmt: skip
        if refused is None:
            self.pending[sender] += 1
        elif refused.check == "min_gap":  # the next one waits a gap more
            self.behind[sender] += 1
        return refused

    def pace_of(self, row: Queued) -> SenderPace | None:
        """The pacing of *row*'s sender (``None``: not a ``[[senders]]`` entry)."""
        return self.paces.get(sender_key(row.sender))

    def uncount(self, row: Queued) -> None:
        """*row* was counted, then held back by another check: it is not sent now."""
        if sender_key(row.sender) in self.paces:
            self.pending[sender_key(row.sender)] -= 1


def _lead_ids(rows: list[Queued]) -> set[int]:
    return {r.lead_id for r in rows if r.lead_id is not None}


def _leads_read(catalog: Catalog, rows: list[Queued]) -> set[int]:
    """The leads whose events the checks of *rows* read: those of the emails whose
    sequence's ``exit_when`` asks what the lead did."""
    reading = {
        name
        for name in {r.sequence for r in rows if r.kind == MessageKind.email}
        if (sequence := catalog.for_delivery(name)) is not None and sequence.leaving_reads_events()
    }
    return {r.lead_id for r in rows if r.lead_id is not None and r.sequence in reading}


@dataclass
class Batch:
    """What one claim leased, and how many due messages it looked at (a batch whose
    messages all waited or were cancelled leases nothing, yet more may be due)."""

    claimed: list[Claimed]
    looked_at: int


def claim(
    ctx: Context,
    catalog: Catalog,
    now: datetime,
    report: DeliveryReport,
    only_leads: list[int] | None = None,
    only_messages: list[int] | None = None,
    rules: ScoringRules | None = None,
) -> Batch:
    """Lease the next batch of messages that may go now (to *only_leads*, or
    *only_messages*, if given) under a new claim token; hold back or cancel the
    others."""
    token = secrets.token_hex(8)
    claimed: list[Claimed] = []
    lease_until = now + timedelta(seconds=ctx.config.settings.delivery.lease)
    with session_scope(ctx.engine) as session:
        rows = read_due(session, now, ctx.batch_size, only_leads, only_messages)
        if not rows:
            return Batch([], 0)
        # Read before the events: an event newer than this makes the start look again.
        seen_event = int(session.exec(select(func.max(Event.id))).one() or 0)
        leads = leads_by_id(session, _lead_ids(rows))
        enrollments = standings(
            session, (r.enrollment_id for r in rows if r.enrollment_id is not None)
        )
        events = events_by_lead(session, _leads_read(catalog, rows))
        caps = _Caps(session, ctx, rows, leads, now)
        pacing = _Pacing(session, sender_paces(ctx.config.settings), rows, now)
        hooks.reach("claim.after_read", session, rows)
        leasable: list[tuple[Queued, DueLead | None]] = []
        windows: dict[tuple[str, str], tuple[datetime, str] | None] = {}
        for row in rows:
            assert row.id is not None
            lead = leads.get(row.lead_id) if row.lead_id is not None else None
            if row.kind == MessageKind.email and lead is not None:
                enrollment = enrollments.get(row.enrollment_id or -1)
                sequence = catalog.for_delivery(row.sequence)
                why_not = _cancelled_because(rules, lead, enrollment, sequence,
                                             events.get(lead.id, []), now)  # fmt: skip
                if (
                    why_not is None
                    and enrollment is not None
                    and (enrollment.status == EnrollmentStatus.paused)
                ):  # paused after this one was queued: it waits for the resume
                    if hold(session, row.id):
                        report.deferred += 1
                    continue
                if why_not:
                    if cancel(session, row.id, why_not, now):
                        report.cancelled += 1
                        logs.action("email cancelled", lead=row.recipient,
                                    sequence=row.sequence, step=row.step,
                                    reason=why_not)  # fmt: skip
                    continue
                refused = pacing.refused(row)
                pace = pacing.pace_of(row)
                if refused is not None and refused.held and pace is not None:
                    # it waits for the resume (if still paused: a resume may have come)
                    if hold_for_sender(session, row.id, refused.reason, pace.name):
                        report.deferred += 1
                    continue
                place = (row.sequence, row.timezone)  # the same for the batch's many
                if place not in windows:
                    windows[place] = _window_hold(catalog, row, now)
                wait = windows[place]
                if wait is None and refused is not None:
                    wait = refused.until, refused.reason
                if wait is None:
                    wait = caps.hold(row)
                if wait is not None:
                    if refused is None:  # counted by the pacing, yet it waits
                        pacing.uncount(row)
                    if defer(session, row.id, *wait):
                        report.deferred += 1
                        logs.action("email deferred", lead=row.recipient, sequence=row.sequence,
                                    step=row.step, until=wait[0].isoformat(),
                                    reason=wait[1])  # fmt: skip
                    continue
            leasable.append((row, lead))
        leased = lease(session, [row.id or 0 for row, _ in leasable], token=token,
                       worker=ctx.worker_id, until=lease_until)  # fmt: skip
        for row, lead in leasable:
            if row.id not in leased:
                continue  # another claim took it first
            claimed.append(
                Claimed(
                    row.id, row.idempotency_key, row.kind, row.raw, row.sender, row.recipient,
                    row.lead_id, row.sequence, row.step, row.message_id,
                    row.enrollment_id if row.kind == MessageKind.email else None,
                    token=token,
                    lead_timezone=lead.timezone if lead is not None else None,
                    seen_event=seen_event,
                    pace=pacing.pace_of(row) if row.kind == MessageKind.email else None,
                )
            )  # fmt: skip
    return Batch(claimed, len(rows))


def sweep_held_mail(ctx: Context, now: datetime) -> None:
    """Held emails whose enrollment is no longer paused: released, or cancelled; held
    emails of a sender no longer paused: released. Then the senders' health: an
    unhealthy one is paused, and its pause told, once."""
    with session_scope(ctx.engine) as session:
        sweep_held(session, now)
        release_unpaused(session, now)
    if ctx.config.settings.senders:
        with session_scope(ctx.engine) as session:
            watch_health(session, ctx.config.settings, now)


def _cancelled_because(
    rules: ScoringRules | None,
    lead: DueLead,
    enrollment: Standing | None,
    sequence: Sequence | None,
    events: list[EventFact],
    now: datetime,
) -> str | None:
    """Why an email queued earlier must not go now: the lead opted out, left the
    sequence, or did something since that ends it (a reply is seen before the pass)."""
    if lead.status != ContactStatus.subscribed:
        return f"lead is {lead.status}"
    if enrollment is not None and enrollment.status == EnrollmentStatus.exited:
        return f"lead left the sequence: {enrollment.reason}"
    if sequence is not None and sequence.exit_when:
        since = enrollment.enrolled_at if enrollment is not None else None
        engagement = LeadEvents.of(events, sequence.name, since=since)
        view = LeadView.of(lead).as_dict()
        reason = leaves_because(sequence, view, engagement, now, scores_now(rules, lead, now))
        if reason:
            return f"lead left the sequence: {reason}"
    return None


def _window_hold(catalog: Catalog, row: Queued, now: datetime) -> tuple[datetime, str] | None:
    sequence = catalog.for_delivery(row.sequence)
    if sequence is None:
        return None
    placement = next_allowed(now, sequence.schedule.window, zone(row.timezone))
    if placement.moment <= now:
        return None
    return placement.moment, f"outside the sending window: {placement.moved_because}"
