"""One campaign run: audience -> eligibility -> features -> recipe -> decision -> render ->
ledger -> delivery.

The ledger row is the exactly-once guard: it is inserted (unique per run and recipient)
before the message is rendered or sent, and only the process whose insert landed sends.
A run fired twice, or resumed after a crash, finds the rows and sends nothing again.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from engine.audience.empty import why_empty
from engine.audience.filters import count_audience
from engine.audience.importer import load_items
from engine.campaigns import Campaign
from engine.errors import ConfigError
from engine.learning.arms import Arms, baseline_policy
from engine.models import DECISION_FIELDS, LedgerRow, LedgerStatus, as_utc, utcnow
from engine.recommendation.recommender import campaign_recommender
from engine.sampling import seed_from_decision_id
from engine.sending.deliverability import active_pause
from engine.sending.run_effects import HeldRow, RunEffects
from engine.sending.shards import ROW_COUNTS
from engine.sending.stages import NO_STAGES, NoStages
from engine.tokens import TEST_SEND_ID
from engine.types import (
    Item,
    Message,
    Policy,
    Recipe,
    Recipient,
    SendResult,
    Variant,
)
from engine.variants import offered_variants

if TYPE_CHECKING:
    from engine.app import Engine

Progress = Callable[[int, int], None]
Deliver = Callable[[Sequence["HeldRow"], dict[str, "Recipient"]], None]
log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What one call of ``CampaignRun.execute`` (``run_campaign``) did."""

    run_id: str
    campaign: str
    audience: int = 0
    already_done: int = 0
    skipped: int = 0
    retried: int = 0
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    unknown: int = 0
    variants: dict[str, int] = field(default_factory=dict)
    paused: str | None = None  # why the run stopped early: its campaign paused itself
    shards: int = 0  # shards submitted to workers (0: this process sent the run alone)
    # Why shards failed on their workers, with how many failed so (this process then
    # sent their recipients itself): never silent, a failing worker setup shows here.
    shard_errors: dict[str, int] = field(default_factory=dict)
    # Why the audience is empty (its filter, the nearest values present); None: it is not.
    empty: str | None = None
    # Audience members without a row that a resumed finished run left out (--include-new).
    left_out: int = 0


def run_id_for(campaign: str, scheduled_for: datetime) -> str:
    """The stable id of a scheduled tick: firing the same tick twice resumes one run."""
    return f"{campaign}@{as_utc(scheduled_for):%Y%m%dT%H%M%S}"


def _cause(exc: BaseException) -> tuple[str, str]:
    """The database driver's error under ``exc`` (else ``exc``), as type and message."""
    original = getattr(exc, "orig", None) or exc
    return type(original).__name__, str(original)


def decision_id_for(run_id: str, recipient_id: str) -> str:
    """Deterministic per (run, recipient): the seed for sampling derives from it."""
    return hashlib.sha256(f"{run_id}\x00{recipient_id}".encode()).hexdigest()[:32]


