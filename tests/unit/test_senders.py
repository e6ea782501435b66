"""The senders' pure parts: the pick, the warm-up, the gap, the Feedback-ID."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nurture.config import Settings
from nurture.language.sequences import EmailAction, Sequence, Step
from nurture.mail.compose import feedback_id
from nurture.mail.senders import pick_sender
from nurture.store.senders import SenderPace, jittered_gap, warmup_level

NOW = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
SETTINGS = Settings(
    senders=[
        {"name": "sam", "address": "Sam Patel <sam@example.com>", "daily": 300},
        {"name": "lee", "address": "Lee Chen <Lee@Example.com>", "min_gap": "20 seconds"},
    ],  # type: ignore[list-item]
)


def sequence(**values: object) -> Sequence:
    step = Step("welcome", EmailAction((("welcome", 1),)), 1)
    return Sequence(name="welcome", path=Path("welcome.yaml"), steps=(step,), **values)  # type: ignore[arg-type]


def test_from_owner_takes_the_owner_s_sender_else_the_fallback() -> None:
    owned = sequence(sender="owner", fallback_from="Team <team@example.com>")
    assert pick_sender(owned, SETTINGS, owner="lee@example.com").address == (
        "Lee Chen <Lee@Example.com>"
    )
    for owner in (None, "ana@example.com"):
        choice = pick_sender(owned, SETTINGS, owner=owner)
        assert (choice.address, choice.name, choice.why) == (
            "Team <team@example.com>", None, "fallback_from")
    named = sequence(sender="owner", fallback_from="sam")
    assert pick_sender(named, SETTINGS, owner=None).name == "sam"


def test_a_rotation_keeps_the_earlier_sender_else_takes_the_most_room() -> None:
    rotation = sequence(senders=("sam", "lee"))
    assert pick_sender(rotation, SETTINGS, owner=None, room={"sam": 5, "lee": 9}).name == "lee"
    assert pick_sender(rotation, SETTINGS, owner=None, room={"sam": 5, "lee": 5}).name == "sam"
    kept = pick_sender(rotation, SETTINGS, owner=None, earlier="sam@example.com",
                       room={"sam": 0, "lee": 9})  # fmt: skip
    assert kept.name == "sam" and kept.why == "kept from the lead's earlier email"


def test_a_rotation_skips_a_paused_sender_for_a_new_lead_and_keeps_it_for_its_own() -> None:
    rotation = sequence(senders=("sam", "lee"))
    room = {"sam": 90, "lee": 1}
    assert pick_sender(rotation, SETTINGS, owner=None, room=room, paused={"sam"}).name == "lee"
    # Every one paused: the most room still (its email is held until the resume)
    both = pick_sender(rotation, SETTINGS, owner=None, room=room, paused={"sam", "lee"})
    assert both.name == "sam"
    kept = pick_sender(rotation, SETTINGS, owner=None, earlier="sam@example.com",
                       room=room, paused={"sam"})  # fmt: skip
    assert kept.name == "sam"


def test_a_sender_s_own_server_or_mailbox_never_gets_the_default_login() -> None:
    settings = Settings(
        smtp={"host": "smtp.company.test", "username": "company", "password": "s3cret",
              "port": 2525},
        replies={"host": "imap.company.test", "username": "company", "password": "s3cret"},
        senders=[
            {"name": "own", "address": "own@example.com",
             "smtp": {"host": "smtp.own.test"}, "replies": {"host": "imap.own.test"}},
            {"name": "half", "address": "half@example.com",
             "smtp": {"host": "smtp.own.test", "username": "half"},
             "replies": {"host": "imap.own.test", "password": "p"}},
            {"name": "login", "address": "login@example.com",
             "replies": {"username": "login", "password": "p"}},
            {"name": "plain", "address": "plain@example.com"},
        ],
    )  # type: ignore[arg-type]
    own, half, login, plain = settings.senders
    smtp = own.smtp_settings(settings.smtp)
    assert (smtp.host, smtp.username, smtp.password, smtp.port) == ("smtp.own.test", "", "", 2525)
    replies = own.replies_settings(settings.replies)
    assert replies is not None
    assert (replies.host, replies.username, replies.password) == ("imap.own.test", "", "")
    smtp = half.smtp_settings(settings.smtp)
    assert (smtp.username, smtp.password) == ("half", "")
    replies = half.replies_settings(settings.replies)
    assert replies is not None and (replies.username, replies.password) == ("", "p")
    # Without a host of its own: its login on the default server, or the default's
    replies = login.replies_settings(settings.replies)
    assert replies is not None
    assert (replies.host, replies.username) == ("imap.company.test", "login")
    assert plain.smtp_settings(settings.smtp) is settings.smtp


def test_the_warm_up_grows_a_day_at_a_time_up_to_daily() -> None:
    pace = SenderPace("sam", "sam@example.com", daily=50, warmup_start=20, warmup_increase=10)
    assert warmup_level(pace, None, NOW) == 20
    assert warmup_level(pace, NOW - timedelta(hours=23), NOW) == 20
    assert warmup_level(pace, NOW - timedelta(days=2, hours=1), NOW) == 40
    assert warmup_level(pace, NOW - timedelta(days=3), NOW) is None  # 50: warmed up


def test_the_gap_is_min_gap_and_up_to_half_more() -> None:
    pace = SenderPace("sam", "sam@example.com", min_gap=20)
    assert jittered_gap(pace, 0.0) == timedelta(seconds=20)
    assert jittered_gap(pace, 0.999) < timedelta(seconds=30)
    assert SETTINGS.senders[1].min_gap == 20.0


@pytest.mark.parametrize(
    ("step", "sequence_name", "sender", "expected"),
    [
        ("welcome", "pricing-guide", "sam", "welcome:pricing-guide:sam:nurture"),
        ("a:b", "x\r\nBcc: evil@example.com", "lee@example.com",
         "a-b:x-Bcc-evil@example.com:lee@example.com:nurture"),
        ("", "é", "::", "-:-:-:nurture"),
    ],
)
def test_feedback_id_fields_never_split_nor_add_a_header(
    step: str, sequence_name: str, sender: str, expected: str
) -> None:
    value = feedback_id(step, sequence_name, sender)
    assert value == expected
    assert value.count(":") == 3 and "\n" not in value and " " not in value
