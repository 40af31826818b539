"""A project's settings and database, without the rest of the Engine.

A command that only reads what was recorded (``tailormail runs``) needs no plugins, no
templates and no policy: it opens a ``Store``. The checks that protect the data still run
as they do for the Engine: the settings are read and checked, a lost secret file of a
database that holds sends stops the command with its restore hint, and the database is
migrated (or refused) as the Engine would. The campaigns' files are read when a campaign
is named. What the Engine checks beyond that (plugins, templates, policies, backends) is
not, so a broken template does not hide the history of the runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine as SAEngine

from engine.db import make_db
from engine.project_secret import load_project_secret
from engine.settings import Settings, load_settings

if TYPE_CHECKING:
    from engine.campaigns import Campaign


class Store:
    """What a read-only command opens: ``settings`` and ``db``, and its campaigns by name."""

    def __init__(
        self, project_dir: Path | None = None, overrides: dict[str, Any] | None = None
    ) -> None:
        self.settings: Settings = load_settings(project_dir, overrides=overrides)
        load_project_secret(self.settings)  # a lost secret stops every command alike
        self.db: SAEngine = make_db(self.settings.resolved_database_url)

    def campaign(self, name: str) -> Campaign:
        """The campaign called ``name``; an unknown name lists the configured ones."""
        # lazy: the campaigns' models (pydantic, cron triggers) load only when one is named
        from engine.campaigns import find_campaign, load_campaigns

        campaigns = load_campaigns(self.settings.path(self.settings.campaigns_dir))
        return find_campaign(campaigns, name)

    def close(self) -> None:
        """Release the database connections."""
        self.db.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