class CampaignRun:
    """Executes (or resumes) one run of one campaign.

    Its side effects (ledger, delivery backend, shard runner, ``message_sent``) come from
    ``effects``, always passed in by whoever builds the run: the real ones from
    ``engine.sending.real_run.real_run``, harmless ones for a rehearsal. The run reaches
    them through ``effects`` only and never builds them.
    """

    def __init__(
        self,
        engine: Engine,
        campaign: Campaign,
        run_id: str,
        effects: RunEffects,
        *,
        include_new: bool | None = None,
        retry_failed: bool = True,
    ) -> None:
        """``include_new``: send to audience members without a row yet (None: unless the
        run had finished); ``retry_failed``: retry rows that failed for a fixable cause."""
        self.engine = engine
        self.include_new = include_new
        self.retry_failed = retry_failed
        self.campaign = campaign
        self.run_id = run_id
        self.variants: list[Variant] = campaign.variant_list
        self.summary = RunSummary(run_id=run_id, campaign=campaign.name)
        self.policy: Policy | None = None
        self.recipe: Recipe | None = None
        self.items: dict[str, Item] = {}
        self.effects = effects
        self.ledger = self.effects.ledger
        # Rows this call already counted, so the sweep does not count them "already done"
        # again: by recipient (retried or refused deferred rows), and by number (the rows
        # of the shards that reported back, found again by the coordinator's sweep).
        self._counted: set[str] = set()
        self._shard_rows = 0
        # What each row stores as its offered variants (``_prepare_models``): None when they
        # are the run's (the rule: stored once, on the run), else the list (a run resumed
        # after its campaign file changed its variants).
        self._row_offered: list[dict[str, Any]] | None = None
        self.stages: NoStages = NO_STAGES  # a bench sets StageTimes to see where time goes

    # -- preparation --------------------------------------------------------------------
    def _open_run(self, scheduled_for: datetime | None) -> str | None:
        """Open (or reopen) the run; returns the status it had (None: a new run)."""
        variants = [
            {
                "campaign": self.campaign.name,
                "key": v.key,
                "subject": v.subject,
                "template": v.template,
                "features": dict(v.features),
            }
            for v in self.variants
        ]
        # Settles what dead workers held; a live worker's rows stay its own.
        return self.ledger.open(scheduled_for, variants)

    def _done_among(self, page: Sequence[Recipient]) -> set[str]:
        """The recipients of ``page`` that already have a ledger row in this run."""
        return self.ledger.recipients_done([r.recipient_id for r in page])

    def _still_in_audience(self, recipient_ids: Sequence[str]) -> dict[str, Recipient]:
        """The recipients of ``recipient_ids`` the audience filter still selects, by id."""
        pages = self.engine.audience_pages(self.campaign, max(len(recipient_ids), 1), recipient_ids)
        return {r.recipient_id: r for page in pages for r in page}

    def _prepare_models(self, first: Recipient) -> None:
        """Load the policy, the catalogue and the recipe; check every template on ``first``.

        Called once, when the run finds its first recipient to send to, so a resumed run
        with nothing left loads nothing; a broken template stops it before anything is sent.
        """
        if self.policy is not None:
            return
        self.policy = self.engine.make_policy(self.campaign, self.ledger.model_version())
        offered = offered_variants(self.variants)
        self._row_offered = None if self.ledger.pin_offered(offered) == offered else offered
        self.arms = Arms(self.campaign, self.policy, baseline_policy(self.engine, self.campaign))
        items = load_items(self.engine.db)
        if not items and self.campaign.items_per_email:
            raise ConfigError(
                f"campaign {self.campaign.name!r}: its recipe {self.campaign.recipe.name!r} "
                "has no catalogue to draw from (no items imported yet); import one first "
                "with `tailormail import items FILE` (a .csv or .jsonl with an id column)"
            )
        self.items = {item.item_id: item for item in items}
        shared = self.run_id if self.effects.shares_recipe_fit else None
        self.recipe = campaign_recommender(self.engine, self.campaign, shared)
        if self.campaign.triggered:  # what templates need of ``event`` varies per trigger:
            for variant in self.variants:  # each is rendered (checked) when triggered
                self.engine.renderer.compile(variant)
            return
        sample = self.template_variables(first, [], self.variants[0])
        sample["items"] = [{"id": i} | item.attributes for i, item in self.items.items()][:3]
        self.engine.renderer.check(self.variants, sample)

    # -- per recipient ------------------------------------------------------------------
    def template_variables(
        self,
        recipient: Recipient,
        item_ids: Sequence[str],
        variant: Variant,
        event: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """What templates see: recipient, items, campaign, variant, plus plugin extras;
        and, for a triggered alert, ``event``: the data its caller sent."""
        variables: dict[str, Any] = {
            "recipient": {"id": recipient.recipient_id, "email": recipient.email}
            | recipient.attributes,
            "items": [
                {"id": i} | (self.items[i].attributes if i in self.items else {}) for i in item_ids
            ],
            "campaign": {"name": self.campaign.name, "description": self.campaign.description},
            "variant": {"key": variant.key} | dict(variant.features),
            "now": utcnow(),
        }
        if event is not None:
            variables["event"] = event
        extras = self.engine.pm.hook.extra_template_vars
        if extras.get_hookimpls():  # a call costs microseconds per email: none without plugins
            for extra in extras(
                engine=self.engine, campaign=self.campaign, recipient=recipient, variant=variant
            ):
                variables.update(extra)
        return variables

    def _decide(self, recipients: Sequence[Recipient]) -> list[dict[str, Any]]:
        """The ledger rows of one batch: a skip with its reason, or a decision, each."""
        assert self.policy is not None and self.recipe is not None
        recipe, stages = self.recipe, self.stages
        with stages("eligibility"):
            reasons = self.engine.ineligible(self.campaign, recipients)
        eligible = [r for r in recipients if r.recipient_id not in reasons]
        with stages("features"):
            contexts = self.engine.contexts_for(self.campaign, eligible)
        with stages("recommend"):
            n = self.campaign.items_per_email
            picks = {r.recipient_id: recipe.recommend(r.recipient_id, n) for r in eligible}
        with stages("decide"):
            return self._rows(recipients, reasons, contexts, picks)

    def _rows(
        self,
        recipients: Sequence[Recipient],
        reasons: dict[str, str],
        contexts: dict[str, dict[str, Any]],
        picks: dict[str, list[str]],
    ) -> list[dict[str, Any]]:
        """Each recipient's ledger row: a skip with its reason, or the arm's decision."""
        offered = self._row_offered
        now = utcnow()
        rows: list[dict[str, Any]] = []
        for recipient in recipients:
            decision_id = decision_id_for(self.run_id, recipient.recipient_id)
            row: dict[str, Any] = {
                "run_id": self.run_id,
                "campaign": self.campaign.name,
                "recipient_id": recipient.recipient_id,
                "email": recipient.email,
                "decision_id": decision_id,
                "trigger_id": "",  # named, as every defaulted column: the batch may go by COPY
                "created_at": now,
                "skip_reason": None,
                **dict.fromkeys(DECISION_FIELDS),  # every row the same keys: one INSERT or COPY
            }
            reason = reasons.get(recipient.recipient_id)
            if reason:
                rows.append(row | {"status": LedgerStatus.SKIPPED, "skip_reason": reason[:200]})
                continue
            context = contexts[recipient.recipient_id]
            decision, arm = self.arms.decide(
                recipient.recipient_id, context, self.variants, seed_from_decision_id(decision_id)
            )
            items = picks[recipient.recipient_id]
            rows.append(
                row
                | {
                    "status": LedgerStatus.PENDING,
                    "variant": decision.variant,
                    "probability": decision.probability,
                    "pmf": dict(decision.pmf),
                    "offered": offered,
                    "context": context,
                    "policy": decision.policy,
                    "model_version": decision.model_version,
                    "items": list(items),
                }
                | arm
            )
        return rows

    def _claim(self, rows: list[dict[str, Any]]) -> Sequence[HeldRow]:
        """Insert the batch's rows; return the pending ones this worker now holds."""
        owned, skipped = self.ledger.claim(rows)
        self.summary.skipped += skipped
        return owned

    def _message(self, row: HeldRow, recipient: Recipient) -> Message:
        variant = next(v for v in self.variants if v.key == row.variant)
        assert row.id is not None
        event = getattr(row, "event", None)  # a triggered alert's data (``TriggerRow.data``)
        return self.compose(recipient, variant, row.items or [], row.id, row.decision_id, event)

    def compose(
        self,
        recipient: Recipient,
        variant: Variant,
        item_ids: Sequence[str],
        send_id: int,
        decision_id: str,
        event: dict[str, Any] | None = None,
    ) -> Message:
        """Render ``variant`` for ``recipient`` into the message of send ``send_id``.

        The render stage on its own: previews and test sends (``engine.sending.rehearsal``) use
        it with ``TEST_SEND_ID``, whose links record nothing. ``decision_id`` seeds the
        sampling only; no header carries it. ``event``: a triggered alert's data, which
        templates see as ``event`` (and whose URLs ``track_url`` tracks only on the
        campaign's ``link_hosts``).
        """
        variables = self.template_variables(recipient, item_ids, variant, event)
        trigger = self.campaign.trigger
        email = self.engine.renderer.render(
            variant=variant,
            variables=variables,
            send_id=send_id,
            allow_host=trigger.allows_host if trigger is not None else None,
        )
        domain = self.engine.settings.from_address.rpartition("@")[2] or "tailormail.invalid"
        send_ref = self.engine.send_refs.ref(send_id)  # keyed: no id or decision id leaves
        # Test sends all share send id 0: a random part keeps their Message-IDs unique.
        local = send_ref if send_id != TEST_SEND_ID else f"{send_ref}.{secrets.token_hex(8)}"
        message = Message(
            send_id=send_id,
            message_id=f"<{local}@{domain}>",
            from_address=self.campaign.from_address or self.engine.settings.from_address,
            to_address=recipient.email,
            subject=(self.campaign.subject_prefix + email.subject).strip(),
            html=email.html,
            text=email.text,
            headers=dict(email.headers) | {"X-Tailormail-Send-Id": send_ref},
            send_ref=send_ref,
            metadata={
                "campaign": self.campaign.name,
                "variant": variant.key,
                "links": email.links,
                "link_items": [list(hit) if hit else None for hit in email.link_items],
            },
        )
        prepare = self.engine.pm.hook.prepare_message
        if prepare.get_hookimpls():
            prepare(engine=self.engine, campaign=self.campaign, message=message)
        return message

    def _record(self, messages: list[Message], results: list[SendResult]) -> None:
        statuses = self.ledger.record(results)
        for message, status in zip(messages, statuses, strict=True):
            setattr(self.summary, status, getattr(self.summary, status) + 1)
            if status == LedgerStatus.SENT:
                key = message.metadata["variant"]
                self.summary.variants[key] = self.summary.variants.get(key, 0) + 1
        for message, result in zip(messages, results, strict=True):
            self.effects.sent(message, result)

    def _store_links(self, messages: list[Message]) -> list[Message]:
        """Hand the batch over: links are stored before sending, so a click that comes back
        at once resolves. Returns the messages this worker still holds (its lease)."""
        return self.ledger.hand_over(messages)

    def _fail(self, rows: Sequence[HeldRow], error: str, *, fixable: bool = False) -> None:
        self.ledger.fail([r.id for r in rows if r.id is not None], error, fixable=fixable)

    # -- the run ------------------------------------------------------------------------
    def _reclaim_deferred(
        self, lookup: Callable[[Sequence[str]], dict[str, Recipient]]
    ) -> list[LedgerRow]:
        """Take back this run's temporarily failed rows: they never left, so they may retry.

        The decision stays as logged; a recipient who became ineligible meanwhile (an
        unsubscribe) is not retried.
        """
        rows = self.ledger.reclaim_deferred(fixable=self.retry_failed)
        if not rows:
            return []
        self._counted.update(r.recipient_id for r in rows)
        people = lookup([r.recipient_id for r in rows])
        present = list(people.values())
        reasons = self.engine.ineligible(self.campaign, present)
        retry: list[LedgerRow] = []
        for row in rows:
            reason = (
                reasons.get(row.recipient_id) if row.recipient_id in people else "left the audience"
            )
            if reason:
                self._fail([row], f"not retried: {reason}")
            else:
                retry.append(row)
        return retry

    def _deliver(
        self, rows: Sequence[HeldRow], people: dict[str, Recipient], backend: Any, executor: Any
    ) -> None:
        """Render, store links, send and record one batch of rows this process owns."""
        stages = self.stages
        try:
            with stages("render"):
                compose = self._message
                messages = list(executor.map(lambda r: compose(r, people[r.recipient_id]), rows))
            with stages("hand_over"):
                messages = self._store_links(messages)
        except Exception as exc:  # nothing of this batch left: fixable, retried on resume
            self._fail(rows, f"{type(exc).__name__}: {exc}", fixable=True)
            raise
        # If the backend raises, the rows settle from the journal (in flight: unknown).
        with stages("transmit"):
            results = self.ledger.transmit(backend, messages)
        with stages("record"):
            self._record(messages, results)

    def execute(
        self,
        scheduled_for: datetime | None = None,
        progress: Progress | None = None,
        shard_progress: Progress | None = None,
    ) -> RunSummary:
        """Run (or resume) to the end; returns counts for this call.

        ``progress(rows, audience)`` as rows are written; ``shard_progress(done, shards)``
        as shards finish, when the run is split into shards. A run that stops on an error
        is marked ``failed`` with the reason (``interrupted`` on Ctrl-C), never left
        ``running``; either way it stays resumable.
        """
        before = self._open_run(scheduled_for)
        new = self.include_new if self.include_new is not None else before != "finished"
        try:
            return self._execute(progress, shard_progress, new)
        except BaseException as exc:
            self._close_stopped(exc)
            raise

    def _close_stopped(self, exc: BaseException) -> None:
        """Mark the run stopped by ``exc``; a failure to do so (a full disk) is logged,
        so the error the user sees is the one that stopped the run."""
        if isinstance(exc, KeyboardInterrupt):
            status, reason = "interrupted", "stopped by Ctrl-C"
        else:
            status = "failed"
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        hint = f"; continue with `tailormail send {self.campaign.name} --run {self.run_id}`"
        if isinstance(exc, KeyboardInterrupt):
            # Ctrl-C may land inside a database call: free what the finished frames still
            # hold (a session, its connection and any lock) before marking the run.
            traceback.clear_frames(exc.__traceback__)
        for attempt in (1, 2):
            try:
                self._close_run(status, reason + hint)
                return
            except Exception as error:  # the row stays "running" until its heartbeat expires
                if attempt == 1:
                    time.sleep(0.5)
                    continue
                # Failing again for the reason the run stopped (a full disk) adds nothing to
                # the one line the user sees, which says how to continue the run.
                same = _cause(error) == _cause(exc)
                log.log(
                    logging.DEBUG if same else logging.WARNING,
                    "run %s could not be marked %s: %s",
                    self.run_id,
                    status,
                    error,
                )

    def _execute(
        self, progress: Progress | None, shard_progress: Progress | None, new: bool
    ) -> RunSummary:
        engine, campaign = self.engine, self.campaign
        engine.check_audience(campaign)  # a filter typo stops the run, naming the key
        self.summary.audience = engine.audience_size(campaign)
        if new and not self.summary.audience:
            where = f"campaign {campaign.name!r}"
            self.summary.empty = why_empty(engine.db, campaign.audience, where)
        self.ledger.pin_model(engine.champion_version(campaign))
        shards = self.effects.shards  # None: a rehearsal, never handed to a worker
        if not new:  # a finished run resumed: retries only, nobody new
            left_out = count_audience(engine.db, campaign.audience, without_run=self.run_id)
            self.summary.left_out = left_out
        elif (
            shards is not None
            and engine.settings.workers.executor != "inline"
            and (self.summary.audience > engine.settings.workers.shard_size)
        ):
            shards(self, progress, shard_progress)
            self._shard_rows = sum(getattr(self.summary, name) for name in ROW_COUNTS)
            self.ledger.recover()  # rows of shard workers that died settle now
        retry = self._reclaim_deferred(self._still_in_audience)
        self.summary.retried = len(retry)
        size = engine.settings.delivery.batch_size
        total = len(retry) + self.summary.audience
        with ExitStack() as stack:
            deliver = self._delivery(stack)
            finished = 0
            for start in range(0, len(retry), size):
                if self._paused():
                    return self.summary
                chunk = retry[start : start + size]
                people = self._still_in_audience([r.recipient_id for r in chunk])
                self._prepare_models(next(iter(people.values())))
                deliver(chunk, people)
                finished += len(chunk)
                if progress:
                    progress(finished, total)
            if not new:
                done = self.summary.audience - self.summary.left_out - self.summary.retried
                self.summary.already_done = max(done, 0)
            elif not self._send_pages(deliver, progress, finished, total):
                return self.summary
        self._close_run("finished", self.summary.empty)
        return self.summary

    def execute_shard(self, bounds: tuple[str, str | None]) -> RunSummary:
        """Send the part of an open run whose recipient ids fall in ``bounds`` (after,
        until]: a shard, run by a worker process while the run's coordinator waits.

        Idempotent through the ledger: a shard run twice (a retried or duplicated task)
        sends nobody twice, and a shard whose worker died is resumed where it stopped.
        """
        self.ledger.join()
        try:
            with ExitStack() as stack:
                self._send_pages(self._delivery(stack), None, 0, 0, bounds)
        finally:
            self.ledger.leave()
        return self.summary

    def _count_done(self, page: Sequence[Recipient], done: set[str]) -> None:
        """Add the rows of ``page`` found done to ``already_done``, except those this call
        has counted already (see ``__init__``): rows written before it began."""
        found = len({r.recipient_id for r in page} & done - self._counted)
        theirs = min(found, self._shard_rows)
        self._shard_rows -= theirs
        self.summary.already_done += found - theirs

    def _delivery(
        self, stack: ExitStack
    ) -> Callable[[Sequence[HeldRow], dict[str, Recipient]], None]:
        """A ``deliver(rows, people)`` that opens the backend and executor at its first
        call (a run with nothing to send opens neither) and closes them with ``stack``."""
        engine = self.engine
        delivery: list[Any] = []

        def deliver(rows: Sequence[HeldRow], people: dict[str, Recipient]) -> None:
            if not delivery:
                settings = engine.settings
                executor = engine.executor(settings.executor, **settings.executor_options)
                delivery.append(stack.enter_context(self.effects.backend()))
                delivery.append(stack.enter_context(executor))
            self._deliver(rows, people, *delivery)

        return deliver

    def _send_pages(
        self,
        deliver: Deliver,
        progress: Progress | None,
        finished: int,
        total: int,
        bounds: tuple[str, str | None] = ("", None),
    ) -> bool:
        """Decide and send every recipient in ``bounds`` without a row yet, one page of
        the audience in memory at a time, streamed in id order; False when paused."""
        size, stages = self.engine.settings.delivery.batch_size, self.stages
        pages = iter(self.engine.audience_pages(self.campaign, size, bounds=bounds))
        while True:
            with stages("audience"):
                page = next(pages, None)
            if page is None:
                return True
            if self._paused():
                return False
            with stages("done"):
                done = self._done_among(page)
            todo = [r for r in page if r.recipient_id not in done]
            self._count_done(page, done)
            if todo:
                self._prepare_models(todo[0])  # before the backend opens: may refuse
                rows = self._decide(todo)
                with stages("claim"):
                    owned = self._claim(rows)
                deliver(owned, {r.recipient_id: r for r in todo})
            finished += len(page)
            if progress:
                progress(finished, total)

    def _paused(self) -> bool:
        """True (and the run closed as ``paused``) when the campaign paused itself."""
        pause = active_pause(self.engine.db, self.campaign.name)
        if pause is None:
            return False
        self.summary.paused = pause.reason
        self._close_run("paused", f"campaign paused: {pause.reason}")
        log.warning(
            "run %s stopped: campaign %s is paused (%s); resume with `tailormail resume %s`",
            self.run_id,
            self.campaign.name,
            pause.reason,
            self.campaign.name,
        )
        return True

    def _close_run(self, status: str, error: str | None = None) -> None:
        self.ledger.close(status, error)
