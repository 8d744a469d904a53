"""Shared fixtures: a store on SQLite (a real file) and on PostgreSQL (a private schema)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

import keel
from keel.store import Store

PG_URL = os.environ.get("KEEL_TEST_POSTGRES", "postgresql+psycopg://root@127.0.0.1:5432/test")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "support_triage"


def _pg_available() -> bool:
    engine = create_engine(PG_URL)
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


_PG = _pg_available()
_REQUIRE_PG = os.environ.get("KEEL_REQUIRE_POSTGRES") == "1"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    if not _PG:
        if _REQUIRE_PG:
            pytest.fail(f"PostgreSQL is required (KEEL_REQUIRE_POSTGRES=1) but {PG_URL} is down")
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}")
    schema = f"keel_test_{uuid.uuid4().hex[:10]}"
    engine = create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs twice: on a SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'keel.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    st = Store.open(db_url)
    yield st
    st.close()


@pytest.fixture(autouse=True)
def _workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own directory, so .keel/ never leaks between tests, and its
    audit key comes from its own config folder (created on first write, as for a user)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KEEL_DB", raising=False)
    monkeypatch.delenv("KEEL_AUDIT_KEY", raising=False)
    monkeypatch.delenv("KEEL_AUDIT_KEY_FILE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One trained demo model per test session."""
    path = Path(os.environ.get("KEEL_TEST_ARTIFACTS", tmp_path_factory.mktemp("artifacts")))
    return path


@pytest.fixture
def demo_env(artifacts_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KEEL_ARTIFACTS", str(artifacts_dir))
    return EXAMPLE


def counts_balance(summary: keel.RunSummary) -> bool:
    """Nothing lost: every record read ended in one disposition or was already decided."""
    return summary.read == summary.decided + summary.duplicates
