"""Alembic's schema migrations of the tailormail database (``versions/``), run by ``db.py``."""
