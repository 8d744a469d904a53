"""The store's quick "already migrated" check knows the newest migration."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from keel.store._migrate import HEADS, alembic_config


def test_heads_constant_matches_the_migration_files() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert frozenset(script.get_heads()) == HEADS
