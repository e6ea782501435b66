"""The lead's page in the sales app says why the lead's emails wait (a paused sender,
a sender's cap), from the reason the outbox keeps."""

from __future__ import annotations

from datetime import timedelta
from email.message import EmailMessage

from nurture import clock
from nurture.store.database import session_scope
from nurture.store.outbox import MessageKind, queue_message
from tests.salesdesk import MARIA, SAM, Desk, sales_desk

__all__ = ["sales_desk"]


def test_the_lead_page_shows_why_the_lead_s_emails_wait(sales_desk: Desk) -> None:
    desk = sales_desk
    lead_id = desk.lead().id
    now = clock.now()
    with session_scope(desk.engine) as session:
        # Given one of María's emails held for its paused sender, and one deferred by a cap
        for key, status, reason in [
            ("a", "held", "held: sender sam paused: 7 hard bounces in the last 100"),
            ("b", "queued", "sender sam: hourly cap 60 reached, next at 14:05"),
        ]:
            message = EmailMessage()
            message["Message-ID"] = f"<{key}@example.com>"
            row = queue_message(session, message, kind=MessageKind.email, key=f"test:{key}",
                                lead_id=lead_id, sequence="welcome", step=key,
                                sender="sam@example.com", recipient=MARIA, timezone="UTC",
                                now=now)  # fmt: skip
            row.status, row.last_error = status, reason
            row.next_attempt_at = now + timedelta(hours=1)
    # When her owner opens her page, then it says why they wait
    with desk.client() as browser:
        desk.sign_in(browser, SAM)
        page = browser.get(f"/app/leads/{lead_id}")
    assert page.status_code == 200
    assert "Emails waiting" in page.text
    assert "held: sender sam paused: 7 hard bounces in the last 100" in page.text
    assert "sender sam: hourly cap 60 reached, next at 14:05" in page.text
