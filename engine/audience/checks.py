"""What the rows of one import must agree on, with each other and with the database.

* An id appears once per file.
* An address belongs to one recipient: two rows (or a row and a stored recipient) with
  the same address in any case are an error naming both, so nobody is mailed twice.
* An interaction naming a recipient or an item that is not imported is counted and
  reported (recipes may still learn from it); ``strict`` rejects the file instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, func, select
from sqlmodel import Session

from engine.addresses import address_key
from engine.errors import ImportFileError

EXAMPLES = 5
_IN_BATCH = 500  # ids per IN (...) list


@dataclass(frozen=True)
class UnknownReferences:
    """Interactions naming ids that are not imported: rows counted, a few ids shown."""

    column: str  # "user_id" or "item_id"
    rows: int
    ids: int
    examples: tuple[str, ...]

    def describe(self) -> str:
        """``3 interactions name recipients that are not imported (u9, u10)``."""
        what = "recipients" if self.column == "user_id" else "items"
        shown = ", ".join(self.examples) + (", ..." if self.ids > len(self.examples) else "")
        plural = "s" if self.rows != 1 else ""
        return f"{self.rows} interaction{plural} name {what} that are not imported ({shown})"


@dataclass
class RowChecks:
    """Checks fed every row of one file as it streams by (``see``), then the database."""

    name: str
    first_id: dict[str, int] = field(default_factory=dict)
    first_address: dict[str, tuple[int, str]] = field(default_factory=dict)
    references: dict[str, Counter[str]] = field(
        default_factory=lambda: {"user_id": Counter(), "item_id": Counter()}
    )
    first_reference: dict[tuple[str, str], int] = field(default_factory=dict)

    def see(self, row: int, values: dict[str, Any]) -> None:
        """Check one converted row against the rows before it in this file."""
        if "id" in values:
            key = values["id"]
            if key in self.first_id:
                reason = f"{key!r} appears twice in this file (first at row {self.first_id[key]})"
                raise ImportFileError(self.name, row, "id", reason)
            self.first_id[key] = row
        if "email" in values:
            address = address_key(values["email"])
            seen = self.first_address.get(address)
            if seen is not None:
                reason = (
                    f"{values['email']!r} is also the address of row {seen[0]} "
                    f"(recipient {seen[1]!r}); addresses are compared without case"
                )
                raise ImportFileError(self.name, row, "email", reason)
            self.first_address[address] = (row, values["id"])
        if "user_id" in values:
            for column in ("user_id", "item_id"):
                self.references[column][values[column]] += 1
                self.first_reference.setdefault((column, values[column]), row)

    def check_addresses(self, session: Session, table: Table, chunk: list[dict[str, Any]]) -> None:
        """A chunk's address held by another stored recipient (in any case) is an error."""
        wanted = {address_key(values["email"]): values for values in chunk}
        for batch in _batches(list(wanted)):
            stmt = select(table.c.id, table.c.email).where(func.lower(table.c.email).in_(batch))
            for stored_id, stored_email in session.execute(stmt):
                values = wanted[address_key(stored_email)]
                if stored_id != values["id"]:
                    row = self.first_address[address_key(stored_email)][0]
                    reason = (
                        f"{values['email']!r} is already the address of recipient "
                        f"{stored_id!r}; addresses are compared without case"
                    )
                    raise ImportFileError(self.name, row, "email", reason)

    def unknown(
        self, session: Session, recipients: Table, items: Table, *, strict: bool
    ) -> list[UnknownReferences]:
        """The interactions' references to ids not stored; with ``strict`` the first one
        is an ``ImportFileError`` naming its row."""
        found = []
        for column, table in (("user_id", recipients), ("item_id", items)):
            counts = self.references[column]
            known: set[str] = set()
            for batch in _batches(list(counts)):
                known.update(session.scalars(select(table.c.id).where(table.c.id.in_(batch))))
            missing = [key for key in counts if key not in known]
            if not missing:
                continue
            report = UnknownReferences(
                column,
                sum(counts[key] for key in missing),
                len(missing),
                tuple(missing[:EXAMPLES]),
            )
            if strict:
                first = min(missing, key=lambda key: self.first_reference[(column, key)])
                row = self.first_reference[(column, first)]
                what = "recipient" if column == "user_id" else "item"
                reason = f"names {what} {first!r}, which is not imported ({report.describe()})"
                raise ImportFileError(self.name, row, column, reason)
            found.append(report)
        return found


def _batches(keys: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(keys), _IN_BATCH):
        yield keys[start : start + _IN_BATCH]
