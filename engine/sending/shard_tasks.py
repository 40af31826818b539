"""Shard tasks: what a run's coordinator may ask a worker, signed, and how a worker checks it.

A task names the run, its campaign, the shard's id range, the run's pinned model version
and a fingerprint of what coordinator and worker must share (the delivery backend's name,
the database URL without its password, the plugins with their versions). It names nothing
that grants power: the worker builds its engine from its own project directory and
environment, never from a task. Every task carries a MAC (HMAC-SHA256 under a key derived
from the project secret for this purpose only) over all its other fields, and is valid
only while its run is open in the database (running, its workers heard from within
``delivery.lease_seconds``), never until a wall-clock expiry: a large run's queued shards
stay valid as long as the run goes on. Anything else is refused with ``ShardRefused``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlmodel import col

from engine.db import session_scope
from engine.errors import TailormailError
from engine.models import RunRow, as_utc, utcnow

if TYPE_CHECKING:
    from engine.app import Engine

TASK_VERSION = 1
_PURPOSE = b"tailormail shard task v1"  # this key signs shard tasks and nothing else
_OPTIONAL: tuple[type, ...] = (str, type(None))
_TEXT: dict[str, type | tuple[type, ...]] = {
    "run": str,
    "campaign": str,
    "after": str,
    "until": _OPTIONAL,
    "model_version": _OPTIONAL,
}
_FIELDS = {"v", *_TEXT, "fingerprint", "mac"}
_MAX_TEXT = 1000  # ids and names; a task is small


class ShardRefused(TailormailError):
    """A worker refused a shard task (the message says why); it is never retried."""


@dataclass(frozen=True)
class ShardTask:
    """A verified task: the part of which run to send."""

    run_id: str
    campaign: str
    after: str
    until: str | None
    model_version: str | None


def fingerprint(engine: Engine) -> dict[str, Any]:
    """What must be the same in a run's coordinator and its workers, revealing no secret."""
    url = make_url(engine.settings.resolved_database_url).set(password=None)
    return {
        "backend": engine.settings.delivery.backend,
        "database": url.render_as_string(hide_password=False),
        "plugins": _plugin_versions(engine),
    }


def _plugin_versions(engine: Engine) -> list[str]:
    """``name==version`` for every plugin the engine loaded (built-ins: tailormail's)."""
    dists = {id(plugin): dist for plugin, dist in engine.pm.list_plugin_distinfo()}
    try:
        own = metadata.version("tailormail")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        own = "unknown"
    found = []
    for name, plugin in engine.pm.list_name_plugin():
        if plugin is None:  # blocked by disabled_plugins
            continue
        dist = dists.get(id(plugin))
        version = dist.version if dist else own if name.startswith("plugins.") else "-"
        found.append(f"{name}=={version}")
    return sorted(found)


def _key(secret: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_PURPOSE).derive(secret)


