"""Triggered alerts: an application says what happened, the campaign decides at once.

A triggered campaign (its ``[trigger]`` table) has no schedule: ``TriggerDesk.accept``
takes triggers (a recipient, the event's data, optional featured items, when to send),
decides each as a scheduled run would (eligibility, features plus the event keys the
campaign declares, recipe, the policy's sampled variant), checks that the chosen variant
renders with the caller's data, and commits in one transaction the trigger, its ledger
row and (with an ``Idempotency-Key``) the answer, before anything is acknowledged.

Every trigger of a campaign on one UTC day belongs to one trigger run
(``<campaign>@triggers-<YYYYMMDD>``, status ``triggered``: the one-run-at-a-time guard of
scheduled runs does not see it), one ledger row per trigger (the ledger's key is
(run, recipient, trigger)); the decision id, which seeds the sampling, derives from the
trigger id. The row waits as ``scheduled`` until its ``release_at`` (now, or the time
asked) and ``engine.sending.release`` sends it, once, checking eligibility again.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from engine.db import insert_ignore, insert_returning, session_scope
from engine.errors import TailormailError, TemplateError
from engine.feedback.status_webhooks import StatusEvent, enqueue_many
from engine.ledger import RunLedger
from engine.models import (
    DECISION_FIELDS,
    EventRow,
    LedgerRow,
    LedgerStatus,
    RecipientRow,
    RunRow,
    TriggerRow,
    as_utc,
    utcnow,
)
from engine.sampling import seed_from_decision_id
from engine.sending.idempotency import (
    IdempotencyError,
    Stored,
    concurrent,
    finish,
    stored_many,
)
from engine.sending.pipeline import CampaignRun
from engine.sending.run_effects import RunEffects
from engine.tokens import TEST_SEND_ID
from engine.types import Message, Recipient, SendResult

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.campaigns import Campaign

TRIGGER_RUN_STATUS = "triggered"
"""A trigger run's status: never ``running``, so scheduled runs' guard ignores it."""
MAX_BATCH = 1000
"""Triggers one request may carry."""
CANCELLED = "cancelled by the API"
"""The skip reason of a cancelled trigger."""
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_REFRESH_SECONDS = 30.0  # how often a desk looks for a newly promoted champion


class TriggerError(TailormailError):
    """A trigger refused before anything was written: ``code`` is stable, ``status`` the
    HTTP status the API answers with, ``index`` the trigger's place in a batch."""

    def __init__(self, code: str, message: str, status: int = 422, index: int | None = None):
        super().__init__(message)
        self.code = code
        self.status = status
        self.index = index


@dataclass(frozen=True)
class TriggerRequest:
    """One trigger as asked: who, what happened (``data``), which items, when."""

    campaign: str
    recipient_id: str
    email: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    items: list[str] | None = None
    send_at: datetime | None = None
    event_id: str | None = None

    def digest(self) -> str:
        """The fingerprint a repeat (same event id) must match."""
        fields = asdict(self)
        fields["send_at"] = as_utc(self.send_at).isoformat() if self.send_at else None
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()


def new_trigger_id(now: float | None = None) -> str:
    """``trg_`` and a ULID: 48 bits of milliseconds then 80 random bits, in Crockford's
    base32, so ids sort by creation time."""
    millis = int((time.time() if now is None else now) * 1000)
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    chars = [_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5)]
    return "trg_" + "".join(chars)


def decision_id_for_trigger(trigger_id: str) -> str:
    """The decision id (and so the sampling seed) of a trigger's row."""
    return hashlib.sha256(f"trigger\x00{trigger_id}".encode()).hexdigest()[:32]


def trigger_run_id(campaign: str, day: datetime) -> str:
    """The trigger run of ``campaign`` on the UTC day of ``day``."""
    return f"{campaign}@triggers-{as_utc(day):%Y%m%d}"


def public_status(status: str, release_at: datetime | None, now: datetime) -> str:
    """A ledger row's state as the API says it: ``queued`` (due now) or ``scheduled``
    (due later) while it waits; ``sending`` while a worker holds it; ``retrying`` when a
    temporary failure will be retried; else the ledger's own word."""
    if status == LedgerStatus.SCHEDULED:
        return "scheduled" if release_at is not None and as_utc(release_at) > now else "queued"
    if status in (LedgerStatus.PENDING, LedgerStatus.HANDED_OVER):
        return "sending"
    if status == LedgerStatus.DEFERRED:
        return "retrying"
    return status


