"""Exceptions that carry a message a campaign operator can act on."""

from __future__ import annotations


class TailormailError(Exception):
    """Base class for every error tailormail reports to its user."""


class ConfigError(TailormailError):
    """Bad configuration: the message names the file and the key to fix."""


class ImportFileError(TailormailError):
    """A data file could not be imported: names the file, row, column and reason."""

    def __init__(self, path: str, row: int | None, column: str | None, reason: str) -> None:
        self.path = path
        self.row = row
        self.column = column
        self.reason = reason
        where = path
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {reason}")


class TemplateError(TailormailError):
    """A campaign template failed to render: names the campaign, variant and template."""


class PluginError(TailormailError):
    """A plugin misbehaved: a duplicate registration, an unknown name, a bad answer."""


class CampaignBusyError(TailormailError):
    """A run of the campaign is being sent by a live worker: one run at a time."""


class DatabaseError(TailormailError):
    """The database cannot be used: a bad URL, a missing driver, an unreachable server."""


class TailormailWarning(UserWarning):
    """Something works but deserves the operator's attention; the CLI prints it as
    ``warning: message`` (no source line)."""
