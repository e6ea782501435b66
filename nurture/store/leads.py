"""Leads: the table of the people we hold details for, and the queries the rest of
nurture makes about them.

Functions take an open :class:`~sqlmodel.Session`; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Engine, String, and_, insert, or_, update
from sqlalchemy import select as sa_select
from sqlmodel import Field, Session, SQLModel, col, select

from nurture import clock, hooks
from nurture.errors import LeadNotFoundError
from nurture.language.fields import (
    MAX_LENGTHS,
    SETTABLE_FIELDS,
    ContactStatus,
    Stage,
    merge_status,
    normalize_email,
)
from nurture.store.database import session_scope
from nurture.store.sqltypes import JSONType, UTCDateTime


class Lead(SQLModel, table=True):
    """A person whose details we hold and who showed some interest."""

    __tablename__ = "leads"
    #: Ids are never reused (SQLite would reuse the last one after an erasure).
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: int | None = Field(default=None, primary_key=True)
    #: Normalised and lower-cased, so that it compares case-insensitively.
    email: str = Field(max_length=MAX_LENGTHS["email"], unique=True, index=True)
    first_name: str | None = Field(default=None, max_length=MAX_LENGTHS["first_name"])
    last_name: str | None = Field(default=None, max_length=MAX_LENGTHS["last_name"])
    company: str | None = Field(default=None, max_length=MAX_LENGTHS["company"])
    title: str | None = Field(default=None, max_length=MAX_LENGTHS["title"])
    phone: str | None = Field(default=None, max_length=MAX_LENGTHS["phone"])
    #: IANA timezone name; ``None`` means the project's default timezone.
    timezone: str | None = Field(default=None, max_length=MAX_LENGTHS["timezone"])
    #: The salesperson who owns the lead (an email address).
    owner: str | None = Field(default=None, max_length=MAX_LENGTHS["owner"], index=True)
    source: str | None = Field(default=None, max_length=MAX_LENGTHS["source"], index=True)
    stage: str = Field(default=Stage.cold.value, sa_type=String(16), index=True)
    status: str = Field(default=ContactStatus.subscribed.value, sa_type=String(16))
    #: The last consent given (a form's, or an API item's): what was agreed to (text,
    #: version), when, where (form, API key) and from which IP.
    consent: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONType, nullable=True))
    #: Every other column of the import, as ``lead.NAME`` in expressions.
    attributes: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONType, nullable=False)
    )
    created_at: datetime = Field(default_factory=clock.now, sa_type=UTCDateTime)
    #: Indexed: each pass looks at the leads changed since the one before.
    updated_at: datetime = Field(default_factory=clock.now, sa_type=UTCDateTime, index=True)
    #: Engagement score as of ``scored_at`` (it decays from there), and fit score.
    engagement: float = 0.0
    fit: float = 0.0
    scored_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: Events before this moment no longer count (the lead was recycled).
    score_reset_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: The stage the scores gave at the last review; a crossing is a change of it.
    score_stage: str = Field(default="cold", sa_type=String(16))
    #: When decay may next move the lead down a stage: the pass looks again then.
    stage_review_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)

    @property
    def full_name(self) -> str:
        """First and last name, or empty when neither is known."""
        return " ".join(part for part in (self.first_name, self.last_name) if part)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view of the lead (the shape of ``leads show --json``)."""
        return lead_dict(self)


def lead_dict(lead: Any) -> dict[str, Any]:
    """A JSON-ready view of *lead* (a :class:`Lead`, or a row with its columns): the
    shape of ``leads show --json``."""
    return {
        "email": lead.email,
        "first_name": lead.first_name,
        "last_name": lead.last_name,
        "company": lead.company,
        "title": lead.title,
        "phone": lead.phone,
        "timezone": lead.timezone,
        "owner": lead.owner,
        "source": lead.source,
        "stage": str(lead.stage),
        "status": str(lead.status),
        "attributes": dict(lead.attributes or {}),
        "consent": dict(lead.consent) if lead.consent else None,
        "created_at": lead.created_at.isoformat() if lead.created_at else None,
        "updated_at": lead.updated_at.isoformat() if lead.updated_at else None,
    }


def changed_lead_ids(
    engine: Engine, since: datetime | None, until: datetime, chunk: int = 500
) -> Iterator[list[int]]:
    """The ids of the leads changed after *since* and by *until* (every lead when
    *since* is ``None``), *chunk* at a time. It reads the ``updated_at`` index, so an
    idle pass costs nothing however many leads there are; a lead changed while the
    caller works on a chunk is left for the next call."""
    last: tuple[datetime, int] | None = None
    last_id = 0
    while True:
        with session_scope(engine) as session:
            if since is None:
                query = select(Lead.id, Lead.updated_at).where(col(Lead.id) > last_id)
                query = query.order_by(col(Lead.id))
            else:
                query = (
                    select(Lead.id, Lead.updated_at)
                    .where(col(Lead.updated_at) > since)
                    .where(col(Lead.updated_at) <= until)
                    .order_by(col(Lead.updated_at), col(Lead.id))
                )
                if last is not None:
                    moment, lead_id = last  # after the last one seen, in that order
                    query = query.where(
                        or_(
                            col(Lead.updated_at) > moment,
                            and_(col(Lead.updated_at) == moment, col(Lead.id) > lead_id),
                        )
                    )
            rows = list(session.exec(query.limit(chunk)))
        if not rows:
            return
        ids = [lead_id for lead_id, _ in rows if lead_id is not None]
        last_id = ids[-1]
        last = (rows[-1][1], last_id)
        yield ids