Decided = tuple[dict[str, Any], dict[str, Any], dict[str, Any]]
"""A trigger decided now: its ledger row, its ``triggers`` row, its answer."""


@dataclass(frozen=True)
class Group:
    """One request's triggers, as ``TriggerDesk.accept_many`` takes them."""

    requests: Sequence[TriggerRequest]
    key_id: str | None = None
    idempotency: tuple[str, str, str] | None = None
    wrap: bool = False


class Replayed(list[dict[str, Any]]):
    """A request whose Idempotency-Key was answered before: that answer, again."""

    def __init__(self, first: Stored) -> None:
        super().__init__()
        self.status_code = first.status_code
        self.answer = first.answer


class _Alone(Exception):
    """The groups of an ``accept_many`` go one by one."""


def _store_recipients(session: Session, recipients: list[dict[str, Any]]) -> None:
    """Insert the new recipients and update the known ones' email and attributes (their
    ``created_at`` stays: it says when they were first seen)."""
    if not recipients:
        return
    insert_ignore(session, RecipientRow, recipients)
    table = RecipientRow.__table__  # type: ignore[attr-defined]
    session.execute(
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(email=bindparam("b_email"), attributes=bindparam("b_attributes")),
        [
            {"b_id": r["id"], "b_email": r["email"], "b_attributes": r["attributes"]}
            for r in recipients
        ],
    )


def _silent(message: Message, result: SendResult) -> None:
    """The desk sends nothing: nobody to tell."""


@dataclass
class _Desk:
    """One campaign's deciding state for one trigger run (a day)."""

    run: CampaignRun
    version: str
    checked: float
    lock: threading.Lock = field(default_factory=threading.Lock)


