"""Bytes per ledger row on PostgreSQL: a run of the sample campaign, then its table and
indexes measured after ``VACUUM FULL`` (so no dead row versions count), per row.

docs/scaling.md plans the ledger's growth from this figure.

    python bench/ledger_size.py                      # 50,000 recipients
    python bench/ledger_size.py --recipients 20000 --json size.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from campaign import CAMPAIGN, make_project, open_engine, postgres_database, seed  # noqa: E402

SIZES = """
SELECT pg_relation_size('ledger') + COALESCE(pg_relation_size(reltoastrelid), 0),
       pg_indexes_size('ledger'),
       (SELECT count(*) FROM ledger)
FROM pg_class WHERE relname = 'ledger'
"""


def measure(recipients: int) -> dict[str, float]:
    """Send the sample campaign to ``recipients`` on a fresh database; bytes per row."""
    from sqlalchemy import create_engine, text

    from engine.sending.real_run import real_run

    url, drop = postgres_database()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            make_project(root, url, "null")
            open_engine(root).close()  # creates the schema
            seed(root, recipients)
            engine = open_engine(root)
            summary = real_run(engine, engine.campaign(CAMPAIGN), "bench").execute()
            engine.close()
            if summary.sent != recipients:
                raise SystemExit(f"expected {recipients} sent, the run says {summary}")
        db = create_engine(url, isolation_level="AUTOCOMMIT")
        with db.connect() as connection:
            connection.execute(text("VACUUM FULL ledger"))
            table, indexes, rows = connection.execute(text(SIZES)).one()
        db.dispose()
    finally:
        drop()
    return {
        "rows": rows,
        "table_bytes_per_row": table / rows,
        "index_bytes_per_row": indexes / rows,
        "bytes_per_row": (table + indexes) / rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=50_000, help="audience size")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    figures = measure(args.recipients)
    for key, value in figures.items():
        print(f"ledger.{key} {value:,.0f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
