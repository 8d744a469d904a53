"""Alembic environment for keel's store: run with a connection passed in by keel."""

from __future__ import annotations

from alembic import context

from keel.store._migrate import VERSION_TABLE
from keel.store._schema import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - keel always passes its own connection
    raise RuntimeError("keel migrations run through keel.store.open_store()")
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
