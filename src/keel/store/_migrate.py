"""Run the numbered Alembic migrations shipped inside the package."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"

#: The newest revision(s). A store already there opens without importing Alembic (a third of
#: a second of start-up for every command); tests/unit/test_migrations_head.py keeps this in
#: step with the migration files.
HEADS = frozenset({"0009_limits"})
#: Where Alembic keeps the revisions a store is at (migrations/env.py)
VERSION_TABLE = "keel_schema_version"


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config  # start-up: only when the schema must change

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def current_heads(connection: Connection) -> frozenset[str]:
    """The revisions a store is at (empty for a new database)."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return frozenset()
    return frozenset(r for (r,) in connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")))


def upgrade(connection: Connection) -> None:
    """Bring the schema to the newest version (every head, so feature branches compose)."""
    if current_heads(connection) == HEADS:
        return
    from alembic import command  # start-up: only when the schema must change

    command.upgrade(alembic_config(connection), "heads")