def get_lead(session: Session, email: str) -> Lead:
    """The lead with *email* (compared case-insensitively), or :class:`LeadNotFoundError`."""
    key = normalize_email(email)
    lead = session.exec(select(Lead).where(Lead.email == key)).first()
    if lead is None:
        raise LeadNotFoundError(f"no lead with email {key}")
    return lead


def list_leads(session: Session, *, stage: Stage | None = None) -> Sequence[Lead]:
    """Every lead, optionally only those at *stage*, ordered by email."""
    query = select(Lead).order_by(col(Lead.email))
    if stage is not None:
        query = query.where(Lead.stage == stage)
    return session.exec(query).all()


@dataclass
class LeadChanges:
    """What an import row says about one lead: fields to set and attributes to merge."""

    email: str
    fields: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)

    def absorb(self, later: LeadChanges) -> None:
        """Fold the changes of a later row for the same lead into this one."""
        self.fields.update(later.fields)
        self.attributes.update(later.attributes)


@dataclass
class UpsertResult:
    """The emails of the leads an upsert created, updated, and left as they were."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    #: The fields (``attributes`` for any attribute) each updated lead had changed.
    changed: dict[str, list[str]] = field(default_factory=dict)
    #: With ``fill_only``: the values each existing lead was sent that differ from what
    #: it holds, and so were not written (fields by name, attributes by their name).
    kept: dict[str, dict[str, Any]] = field(default_factory=dict)


_LEADS = Lead.__table__  # type: ignore[attr-defined]
#: Every field an item may set, unset: each new row has all of them, so that a batch of
#: new leads is one multi-row INSERT (rows with other keys would each be one).
_UNSET: dict[str, Any] = dict.fromkeys(SETTABLE_FIELDS)


def _empty(value: Any) -> bool:
    return value is None or value == ""


def upsert_leads(
    session: Session, batch: Sequence[LeadChanges], *, fill_only: bool = False
) -> UpsertResult:
    """Create or update one lead per item of *batch* (emails must be unique in it).

    Existing values are kept where the item says nothing; attributes are merged; an
    unsubscribe, bounce or complaint is never undone (:func:`merge_status`).

    With *fill_only* (what a stranger sends: a web form), an existing lead only gets
    the fields and attributes it does not hold yet; a stored value is never replaced
    (the values that differ are listed in :attr:`UpsertResult.kept`).
    """
    result = UpsertResult()
    if not batch:
        return result
    # The stored leads as plain rows (attribute access like a Lead), one query: no
    # ORM object per row.
    emails = [item.email for item in batch]
    existing: dict[str, Any] = {}
    for start in range(0, len(emails), 1000):
        query = sa_select(_LEADS).where(_LEADS.c.email.in_(emails[start : start + 1000]))
        existing.update((row.email, row) for row in session.connection().execute(query))
    moment = clock.now()
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for item in batch:
        row = existing.get(item.email)
        if row is None:
            values = {
                **_UNSET,
                "stage": Stage.cold.value,
                "status": "subscribed",
                **item.fields,
                "email": item.email,
                "attributes": dict(item.attributes),
                "created_at": moment,
                "updated_at": moment,
            }
            inserts.append(values)
            result.created.append(item.email)
            continue
        values = dict(item.fields)
        if fill_only:
            stored_attributes = row.attributes or {}
            kept = {
                **{k: v for k, v in values.items() if k != "status"
                   and not _empty(getattr(row, k)) and getattr(row, k) != v},
                **{k: v for k, v in item.attributes.items()
                   if not _empty(stored_attributes.get(k)) and stored_attributes[k] != v},
            }  # fmt: skip
            if kept:
                result.kept[item.email] = kept
            values = {k: v for k, v in values.items() if _empty(getattr(row, k))}
            fresh = {k: v for k, v in item.attributes.items()
                     if _empty(stored_attributes.get(k))}  # fmt: skip
            if fresh:
                values["attributes"] = {**stored_attributes, **fresh}
        elif item.attributes:
            values["attributes"] = {**(row.attributes or {}), **item.attributes}
        if "status" in values:
            values["status"] = merge_status(row.status, values["status"])
        values = {key: value for key, value in values.items() if getattr(row, key) != value}
        if not values:
            result.unchanged.append(item.email)
            continue
        updates.append({**values, "id": row.id, "updated_at": moment})
        result.updated.append(item.email)
        result.changed[item.email] = sorted(values)
    hooks.reach("leads.before_write", session)
    if inserts:  # the table's own INSERT: the ORM's leaves out None values, row by row
        session.connection().execute(insert(_LEADS), inserts)
    # Bulk UPDATE by primary key wants the same keys in every row: group by key set.
    by_keys: dict[frozenset[str], list[dict[str, Any]]] = {}
    for values in updates:
        by_keys.setdefault(frozenset(values), []).append(values)
    for group in by_keys.values():
        session.execute(update(Lead), group)
    session.expunge_all()
    return result
