"""The hand-off stage: the leads that turned hot are handed to sales (the notice tells
the sequences' state after this pass), and due reminders and digests go out."""

import threading
from datetime import datetime

from nurture.engine.context import Context
from nurture.language.scoring import ScoringRules
from nurture.sales.digest import send_digests
from nurture.sales.notice import hand_off_hot_leads, send_reminders
from nurture.stages.report import PassReport
from nurture.store.locks import exclusive

#: The hand-off in this process is one thread's at a time (the pass, the fast lane);
#: between workers, the ``sales`` lock.
SALES = threading.Lock()


def hand_off_now(ctx: Context, rules: ScoringRules | None, now: datetime) -> int:
    """The fast lane's hand-off: the leads just turned hot, nothing else."""
    with exclusive(ctx.engine, "sales"), SALES:
        return hand_off_hot_leads(ctx, rules, now)


def hand_off(ctx: Context, rules: ScoringRules | None, now: datetime) -> PassReport:
    """Hand off the hot leads, send due reminders and digests: one worker at a time."""
    report = PassReport()
    with exclusive(ctx.engine, "sales"), SALES:
        hand_off_hot_leads(ctx, rules, now)
        report.reminders = send_reminders(ctx, now, rules)
        send_digests(ctx, now)
    return report
