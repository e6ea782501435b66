"""``nurture preview --send-to``: the exact email, as a test, to the marketer's own inbox
through the real mail server; its links work over real HTTP and change nothing."""

from __future__ import annotations

from sqlmodel import select
from typer.testing import CliRunner

from nurture import clock
from nurture.cli import app
from nurture.reports.report import funnel
from nurture.store.database import session_scope
from nurture.store.outbox import MessageKind, OutboxMessage
from tests.integration import test_server
from tests.integration.test_server import Site, links

site = test_server.site


def test_a_test_send_reaches_me_its_links_work_and_nothing_counts(site: Site) -> None:
    runner = CliRunner()
    args = ["--config", str(site.project / "nurture.toml"), "--now", "2026-11-16T17:00Z"]
    result = runner.invoke(
        app,
        [*args, "preview", "tracked", "hello", "--lead", "maria@example.com",
         "--send-to", "Me@Acme.example"],
    )  # fmt: skip
    assert result.exit_code == 0, (result.output, result.exception)
    assert "test sent to me@acme.example" in result.output
    [sent] = site.smtp.handler.messages
    assert sent["To"] == "me@acme.example"
    assert str(sent["Subject"]).startswith("[test] ")
    text = sent.get_body(("plain",)).get_content()
    assert "](" not in text and "[" not in text.replace("[test]", "")  # no Markdown
    found = links(sent)
    # The plain-text part carries the same tracked links.
    assert all(url in text for url in found["clicks"])
    with site.client() as http:
        click = http.get(found["clicks"][0], follow_redirects=False)
        assert click.status_code == 302 and click.headers["location"].startswith("https://")
        page = http.get(found["unsubscribe"])
        assert page.status_code == 200 and "This was a test email" in page.text
        one_click = http.post(found["header"], content=b"List-Unsubscribe=One-Click")
        assert one_click.status_code == 200 and "Nothing was changed" in one_click.text
    assert site.events("email_clicked") == [] and site.events("unsubscribed") == []
    assert site.lead().status == "subscribed"
    with session_scope(site.engine) as session:
        [row] = session.exec(select(OutboxMessage)).all()
        assert (row.kind, row.lead_id, row.status) == (MessageKind.test, None, "sent")
        report = funnel(session, since=None, now=clock.now())
    assert all(step["sent"] == 0 for step in report["steps"])
    assert site.events("email_sent") == []
