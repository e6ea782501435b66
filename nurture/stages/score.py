"""The score stage: new events earn points and changed leads get their fit; when
``scoring.yaml`` changed, every lead is scored again."""

import hashlib
import threading
from datetime import datetime

from nurture import logs
from nurture.engine.context import Context
from nurture.language.scoring import ScoringRules
from nurture.sales.scorer import rescore, score_leads, score_pass
from nurture.stages.report import PassReport
from nurture.store.database import session_scope
from nurture.store.meta import Meta

SCORING_DIGEST_KEY = "scoring_digest"
#: Scoring in this process is one thread's at a time: the pass's score stage and the fast
#: lane (between workers, the ``pass`` lock of :mod:`nurture.store.locks` does it).
SCORING = threading.Lock()


def rules_changed(ctx: Context) -> bool:
    """Whether ``scoring.yaml`` differs from the version the scores were computed with
    (remembering this version; the first time there is nothing to redo)."""
    try:
        digest = hashlib.sha256(ctx.config.scoring_file.read_bytes()).hexdigest()
    except OSError:
        return False
    with session_scope(ctx.engine) as session:
        mark = session.get(Meta, SCORING_DIGEST_KEY)
        if mark is not None and mark.value == digest:
            return False
        session.merge(Meta(key=SCORING_DIGEST_KEY, value=digest))
    return mark is not None


def score(ctx: Context, rules: ScoringRules | None, now: datetime) -> PassReport:
    """Score what happened since the last pass (every lead again if ``scoring.yaml``
    changed); nothing when the rules cannot be read."""
    report = PassReport()
    if rules is None:
        return report
    with SCORING:
        return _score(ctx, rules, now, report)


def score_arrived(ctx: Context, rules: ScoringRules | None, lead_ids: list[int],
                  now: datetime) -> PassReport:  # fmt: skip
    """The fast lane's scoring: the new events of *lead_ids* (a click, a reply, a form,
    a meeting booked through the API), so that a lead they make hot is handed off in
    seconds, not at the next pass. The caller holds the ``pass`` lock."""
    report = PassReport()
    if rules is None:
        return report
    with SCORING:
        scored = score_leads(ctx, rules, lead_ids, now)
    report.stage_changes, report.hot = scored.stage_changes, scored.hot
    return report


def _score(ctx: Context, rules: ScoringRules, now: datetime, report: PassReport) -> PassReport:
    if rules_changed(ctx):  # every lead again, new events included
        scored = rescore(ctx, rules, now)
        logs.action(
            "scoring.yaml changed: every lead rescored",
            leads=scored.leads,
            stage_changes=scored.stage_changes,
            hot=scored.hot,
        )
    else:
        scored = score_pass(ctx, rules, now)
    report.stage_changes, report.hot = scored.stage_changes, scored.hot
    return report
