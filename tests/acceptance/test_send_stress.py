"""The send pipeline under load, as an operator runs it: ``nurture run --serve`` with
10,000 due enrollments, while 200 visitors post a form, 50 people unsubscribe and 20
are erased, all over HTTP, during the pass. At the SMTP sink (a process of its own):
no Message-ID twice, no mail to anyone after their unsubscribe or erasure returned,
and the sender's daily cap never passed."""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from bench.bench_intake import FORM, WELCOME
from bench.smtp_sink import SinkProcess, read_log
from nurture.mail.compose import unsubscribe_url
from nurture.store.database import open_engine
from tests.acceptance.conftest import Run, bulk_project, worker
from tests.conftest import free_port

DUE = 10_000
POSTS, UNSUBSCRIBES, ERASURES = 200, 50, 20
CAP = 9_900  # below what is due: the cap decides who waits until tomorrow
API_KEY = "stress-test-key-0123456789"


POSTGRESQL = pytest.param("postgresql", marks=pytest.mark.postgresql)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", POSTGRESQL])
def test_under_load_no_double_no_mail_after_an_opt_out_or_erasure_and_the_cap_holds(
    kind: str,
    nurture: Run,
    tmp_path: Path,
    sink: SinkProcess,
    request: pytest.FixtureRequest,
) -> None:
    # Given 10,000 leads due for their email, a welcome for form visitors from the same
    # mailbox, and a daemon that serves HTTP
    port = free_port()
    env = {
        "NURTURE_SMTP_HOST": "127.0.0.1",
        "NURTURE_SMTP_PORT": str(sink.port),
        "NURTURE_SMTP_MAX_CONNECTIONS": "4",
        "NURTURE_SERVER_PORT": str(port),
        "NURTURE_API_KEY": API_KEY,
        "NURTURE_LIMITS_PER_SENDER_DAILY": str(CAP),
        "NURTURE_TRACKING_BASE_URL": f"http://127.0.0.1:{port}",
    }
    if kind == "postgresql":
        env["NURTURE_DATABASE_URL"] = request.getfixturevalue("empty_pg_url")
    project = bulk_project(nurture, tmp_path / "p", DUE, env)
    (project / "sequences" / "web-welcome.yaml").write_text(WELCOME)
    (project / "forms" / "stress.yaml").write_text(FORM)
    url = env.get("NURTURE_DATABASE_URL") or f"sqlite:///{project / 'nurture.db'}"
    engine = open_engine(url)
    with engine.connect() as connection:
        secret = connection.execute(text("SELECT value FROM meta WHERE key = 'signing_secret'"))
        secret_value = str(secret.scalar())
        ids = dict(connection.execute(text("SELECT email, id FROM leads")).all())  # type: ignore[arg-type]
    engine.dispose()
    daemon = worker(project, env, "--serve", log=tmp_path / "daemon.log")
    base = f"http://127.0.0.1:{port}"
    returned: dict[str, float] = {}  # address -> when its opt-out or erasure returned
    posted: list[str] = []
    try:
        _wait(lambda: _up(base), "the server to answer", daemon)
        # When, once the pass has begun sending, the visitors, the opt-outs and the
        # erasures come, interleaved, while it sends
        _wait(lambda: len(read_log(sink.log)) >= 300, "the first sends", daemon)
        rng = random.Random(20261206)
        chosen = rng.sample(sorted(ids), UNSUBSCRIBES + ERASURES)
        unsubscribing, erasing = chosen[:UNSUBSCRIBES], chosen[UNSUBSCRIBES:]
        actions = (
            [("post", f"visitor{i}@web.example.com") for i in range(POSTS)]
            + [("unsubscribe", address) for address in unsubscribing]
            + [("erase", address) for address in erasing]
        )
        rng.shuffle(actions)
        with httpx.Client(timeout=60) as client:
            for action, address in actions:
                if action == "post":
                    answer = client.post(f"{base}/f/stress", data={"email": address,
                                         "first_name": "Vi"}, follow_redirects=False)  # fmt: skip
                    assert answer.status_code == 303, answer.text
                    posted.append(address)
                elif action == "unsubscribe":
                    lead_id = ids[address]
                    link = unsubscribe_url(base, secret_value, lead_id, "blast", "hello", address)
                    answer = client.post(link, data={"List-Unsubscribe": "One-Click"})
                    assert answer.status_code == 200, answer.text
                    returned[address] = time.time()
                else:
                    bearer = {"Authorization": f"Bearer {API_KEY}"}
                    answer = client.delete(f"{base}/api/leads/{address}", headers=bearer)
                    assert answer.status_code == 200, answer.text
                    returned[address] = time.time()
        still_sending = len(read_log(sink.log)) < CAP
        # and the daemon goes on until everything that may go today has gone
        _wait(lambda: len(read_log(sink.log)) >= CAP, "the day's sends", daemon, timeout=900)
        _wait(lambda: _settled(url), "the outbox to settle", daemon, timeout=120)
    finally:
        daemon.terminate()
        daemon.wait(60)
    rows = read_log(sink.log)
    # Then no message reached the server twice
    counts = Counter(message_id for _, _, message_id in rows)
    assert [m for m, n in counts.items() if n > 1] == []
    # no one got mail after their opt-out or erasure returned
    late = [(r, a, returned[r]) for a, r, _ in rows if r in returned and a > returned[r]]
    assert late == []
    # the sender's cap held, the visitors got their welcome where the cap allowed
    assert len(rows) <= CAP
    assert still_sending, "the opt-outs and erasures came after the pass: not a race"
    assert any(r in posted for _, r, _ in rows)


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _settled(url: str) -> bool:
    """Nothing in flight, and nothing left that may go today (the rest waits for the
    cap's next day)."""
    engine = open_engine(url)
    try:
        with engine.connect() as connection:
            busy = connection.execute(text(
                "SELECT count(*) FROM outbox WHERE status IN ('leased', 'sending') "
                "OR (status = 'queued' AND next_attempt_at <= :now)"
            ), {"now": datetime.now(UTC)}).scalar()  # fmt: skip
        return not busy
    finally:
        engine.dispose()


def _wait(done: object, what: str, daemon: object, timeout: float = 300) -> None:
    """Wait for progress (never a fixed time), failing if the daemon died."""
    deadline = time.monotonic() + timeout
    while not done():  # type: ignore[operator]
        assert daemon.poll() is None, f"the daemon stopped while waiting for {what}"  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
