"""Storage: SQLAlchemy Core on SQLite (default) or PostgreSQL. Only this package speaks SQL."""

from keel.store._engine import resolve_url
from keel.store._store import Store

__all__ = ["Store", "resolve_url"]
