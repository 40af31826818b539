"""A project's settings, campaigns and database, without the rest of the Engine.

A command that only reads what was recorded (``tailormail runs``) needs no plugins, no
templates and no policy: it opens a ``Store``. The checks that protect the data still run
as they do for the Engine: the settings and the campaigns' files are read and checked, a
lost secret file of a database that holds sends stops the command with its restore hint,
and the database is migrated (or refused) as the Engine would. What the Engine checks
beyond that (plugins, templates, policies, backends) is not, so a broken template does
not hide the history of the runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine as SAEngine

from engine.campaigns import Campaign, find_campaign, load_campaigns
from engine.db import make_db
from engine.project_secret import load_project_secret
from engine.settings import Settings, load_settings


class Store:
    """What a read-only command opens: ``settings``, ``campaigns`` and ``db``."""

    def __init__(
        self, project_dir: Path | None = None, overrides: dict[str, Any] | None = None
    ) -> None:
        self.settings: Settings = load_settings(project_dir, overrides=overrides)
        self.campaigns: dict[str, Campaign] = load_campaigns(
            self.settings.path(self.settings.campaigns_dir)
        )
        load_project_secret(self.settings)  # a lost secret stops every command alike
        self.db: SAEngine = make_db(self.settings.resolved_database_url)

    def campaign(self, name: str) -> Campaign:
        """The campaign called ``name``; an unknown name lists the configured ones."""
        return find_campaign(self.campaigns, name)

    def close(self) -> None:
        """Release the database connections."""
        self.db.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
