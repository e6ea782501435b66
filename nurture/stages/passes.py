"""The pass: its stages in order, for the daemon (:func:`full_pass`), for new leads
(:func:`serve_arrivals`) and for ``nurture tick`` (:func:`tick`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import func
from sqlmodel import col, select

from nurture import clock, logs
from nurture.config import RepliesSection, Settings
from nurture.engine.catalog import Catalog
from nurture.engine.context import Context
from nurture.language.scoring import ScoringRules
from nurture.language.sequences import Sequence
from nurture.mail.delivery import deliver
from nurture.mail.pacing import DeliveryReport, SendingPause
from nurture.mail.replies import MailboxError, PollReport, poll
from nurture.mail.transports import open_transport
from nurture.mail.webhooks import deliver_webhooks
from nurture.stages.advance import advance_due
from nurture.stages.enroll import enroll_matching, enroll_stage
from nurture.stages.handoff import hand_off, hand_off_now
from nurture.stages.reload import Reloader
from nurture.stages.report import PassReport
from nurture.stages.resume import resume_back
from nurture.stages.score import score, score_arrived
from nurture.store.arrivals import drain
from nurture.store.database import session_scope
from nurture.store.enrollments import Enrollment, EnrollmentStatus
from nurture.store.locks import exclusive
from nurture.store.outbox import (
    MessageKind,
    OutboxMessage,
    OutboxStatus,
)


def full_pass(
    ctx: Context,
    reload: Reloader,
    now: datetime,
    stop: Callable[[], bool] | None = None,
    loaded: Callable[[Catalog], None] | None = None,
    between: Callable[[], bool] | None = None,
    queued: Callable[[int], None] | None = None,
) -> tuple[Catalog, PassReport]:
    """One pass at *now*, as one line of stages::

        reload → score → enroll → resume → advance → hand-off

    Reloading and scoring are one worker's at a time (:func:`nurture.store.locks.exclusive`);
    the due enrollments are shared between the workers. *loaded* is told the catalog as
    soon as it is loaded; *stop* is asked between batches, and *between* (by default
    *stop*) between the enrollments of a batch not written yet; *queued* is told what each
    full batch of the advance queued (:func:`~nurture.stages.advance.advance_due`). The
    emails the pass queues are sent by the deliver stage
    (:func:`nurture.mail.delivery.deliver`), which the daemon runs beside it."""
    report = PassReport()
    with exclusive(ctx.engine, "pass"):
        catalog = reload(now)
        if loaded is not None:
            loaded(catalog)
        rules = reload.scoring()
        report.add(score(ctx, rules, now))
    report.add(enroll_stage(ctx, catalog, rules, now))
    report.add(resume_back(ctx, now))
    report.add(advance_due(ctx, catalog, now, stop, rules=rules, between=between, queued=queued))
    report.add(hand_off(ctx, rules, now))
    return catalog, report


def reload_stage(ctx: Context, reload: Reloader, now: datetime) -> Catalog:
    """The reload stage alone, under the pass's lock: the daemon's own view of the files
    (and what is wrong with them, logged once), when the rest of the pass runs in a
    process of its own (:class:`nurture.stages.process.PassProcess`)."""
    with exclusive(ctx.engine, "pass"):
        catalog = reload(now)
        reload.scoring()
    return catalog


def run_pass(
    ctx: Context,
    catalog: Catalog,
    now: datetime,
    stop: Callable[[], bool] | None = None,
    *,
    rules: ScoringRules | None = None,
) -> PassReport:
    """The enroll and advance stages at *now* (emails are queued here;
    :mod:`nurture.mail.delivery` sends). *stop* is asked between batches: when it says
    so, the pass ends early."""
    report = enroll_stage(ctx, catalog, rules, now)
    report.add(advance_due(ctx, catalog, now, stop, rules=rules))
    return report


def serve_arrivals(
    ctx: Context,
    catalog: Catalog,
    lead_ids: list[int],
    now: datetime,
    *,
    rules: ScoringRules | None = None,
) -> PassReport:
    """Speed to lead: enroll the leads that just arrived in the sequences whose audience
    they match, and carry their due enrollments forward, touching nothing else (a long
    pass may be going on beside it). Their new events are scored first: a lead they
    make hot is handed off now, after its sequences have moved (the notice tells their
    state)."""
    report = PassReport()
    with exclusive(ctx.engine, "pass"):
        report.add(score_arrived(ctx, rules, lead_ids, now))
    for sequence in catalog.sequences.values():
        if sequence.audience is None:
            continue
        enrolled = enroll_matching(ctx.engine, sequence, sequence.audience, now,
                                   lead_ids=lead_ids, rules=rules)  # fmt: skip
        report.enrolled += enrolled.enrolled
    report.add(advance_due(ctx, catalog, now, lead_ids=lead_ids, rules=rules))
    if report.hot:
        hand_off_now(ctx, rules, now)
    return report


def has_work_due(ctx: Context, catalog: Catalog, now: datetime) -> bool:
    """Whether an enrollment or a message is due by *now*."""
    with session_scope(ctx.engine) as session:
        enrollments = session.exec(
            select(func.count())
            .select_from(Enrollment)
            .where(col(Enrollment.status) == EnrollmentStatus.active.value)
            .where(col(Enrollment.due_at) <= now)
            .where(col(Enrollment.sequence).in_(list(catalog.sequences)))
        ).one()
        back = session.exec(  # out of office until now: the pass resumes them
            select(func.count())
            .select_from(Enrollment)
            .where(col(Enrollment.status) == EnrollmentStatus.paused.value)
            .where(col(Enrollment.resume_at) <= now)
        ).one()
        messages = session.exec(
            select(func.count())
            .select_from(OutboxMessage)
            .where(
                col(OutboxMessage.status).in_(
                    [
                        OutboxStatus.queued.value,
                        OutboxStatus.leased.value,
                        OutboxStatus.sending.value,
                    ]
                )
            )
            .where(col(OutboxMessage.next_attempt_at) <= now)
        ).one()
    return bool(enrollments or messages or back)


def reply_mailboxes(settings: Settings) -> list[tuple[str, RepliesSection]]:
    """Every mailbox replies arrive in, by the name logs give it: ``[replies]`` (when it
    names a host), then each ``[[senders]]`` entry's own (``[[senders]] sam replies``).
    A mailbox named twice (one host, port, user and folder) is listed once, first name
    first: a sender without a ``replies`` table reads ``[replies]``, already listed."""
    found: dict[tuple[str, int, str, str], tuple[str, RepliesSection]] = {}
    named = [("[replies]", settings.replies if settings.replies.host else None)]
    named += [(f"[[senders]] {e.name} replies", e.replies_settings(settings.replies))
              for e in settings.senders]  # fmt: skip
    for label, mailbox in named:
        if mailbox is None:
            continue
        key = (mailbox.host.lower(), mailbox.port, mailbox.username, mailbox.mailbox)
        found.setdefault(key, (label, mailbox))
    return list(found.values())


def poll_replies(ctx: Context) -> PollReport | None:
    """Read every reply mailbox (:func:`reply_mailboxes`); ``None`` when there is none.
    A mailbox that fails is logged by its name, and the others are still read; the
    report adds up what was found in all of them."""
    settings = ctx.config.settings
    mailboxes = reply_mailboxes(settings)
    if not mailboxes:
        return None
    total = PollReport()
    for label, mailbox in mailboxes:
        try:
            report = poll(
                ctx.engine,
                mailbox,
                secret=ctx.secret,
                unsubscribe_mailto=settings.tracking.unsubscribe_mailto,
                now=clock.now(),
                default_timezone=ctx.default_timezone,
            )
        except MailboxError as exc:
            # The error says "[replies] host:port: ..."; *label* says which mailbox.
            error = str(exc).removeprefix("[replies] ")
            logs.action("reply mailbox unreadable", level=logging.ERROR, mailbox=label,
                        error=error)  # fmt: skip
            continue
        if any(vars(report).values()):
            logs.action("reply mailbox read", mailbox=label, **vars(report))
        for counter, value in vars(report).items():
            setattr(total, counter, getattr(total, counter) + value)
    return total


async def tick(
    ctx: Context, now: datetime, pause: SendingPause | None = None
) -> tuple[Catalog, PassReport, DeliveryReport]:
    """One full pass at *now* and the deliveries it makes due (``nurture tick``): the reply
    mailbox is read first, so a reply stops its sequence in this very pass. *pause*
    carries a refusal of the mail server from one tick to the next."""
    await asyncio.to_thread(poll_replies, ctx)
    while await asyncio.to_thread(drain, ctx.engine):
        pass  # the leads that arrived are changed leads: this pass enrolls them
    reload = Reloader(ctx)
    catalog, report = await asyncio.to_thread(full_pass, ctx, reload, now)
    transport = open_transport(ctx.config.settings.smtp, ctx.config.outbox_dir,
                               ctx.config.settings.senders)
    try:
        delivered = await deliver(ctx, catalog, transport, rules=reload.rules, pause=pause)
    finally:
        await transport.close()
    await deliver_webhooks(ctx)
    return catalog, report, delivered


def first_email_due(
    ctx: Context, sequences: dict[str, Sequence], now: datetime, look: int = 500
) -> datetime | None:
    """When the first email is due after *now*: the soonest queued email, or the soonest
    active enrollment whose next step (by *sequences*) is an email (of the *look*
    soonest); ``None`` when no email is in sight."""
    with session_scope(ctx.engine) as session:
        queued = session.exec(
            select(func.min(OutboxMessage.next_attempt_at))
            .where(col(OutboxMessage.status) == OutboxStatus.queued.value)
            .where(col(OutboxMessage.kind) == MessageKind.email.value)
        ).one()
        waiting = session.exec(
            select(Enrollment.sequence, Enrollment.next_step, Enrollment.due_at)
            .where(col(Enrollment.status) == EnrollmentStatus.active.value)
            .where(col(Enrollment.due_at).is_not(None))
            .order_by(col(Enrollment.due_at))
            .limit(look)
        ).all()
    moments = [queued] if queued is not None else []
    for name, step_id, due in waiting:
        sequence = sequences.get(name)
        step = sequence.step(step_id) if sequence is not None and step_id else None
        if step is not None and step.kind == "email" and due is not None:
            moments.append(due)
            break
    return max(min(moments), now) if moments else None
