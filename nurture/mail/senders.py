"""Which sender a lead's email comes from, and the senders' pacing and health as the
delivery sees them.

:func:`pick_sender` is pure: ``from: owner`` gives the lead's owner's ``[[senders]]``
entry; ``senders: [sam, lee]`` the one the lead got before (so replies thread), else
the one with the most room left that is not paused; else ``fallback_from``, else the
sequence's ``from`` address, else ``[sales] from_address``. :class:`SenderBook` reads
what the pick needs for one batch of enrollments. :func:`sender_paces` turns the
settings into the pacing the start checks (:mod:`nurture.mail.health` watches the senders' health).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlmodel import Session

from nurture import logs
from nurture.config import SenderEntry, Settings
from nurture.config.sections import address_key, sender_key
from nurture.store import senders as store
from nurture.store.sender_health import paused as paused_senders

if TYPE_CHECKING:
    from nurture.language.sequences import Sequence

#: ``from: owner``: each lead's email comes from its owner's sender.
OWNER = "owner"


@dataclass(frozen=True)
class SenderChoice:
    """Who one lead's email comes from, and why."""

    #: The From: ``"Sam Patel <sam@example.com>"``.
    address: str
    #: The ``[[senders]]`` entry's name; ``None``: an address that has none.
    name: str | None
    #: Why this one, in a marketer's words (``simulate`` and ``preview`` show it).
    why: str

    @property
    def email(self) -> str:
        return address_key(self.address)

    def label(self) -> str:
        """``sam (the lead's owner)``: what ``simulate`` and ``preview`` print."""
        return f"{self.name or self.email} ({self.why})"


def pick_sender(
    sequence: Sequence,
    settings: Settings,
    *,
    owner: str | None,
    earlier: str | None = None,
    room: Mapping[str, int | None] | None = None,
    paused: Collection[str] = (),
) -> SenderChoice:
    """The sender of a lead's email in *sequence*: the lead's *owner*'s sender
    (``from: owner``), the rotation's (the one whose address the lead got its *earlier*
    email from, else the one with the most *room* left, by name, of those not *paused*;
    when all are paused, the one with the most room: its emails wait for the resume),
    or the fallback."""
    if sequence.sender == OWNER and owner:
        entry = settings.sender_of(owner)
        if entry is not None:
            return SenderChoice(entry.address, entry.name, "the lead's owner")
    if sequence.senders:
        entries = [e for e in map(settings.sender_named, sequence.senders) if e is not None]
        kept = next((e for e in entries if earlier and e.email == sender_key(earlier)), None)
        if kept is not None:
            return SenderChoice(kept.address, kept.name, "kept from the lead's earlier email")
        if entries:
            left = room or {}
            sending = [e for e in entries if e.name not in paused] or entries
            best = max(sending, key=lambda e: _room(left.get(e.name)))
            return SenderChoice(best.address, best.name, "rotation: the most room left")
    if sequence.fallback_from:
        entry = settings.sender_named(sequence.fallback_from)
        if entry is not None:
            return _by_address(settings, entry.address, "fallback_from")
        if "@" in sequence.fallback_from:  # an address (`nurture check` says the same)
            return _by_address(settings, sequence.fallback_from, "fallback_from")
        _unknown_sender(sequence.name, sequence.fallback_from)  # the next rule's
    if sequence.sender and sequence.sender != OWNER:
        return _by_address(settings, sequence.sender, "from")
    return _by_address(settings, settings.sales.from_address, "the project's default sender")


#: The unknown ``fallback_from`` names already logged (by sequence): each once.
_UNKNOWN_LOGGED: set[tuple[str, str]] = set()


def _unknown_sender(sequence: str, name: str) -> None:
    """Log, once per sequence and name, that ``fallback_from`` names no sender (``nurture
    check`` reports it at its line): the sequence's ``from``, else the default, is used."""
    if (sequence, name) in _UNKNOWN_LOGGED:
        return
    _UNKNOWN_LOGGED.add((sequence, name))
    logs.action("fallback_from names no [[senders]] entry: the next sender is used",
                level=logging.WARNING, sequence=sequence, fallback_from=name)  # fmt: skip


def _room(value: int | None) -> int:
    return 1 << 40 if value is None else value


def _by_address(settings: Settings, address: str, why: str) -> SenderChoice:
    entry = settings.sender_of(address_key(address))
    return SenderChoice(address, entry.name if entry is not None else None, why)


def sender_paces(settings: Settings) -> dict[str, store.SenderPace]:
    """Each ``[[senders]]`` entry's pacing, by its address (a message's envelope sender)."""
    return {entry.email: pace_of(entry, settings) for entry in settings.senders}


def pace_of(entry: SenderEntry, settings: Settings) -> store.SenderPace:
    """What the start checks for *entry*."""
    warmup = entry.warmup
    return store.SenderPace(
        name=entry.name, email=entry.email, daily=entry.daily, hourly=entry.hourly,
        min_gap=entry.min_gap, warmup_start=warmup.start if warmup else None,
        warmup_increase=warmup.increase if warmup else 0,
        max_bounce_rate=settings.limits.max_bounce_rate,
        timezone=settings.project.default_timezone,
    )  # fmt: skip


@dataclass
class SenderBook:
    """What picking senders for one batch of leads reads, read once when first needed:
    the sender each lead got its latest email from, and each sender's room (counted
    down as the batch picks)."""

    session: Session
    settings: Settings
    lead_ids: Iterable[int]
    now: datetime
    _earlier: dict[int, str] | None = None
    _room: dict[str, int | None] | None = None
    _paused: frozenset[str] = frozenset()
    picked: list[SenderChoice] = field(default_factory=list)

    def pick(self, sequence: Sequence, lead_id: int, owner: str | None) -> SenderChoice:
        """The sender of *lead_id*'s email in *sequence* (see :func:`pick_sender`)."""
        if not sequence.senders:
            return pick_sender(sequence, self.settings, owner=owner)
        if self._earlier is None:
            self._earlier = store.sent_by_leads(self.session, list(self.lead_ids))
        if self._room is None:
            connection = self.session.connection()
            self._room = {
                pace.name: store.room(connection, pace, self.now)
                for pace in sender_paces(self.settings).values()
            }
            self._paused = frozenset(paused_senders(connection))
        choice = pick_sender(sequence, self.settings, owner=owner,
                             earlier=self._earlier.get(lead_id), room=self._room,
                             paused=self._paused)  # fmt: skip
        if choice.name is not None and self._room.get(choice.name) is not None:
            self._room[choice.name] = max(0, (self._room[choice.name] or 0) - 1)
        return choice
