"""The resume stage: the enrollments an out-of-office paused go on by themselves on the
next business day after their lead is back (:func:`nurture.store.pausing.resume_returned`),
before the advance stage looks at what is due."""

from __future__ import annotations

from datetime import datetime

from nurture import logs
from nurture.engine.context import Context
from nurture.stages.report import PassReport
from nurture.store.database import session_scope
from nurture.store.pausing import resume_returned


def resume_back(ctx: Context, now: datetime) -> PassReport:
    """Resume the enrollments whose lead is back by *now* (due at once, their held
    emails queued again)."""
    with session_scope(ctx.engine) as session:
        leads = resume_returned(session, now)
    if leads:
        logs.action("back from out of office: sequences resumed", leads=len(leads))
    return PassReport(resumed=len(leads))