def _mac(secret: bytes, body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hmac.new(_key(secret), canonical.encode("ascii"), hashlib.sha256).hexdigest()


def sign_task(engine: Engine, shard: ShardTask) -> dict[str, Any]:
    """The task for ``shard`` of a run ``engine`` coordinates, as plain JSON with its MAC."""
    body: dict[str, Any] = {
        "v": TASK_VERSION,
        "run": shard.run_id,
        "campaign": shard.campaign,
        "after": shard.after,
        "until": shard.until,
        "model_version": shard.model_version,
        "fingerprint": fingerprint(engine),
    }
    return body | {"mac": _mac(engine.secret, body)}


def verify_task(engine: Engine, task: object) -> ShardTask:
    """The shard ``task`` names, if it was signed with this project's secret, matches
    this worker and its run is open in the database; else ``ShardRefused`` naming why."""
    shard = _authentic(engine, task)
    _check_fingerprint(engine, task)  # type: ignore[arg-type]  # a dict: checked above
    _check_run(engine, shard)
    return shard


def _authentic(engine: Engine, task: object) -> ShardTask:
    if not isinstance(task, dict):
        raise ShardRefused(f"malformed task: expected a signed object, got {type(task).__name__}")
    if "mac" not in task:
        raise ShardRefused("the task carries no MAC: it was not sent by a coordinator")
    extra = sorted(str(k)[:40] for k in set(task) - _FIELDS)
    missing = sorted(_FIELDS - set(task))
    if extra or missing:
        wrong = [
            f"{what} fields {names}"
            for what, names in (("unexpected", extra), ("missing", missing))
            if names
        ]
        raise ShardRefused(f"malformed task: {', '.join(wrong)}")
    for name, kind in _TEXT.items():
        value = task[name]
        if not isinstance(value, kind) or (isinstance(value, str) and len(value) > _MAX_TEXT):
            raise ShardRefused(f"malformed task: field {name!r} is not a short string")
    mac = task["mac"]
    body = {k: v for k, v in task.items() if k != "mac"}
    if not isinstance(mac, str) or not hmac.compare_digest(mac, _mac(engine.secret, body)):
        raise ShardRefused(
            "the task's MAC does not verify: it was forged or altered, or the coordinator's "
            "secret differs from this worker's (give every process of a project the same "
            "TAILORMAIL_SECRET or secret file)"
        )
    if task["v"] != TASK_VERSION:
        raise ShardRefused(f"task version {task['v']!r}: this worker reads {TASK_VERSION}")
    fields = (task[name] for name in ("run", "campaign", "after", "until", "model_version"))
    return ShardTask(*fields)


def _check_fingerprint(engine: Engine, task: dict[str, Any]) -> None:
    theirs, ours = task["fingerprint"], fingerprint(engine)
    if not isinstance(theirs, dict):
        raise ShardRefused("malformed task: its fingerprint is not an object")
    for name in ("backend", "database"):
        if theirs.get(name) != ours[name]:
            raise ShardRefused(
                f"the coordinator's {name} ({theirs.get(name)!r}) differs from this "
                f"worker's ({ours[name]!r}): give every process of a project the same settings"
            )
    if theirs.get("plugins") != ours["plugins"]:
        listed = theirs.get("plugins")
        coordinator = {str(p) for p in listed} if isinstance(listed, list) else set()
        worker = set(ours["plugins"])
        only_there, only_here = sorted(coordinator - worker)[:5], sorted(worker - coordinator)[:5]
        raise ShardRefused(
            f"the coordinator's plugins differ from this worker's (only the coordinator: "
            f"{only_there}; only this worker: {only_here}): install the same plugins and "
            "versions everywhere"
        )


def _check_run(engine: Engine, shard: ShardTask) -> None:
    """``ShardRefused`` unless the run is running, heard from lately, as the task says."""
    with session_scope(engine.db) as session:
        row = session.execute(
            select(
                col(RunRow.campaign),
                col(RunRow.status),
                col(RunRow.heartbeat_at),
                col(RunRow.model_version),
            ).where(col(RunRow.id) == shard.run_id)
        ).first()
    run = f"run {shard.run_id!r}"
    if row is None:
        raise ShardRefused(f"{run} does not exist in this worker's database")
    campaign, status, beat, pinned = row
    if status != "running":
        raise ShardRefused(f"{run} is {status}, not running: its shards are over")
    lease = engine.settings.delivery.lease_seconds
    ago = (utcnow() - as_utc(beat)).total_seconds() if beat is not None else None
    if ago is None or ago >= lease:
        heard = "never" if ago is None else f"{ago:.0f} s ago"
        raise ShardRefused(
            f"{run} was last heard from {heard} (delivery.lease_seconds = {lease}): its "
            f"coordinator is gone; resume it with `tailormail send {campaign} --run {shard.run_id}`"
        )
    if campaign != shard.campaign:
        raise ShardRefused(f"{run} is a run of campaign {campaign!r}, not {shard.campaign!r}")
    if pinned != shard.model_version:
        raise ShardRefused(f"{run} pinned model {pinned!r}, the task names {shard.model_version!r}")
