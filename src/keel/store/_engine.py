"""Engines: SQLite (embedded default, WAL) and PostgreSQL, with their small differences."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.sql import Insert

from keel.errors import ConfigError

DEFAULT_PATH = Path(".keel") / "keel.db"


def resolve_url(url: str | None = None, *, create: bool = True) -> str:
    """An explicit URL, else ``KEEL_DB``, else SQLite at ``.keel/keel.db`` here (``create``:
    make the SQLite file's folder)."""
    url = url or os.environ.get("KEEL_DB")
    if url:
        if "://" not in url:  # a plain path means a SQLite file
            if create:
                Path(url).parent.mkdir(parents=True, exist_ok=True)
            return f"sqlite:///{Path(url).resolve()}"
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return url
    if create:
        DEFAULT_PATH.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{DEFAULT_PATH.resolve()}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache: index inserts stay in memory
    cur.execute("PRAGMA wal_autocheckpoint=8192")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str, *, create: bool = True) -> Engine:
    try:
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if create and path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        return create_engine(url, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise ConfigError(
            f"cannot use database URL {url!r}: {exc}; use e.g. sqlite:///path/keel.db or "
            "postgresql://user@host:5432/db"
        ) from exc


def insert_ignore(engine: Engine, table: Any) -> Insert:
    """INSERT that skips rows whose key exists (the checkpoint write)."""
    from sqlalchemy.dialects import postgresql, sqlite  # start-up: only when writing

    if engine.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()