class TriggerDesk:
    """Decides and records triggers; one per process, shared by its request threads.

    It keeps each triggered campaign's policy, catalogue and recipe in memory (a new
    champion is picked up within ``_REFRESH_SECONDS``; a new UTC day starts a new run).
    Deciding holds the campaign's lock (a policy is not thread-safe); the database work
    does not.
    """

    def __init__(self, engine: Engine) -> None:
        """Nothing is loaded until a campaign's first trigger."""
        self.engine = engine
        self._desks: dict[str, _Desk] = {}
        self._lock = threading.Lock()

    # -- state ------------------------------------------------------------------------
    def campaign(self, name: str) -> Campaign:
        """The triggered campaign ``name``; a ``TriggerError`` (404, 409) otherwise."""
        campaign = self.engine.campaigns.get(name)
        if campaign is None:
            raise TriggerError("unknown_campaign", f"no campaign is called {name!r}", 404)
        if not campaign.triggered:
            raise TriggerError(
                "not_triggered",
                f"campaign {name!r} is scheduled, not triggered: give it a [trigger] table "
                "to trigger it over the API",
                409,
            )
        return campaign

    def _desk(self, campaign: Campaign, now: datetime) -> _Desk:
        run_id = trigger_run_id(campaign.name, now)
        desk = self._desks.get(campaign.name)  # the common case: no lock to wait for
        fresh = desk is not None and time.monotonic() - desk.checked < _REFRESH_SECONDS
        if desk is not None and fresh and desk.run.run_id == run_id:
            return desk
        with self._lock:
            desk = self._desks.get(campaign.name)
            if desk is not None and desk.run.run_id == run_id:
                if time.monotonic() - desk.checked < _REFRESH_SECONDS:
                    return desk
                desk.checked = time.monotonic()
                if self.engine.champion_version(campaign) == desk.version:
                    return desk
            desk = self._open(campaign, run_id, now)
            self._desks[campaign.name] = desk
            return desk

    def _open(self, campaign: Campaign, run_id: str, now: datetime) -> _Desk:
        """The trigger run ``run_id`` (created if new) and a run object deciding for it."""
        version = self.engine.champion_version(campaign)
        with session_scope(self.engine.db) as session:
            row = {
                "id": run_id,
                "campaign": campaign.name,
                "status": TRIGGER_RUN_STATUS,
                "started_at": now,
                "model_version": version,
            }
            insert_ignore(session, RunRow, [row])
        effects = RunEffects(
            ledger=RunLedger(self.engine, run_id, campaign.name),
            backend=self.engine.make_backend,
            shards=None,
            sent=_silent,
            shares_recipe_fit=False,
        )
        run = CampaignRun(self.engine, campaign, run_id, effects)
        # The champion as it is now (the run's pin is only a record): triggers follow
        # promotions through the day.
        run._prepare_models(Recipient("", ""))
        run.policy = self.engine.make_policy(campaign, version)
        run.arms.policy = run.policy
        return _Desk(run, version, time.monotonic())

    # -- accepting ----------------------------------------------------------------------
    def accept(
        self,
        requests: Sequence[TriggerRequest],
        *,
        key_id: str | None = None,
        dry_run: bool = False,
        idempotency: tuple[str, str, str] | None = None,
        status_code: int = 202,
        wrap: bool = False,
    ) -> list[dict[str, Any]]:
        """Decide every trigger of ``requests`` and commit them (or, ``dry_run``, only
        decide and render); returns each one's answer, in order.

        All or nothing: a trigger refused (``TriggerError`` with its ``index``) writes
        nothing of the batch. A trigger repeating an earlier one's ``event_id`` gets that
        one's answer (the same payload) or is refused (another payload). ``idempotency``
        (key id, key) stores the answers (as one ``{"triggers": ...}`` when ``wrap``) with
        that key in the same transaction.
        """
        if not requests:
            raise TriggerError("empty_batch", "a batch needs at least one trigger")
        if len(requests) > MAX_BATCH:
            raise TriggerError("batch_too_large", f"at most {MAX_BATCH} triggers a request")
        now = utcnow()
        answers, decided, recipients = self._decide_all(requests, now, dry_run)
        if dry_run:
            return answers
        body: Any = {"triggers": answers} if wrap else answers[0]
        stored = [(*idempotency, status_code, body)] if idempotency is not None else []
        try:
            self._commit(decided, recipients, dict.fromkeys(decided, key_id), now, stored)
        except IntegrityError:
            if idempotency is not None:  # the key, written meanwhile by its twin?
                raise concurrent(self.engine.db, *idempotency) from None
            raise TriggerError(
                "conflict",
                "another request is recording a trigger with the same event_id right now; retry it",
                409,
            ) from None
        return answers

    def accept_many(self, groups: Sequence[Group]) -> list[list[dict[str, Any]] | Exception]:
        """``accept`` for several requests at once (``engine.sending.trigger_batches``):
        one round of queries and one transaction for all of them; each group's answers, or
        the exception ``accept`` would have raised for it.

        When the whole cannot go at once (a group refused, two groups sharing an event id
        or an Idempotency-Key), each group goes alone, as ``accept`` takes it: the same
        answers, the same refusals.
        """
        keys = [g.idempotency for g in groups if g.idempotency is not None]
        first = stored_many(self.engine.db, keys)
        results: dict[int, list[dict[str, Any]] | Exception] = {}
        for n, group in enumerate(groups):
            if group.idempotency is not None:
                found = first.get(group.idempotency[:2])
                if found is not None:
                    results[n] = found if isinstance(found, Exception) else Replayed(found)
        rest = [n for n in range(len(groups)) if n not in results]
        results.update(zip(rest, self._together([groups[n] for n in rest]), strict=True))
        return [results[n] for n in range(len(groups))]

    def _together(self, groups: Sequence[Group]) -> list[list[dict[str, Any]] | Exception]:
        """The groups (none answered before) in one round, else one by one."""
        if not groups:
            return []
        flat = [request for group in groups for request in group.requests]
        owner = [n for n, group in enumerate(groups) for _ in group.requests]
        try:
            if len(groups) == 1 or len(flat) > MAX_BATCH:
                raise _Alone
            now = utcnow()
            answers, decided, recipients = self._decide_all(flat, now, dry_run=False)
            per_group: list[list[dict[str, Any]]] = [[] for _ in groups]
            for index, answer in enumerate(answers):
                per_group[owner[index]].append(answer)
            stored = [
                (*group.idempotency, 202, {"triggers": mine} if group.wrap else mine[0])
                for group, mine in zip(groups, per_group, strict=True)
                if group.idempotency is not None
            ]
            key_ids = {i: groups[owner[i]].key_id for i in decided}
            self._commit(decided, recipients, key_ids, now, stored)
        except (_Alone, TriggerError, IntegrityError):
            return [self._alone(group) for group in groups]
        return list(per_group)

    def _decide_all(
        self, requests: Sequence[TriggerRequest], now: datetime, dry_run: bool
    ) -> tuple[list[dict[str, Any]], dict[int, Decided], list[Recipient]]:
        """Every trigger's answer (a repeated event's first one), the rows and triggers
        of those decided now (by index), and the recipients to store (new or changed)."""
        campaigns = {r.campaign: self.campaign(r.campaign) for r in requests}
        repeats = {} if dry_run else self._repeats(requests)
        fresh = [(i, r) for i, r in enumerate(requests) if i not in repeats]
        people, changed = self._people(fresh)
        decided: dict[int, Decided] = {}
        for name, campaign in campaigns.items():
            mine = [(i, r) for i, r in fresh if r.campaign == name]
            if mine:
                decided.update(self._decide(campaign, mine, people, now, dry_run))
        answers = [repeats[i] if i in repeats else decided[i][2] for i in range(len(requests))]
        return answers, decided, [people[i] for i in sorted(changed)]

    def _alone(self, group: Group) -> list[dict[str, Any]] | Exception:
        try:
            return self.accept(
                group.requests, key_id=group.key_id, idempotency=group.idempotency, wrap=group.wrap
            )
        except (TriggerError, IdempotencyError) as refused:
            return refused

    def _repeats(self, requests: Sequence[TriggerRequest]) -> dict[int, dict[str, Any]]:
        """The triggers of ``requests`` whose event id was seen: their first answers."""
        wanted = {(r.campaign, r.event_id) for r in requests if r.event_id}
        if not wanted:
            return {}
        with session_scope(self.engine.db) as session:
            stmt = select(TriggerRow).where(
                col(TriggerRow.event_id).in_(sorted({e for _, e in wanted}))
            )
            found = {(t.campaign, t.event_id): t for t in session.scalars(stmt).all()}
        repeats: dict[int, dict[str, Any]] = {}
        seen: dict[tuple[str, str], int] = {}
        for index, request in enumerate(requests):
            if not request.event_id:
                continue
            pair = (request.campaign, request.event_id)
            if pair in seen:
                raise TriggerError(
                    "duplicate_event_id",
                    f"triggers {seen[pair]} and {index} share event_id {request.event_id!r}",
                    index=index,
                )
            seen[pair] = index
            first = found.get(pair)
            if first is None:
                continue
            if first.digest != request.digest():
                raise TriggerError(
                    "event_id_reused",
                    f"event_id {request.event_id!r} was used by trigger {first.id} with "
                    "another payload",
                    index=index,
                )
            repeats[index] = dict(first.answer)
        return repeats

    def _people(
        self, fresh: Sequence[tuple[int, TriggerRequest]]
    ) -> tuple[dict[str, Recipient], set[str]]:
        """The recipients of the triggers, as they will be once the request's email and
        attributes are stored, and the ids of those that are new or changed (``_commit``
        writes only those)."""
        ids = sorted({r.recipient_id for _, r in fresh})
        with session_scope(self.engine.db) as session:
            stmt = select(RecipientRow).where(col(RecipientRow.id).in_(ids))
            known = {row.id: row for row in session.scalars(stmt).all()}
        people: dict[str, Recipient] = {}
        changed: set[str] = set()
        for index, request in fresh:
            before = people.get(request.recipient_id)
            row = known.get(request.recipient_id)
            if before is None and row is not None:
                before = Recipient(row.id, row.email, dict(row.attributes or {}))
            email = request.email or (before.email if before else None)
            if email is None:
                raise TriggerError(
                    "unknown_recipient",
                    f"recipient {request.recipient_id!r} is not known: give its email",
                    index=index,
                )
            attributes = (dict(before.attributes) if before else {}) | request.attributes
            person = Recipient(request.recipient_id, email, attributes)
            stored = known.get(request.recipient_id)
            if stored is None or (stored.email, stored.attributes) != (email, attributes):
                changed.add(request.recipient_id)
            people[request.recipient_id] = person
        return people, changed

    def _decide(
        self,
        campaign: Campaign,
        mine: Sequence[tuple[int, TriggerRequest]],
        people: dict[str, Recipient],
        now: datetime,
        dry_run: bool,
    ) -> dict[int, Decided]:
        """Each trigger's (ledger row, trigger row, answer) for one campaign."""
        desk = self._desk(campaign, now)
        run = desk.run
        recipients = list({r.recipient_id: people[r.recipient_id] for _, r in mine}.values())
        reasons = dict(self.engine.ineligible(campaign, recipients))
        if campaign.audience:
            inside = run._still_in_audience([p.recipient_id for p in recipients])
            for person in recipients:
                if person.recipient_id not in inside:
                    reasons.setdefault(person.recipient_id, "not in the campaign's audience")
        eligible = [p for p in recipients if p.recipient_id not in reasons]
        contexts = self.engine.contexts_for(campaign, eligible)
        assert campaign.trigger is not None and run.recipe is not None
        out: dict[int, Decided] = {}
        for index, request in mine:
            for item in request.items or ():
                if item not in run.items:
                    raise TriggerError(
                        "unknown_item", f"item {item!r} is not in the catalogue", index=index
                    )
            trigger_id = new_trigger_id()
            decision_id = decision_id_for_trigger(trigger_id)
            person = people[request.recipient_id]
            release_at = max(as_utc(request.send_at), now) if request.send_at else now
            row: dict[str, Any] = {
                "run_id": run.run_id,
                "campaign": campaign.name,
                "recipient_id": person.recipient_id,
                "email": person.email,
                "decision_id": decision_id,
                "trigger_id": trigger_id,
                "created_at": now,
                "skip_reason": None,
                "release_at": None,
                **dict.fromkeys(DECISION_FIELDS),
            }
            answer: dict[str, Any] = {
                "trigger_id": trigger_id,
                "decision_id": decision_id,
                "campaign": campaign.name,
                "recipient_id": person.recipient_id,
                "event_id": request.event_id,
                "variant": None,
                "probability": None,
                "model_version": None,
                "items": [],
                "send_at": release_at.isoformat(),
                "reason": None,
            }
            reason = reasons.get(person.recipient_id)
            if reason:
                row |= {"status": LedgerStatus.SKIPPED, "skip_reason": reason[:200]}
                answer |= {"status": "skipped", "reason": reason}
            else:
                context = dict(contexts[person.recipient_id])
                for key in campaign.trigger.context:
                    value = request.data.get(key)
                    if isinstance(value, str | int | float | bool):
                        context[f"event_{key}"] = value
                n = campaign.items_per_email
                with desk.lock:
                    picks = list(request.items or run.recipe.recommend(person.recipient_id, n))
                    decision, arm = run.arms.decide(
                        person.recipient_id,
                        context,
                        run.variants,
                        seed_from_decision_id(decision_id),
                    )
                    rendered = self._render(run, person, decision.variant, picks, request, index)
                row |= {
                    "status": LedgerStatus.SCHEDULED,
                    "release_at": release_at,
                    "variant": decision.variant,
                    "probability": decision.probability,
                    "pmf": dict(decision.pmf),
                    "offered": run._row_offered,
                    "context": context,
                    "policy": decision.policy,
                    "model_version": decision.model_version,
                    "items": picks,
                } | arm
                status = "scheduled" if release_at > now + timedelta(seconds=1) else "queued"
                answer |= {
                    "status": status,
                    "variant": decision.variant,
                    "probability": decision.probability,
                    "model_version": decision.model_version or None,
                    "items": picks,
                }
                if dry_run:
                    answer |= {
                        "status": "dry_run",
                        "would_be": status,
                        "message": {
                            "subject": rendered.subject,
                            "to": rendered.to_address,
                            "html": rendered.html,
                            "text": rendered.text,
                        },
                    }
            trigger = {
                "id": trigger_id,
                "campaign": campaign.name,
                "run_id": run.run_id,
                "recipient_id": person.recipient_id,
                "event_id": request.event_id,
                "digest": request.digest(),
                "data": request.data,
                "items": request.items,
                "send_at": request.send_at and as_utc(request.send_at),
                "created_at": now,
                "send_id": None,
                "answer": answer,
            }
            out[index] = (row, trigger, answer)
        return out

    def _render(
        self,
        run: CampaignRun,
        person: Recipient,
        variant_key: str,
        items: list[str],
        request: TriggerRequest,
        index: int,
    ) -> Message:
        """The chosen variant rendered with the caller's data (no tokens that count): a
        template needing a key the data lacks is the caller's error, refused now."""
        variant = next(v for v in run.variants if v.key == variant_key)
        try:
            return run.compose(person, variant, items, TEST_SEND_ID, "", request.data)
        except TemplateError as exc:
            raise TriggerError(
                "template_data", f"the email cannot be rendered with this data: {exc}", index=index
            ) from None

    def _commit(
        self,
        decided: dict[int, Decided],
        changed: Sequence[Recipient],
        key_ids: dict[int, str | None],
        now: datetime,
        stored: Sequence[tuple[str, str, str, int, Any]],
    ) -> None:
        """Write the new or changed recipients, ledger rows, triggers (made with the API
        keys ``key_ids``, by index) and the stored answers (``stored``: key id,
        Idempotency-Key, request digest, status, body) in one transaction."""
        recipients = [
            {"id": p.recipient_id, "email": p.email, "attributes": p.attributes, "created_at": now}
            for p in changed
        ]
        with session_scope(self.engine.db) as session:
            finish(session, stored)
            if decided:
                _store_recipients(session, recipients)
                rows = [decided[i][0] for i in sorted(decided)]
                landed = insert_returning(session, LedgerRow, rows, "id", "trigger_id")
                ids = {trigger_id: send_id for send_id, trigger_id in landed}
                triggers = []
                for i in sorted(decided):
                    _, trigger, _ = decided[i]
                    triggers.append(trigger | {"send_id": ids[trigger["id"]], "key_id": key_ids[i]})
                session.execute(TriggerRow.__table__.insert(), triggers)  # type: ignore[attr-defined]
                skipped = [
                    StatusEvent(
                        a["trigger_id"],
                        a["campaign"],
                        "skipped",
                        {"reason": a["reason"]},
                        key_ids[i],
                    )
                    for i, (_, _, a) in decided.items()
                    if a["status"] == "skipped"
                ]
                enqueue_many(session, skipped)

    # -- reading and cancelling -----------------------------------------------------------
    def status(self, trigger_id: str) -> dict[str, Any] | None:
        """A trigger's answer with its outcome now (None: no such trigger)."""
        with session_scope(self.engine.db) as session:
            trigger = session.get(TriggerRow, trigger_id)
            if trigger is None:
                return None
            row = session.get(LedgerRow, trigger.send_id) if trigger.send_id else None
            events = []
            if row is not None and row.id is not None:
                stmt = (
                    select(col(EventRow.type), col(EventRow.timestamp))
                    .where(col(EventRow.send_id) == row.id, col(EventRow.bot).is_(False))
                    .order_by(col(EventRow.timestamp))
                )
                events = [
                    {"type": kind, "at": as_utc(at).isoformat()}
                    for kind, at in session.execute(stmt).all()
                ]
        answer = dict(trigger.answer)
        if row is not None:
            answer["status"] = public_status(row.status, row.release_at, utcnow())
            answer["reason"] = row.skip_reason or row.error or answer.get("reason")
            answer["sent_at"] = as_utc(row.sent_at).isoformat() if row.sent_at else None
        answer["events"] = events
        answer["created_at"] = as_utc(trigger.created_at).isoformat()
        return answer

    def cancel(self, trigger_id: str) -> dict[str, Any] | None:
        """Cancel a trigger that is still waiting (scheduled -> skipped, ``CANCELLED``);
        a ``TriggerError`` (409) when it is already being sent or done; None: no trigger."""
        with session_scope(self.engine.db) as session:
            trigger = session.get(TriggerRow, trigger_id)
            if trigger is None:
                return None
            changed = session.execute(
                update(LedgerRow)
                .where(col(LedgerRow.id) == trigger.send_id)
                .where(col(LedgerRow.status) == LedgerStatus.SCHEDULED)
                .values(status=LedgerStatus.SKIPPED, skip_reason=CANCELLED, release_at=None)
            ).rowcount  # type: ignore[attr-defined]
            if changed:
                event = StatusEvent(trigger_id, trigger.campaign, "cancelled", {}, trigger.key_id)
                enqueue_many(session, [event])
        answer = self.status(trigger_id)
        assert answer is not None
        if not changed and answer.get("reason") != CANCELLED:
            raise TriggerError(
                "not_cancellable",
                f"trigger {trigger_id} is {answer['status']}: only a waiting trigger "
                "(queued or scheduled) can be cancelled",
                409,
            )
        return answer
