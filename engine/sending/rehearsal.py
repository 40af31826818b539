"""Before sending: preview a campaign's variants, mail them to a tester, or rehearse a run.

None of these touches the ledger, the runs, the events or the policy's model, whatever
executor the project's shards use. Each builds a ``CampaignRun`` with a rehearsal's side
effects (``engine.sending.rehearsal_effects``: a ledger in memory, a backend that only looks, no
shard runner), so it runs in this process and reaches neither the delivery backend nor a
worker. Previews and test sends render through the run's own render stage
(``CampaignRun.compose``) with the send id ``TEST_SEND_ID``, whose tracked links redirect
but record nothing and whose unsubscribe link unsubscribes nobody; only a test send then
opens the configured backend, with messages addressed to the tester alone. A dry run
executes the run under a run id it reports and keeps a record of what it decided
(``engine.sending.rehearsal_record``), so ``send --new-run ID`` sends the same or says what changed.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from engine.audience import personal_files
from engine.audience.forgetting import address_holder
from engine.db import session_scope
from engine.errors import TailormailError
from engine.mime import message_bytes
from engine.models import RecipientRow, RunRow
from engine.sending import rehearsal_record
from engine.sending.pipeline import CampaignRun, RunSummary, decision_id_for
from engine.sending.rehearsal_effects import Rehearsed
from engine.sending.runs import manual_run_id
from engine.tokens import TEST_SEND_ID
from engine.types import Message, Recipient, SendResult, Variant

if TYPE_CHECKING:
    from engine.app import Engine
    from engine.campaigns import Campaign

TEST_SUBJECT_PREFIX = "[test] "


class RehearsalError(TailormailError):
    """An unknown recipient or variant, or nobody to preview for."""


def _variants(campaign: Campaign, key: str | None) -> list[Variant]:
    variants = campaign.variant_list
    if key is None:
        return variants
    chosen = [v for v in variants if v.key == key]
    if not chosen:
        known = ", ".join(v.key for v in variants)
        raise RehearsalError(
            f"campaign {campaign.name!r} has no variant {key!r} (variants: {known})"
        )
    return chosen


def _recipient(engine: Engine, campaign: Campaign, recipient_id: str | None) -> Recipient:
    """The recipient to render for: the one named, else the first of the audience."""
    if recipient_id is not None:
        with session_scope(engine.db) as session:
            row = session.get(RecipientRow, recipient_id)
        if row is None:
            raise RehearsalError(
                f"unknown recipient {recipient_id!r} (no such id imported; "
                "see `tailormail import recipients FILE`)"
            )
        found = Recipient(row.id, row.email, dict(row.attributes or {}))
        return found
    for page in engine.audience_pages(campaign, page_size=1):  # one row read, not the list
        return page[0]
    raise RehearsalError(
        f"campaign {campaign.name!r} has nobody in its audience to render for; "
        "import recipients first (`tailormail import recipients FILE`)"
    )


def render_variants(
    engine: Engine,
    name: str,
    *,
    recipient_id: str | None = None,
    variant: str | None = None,
) -> list[Message]:
    """Every variant of campaign ``name`` (or only ``variant``) rendered for one recipient.

    The messages carry ``TEST_SEND_ID``: their links record nothing.
    """
    campaign = engine.campaign(name)
    variants = _variants(campaign, variant)
    person = _recipient(engine, campaign, recipient_id)
    run_id = manual_run_id(campaign.name)
    run = CampaignRun(engine, campaign, run_id, Rehearsed(run_id).effects())
    run._prepare_models(person)
    assert run.recipe is not None
    items = run.recipe.recommend(person.recipient_id, campaign.items_per_email)
    decision_id = decision_id_for(run.run_id, person.recipient_id)
    return [run.compose(person, v, items, TEST_SEND_ID, decision_id) for v in variants]


def write_preview(
    messages: Sequence[Message], directory: Path, engine: Engine | None = None
) -> list[Path]:
    """Write each message as ``<variant>.html`` and ``<variant>.eml``; return the paths.

    The files are the owner's only (0600): they hold a real recipient's address and email.
    With ``engine``, they are registered for ``forget`` under the recipient's address.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    written = []
    for message in messages:
        key = str(message.metadata["variant"])
        html, eml = directory / f"{key}.html", directory / f"{key}.eml"
        _write_private(html, message.html.encode())
        _write_private(eml, message_bytes(message))
        written += [html, eml]
        if engine is not None:
            holder = address_holder(engine, message.to_address)
            personal_files.note(engine.db, personal_files.PREVIEW, [html, eml], holder)
    return written


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)  # an older preview file may have been written 0644
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def send_test(
    engine: Engine, name: str, address: str, *, recipient_id: str | None = None
) -> list[SendResult]:
    """Send every variant once to ``address`` through the configured backend.

    Nothing is written to the ledger; the subjects start with ``[test]``.
    """
    if "@" not in address or any(c in address for c in "\r\n"):
        raise RehearsalError(f"--test-to: {address!r} is not an email address")
    rendered = render_variants(engine, name, recipient_id=recipient_id)
    messages = [
        replace(
            message,
            to_address=address,
            subject=TEST_SUBJECT_PREFIX + message.subject,
            message_id=f"<test.{message.metadata['variant']}.{message.message_id.strip('<>')}>",
        )
        for message in rendered
    ]
    with engine.make_backend() as backend:
        results = backend.send(messages)
    # A copy the backend kept (outbox) holds the person it was rendered for: registered
    # under their address, so ``forget`` finds it (its text names them only by name).
    holder = address_holder(engine, rendered[0].to_address)
    personal_files.note_copies(engine, backend, results, holder)
    return results


@dataclass
class DryRunReport:
    """What a run would do now: who would get which variant, who would be skipped and why.

    ``summary.sent`` counts the messages that would be sent; ``record`` is the rehearsal
    record that ``send --new-run <summary.run_id>`` compares with.
    """

    summary: RunSummary
    skip_reasons: Counter[str] = field(default_factory=Counter)
    would_send: list[tuple[str, str, str]] = field(default_factory=list)  # to, variant, subject
    record: Path | None = None


def dry_run(engine: Engine, name: str, run_id: str | None = None) -> DryRunReport:
    """Rehearse a new run of campaign ``name`` as ``run_id`` (default: a fresh manual id):
    what it would send, and to whom. Nothing is recorded but the rehearsal record."""
    campaign = engine.campaign(name)
    run_id = run_id or manual_run_id(campaign.name)
    with session_scope(engine.db) as session:
        existing = session.get(RunRow, run_id)
    if existing is not None:
        raise RehearsalError(
            f"run {run_id!r} already exists (campaign {existing.campaign!r}): a dry run "
            "rehearses a new run; give --new-run another id, or none for a fresh one"
        )
    rehearsed = Rehearsed(run_id)
    summary = CampaignRun(engine, campaign, run_id, rehearsed.effects()).execute()
    ledger = rehearsed.ledger
    model = ledger.model_version() or ""
    record = rehearsal_record.make_record(engine, campaign, run_id, model, ledger.choices())
    return DryRunReport(
        summary,
        ledger.skip_reasons,
        rehearsed.backend.would_send,
        rehearsal_record.save(engine, record),
    )
