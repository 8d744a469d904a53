"""The store: migrations from empty, and round trips, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect
from tests._workflows import make, write_csv

import keel
from keel.store import Store
from keel.store._schema import metadata


def test_migrations_build_every_table_from_empty(db_url: str) -> None:
    st_ = Store.open(db_url)
    try:
        names = set(inspect(st_.engine).get_table_names())
        assert {t.name for t in metadata.sorted_tables} <= names
        assert "keel_schema_version" in names
    finally:
        st_.close()
    Store.open(db_url).close()  # opening again is a no-op upgrade


texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                min_size=1, max_size=200).filter(lambda s: s.strip() != "")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts)
def test_any_text_round_trips_through_the_store(tmp_path: Path, store: Store, text: str) -> None:
    import uuid

    key = uuid.uuid4().hex
    src = write_csv(tmp_path / f"{key}.csv", [(key, text)])
    keel.run(make(keel.FakeModel(lambda m: {"label": m.text})), src, store=store)
    (rec,) = keel.trace(key, store=store)
    assert rec["decision"]["disposition"] == "accepted", rec["events"]
    assert rec["input"]["text"] == text
    assert rec["decision"]["output"] == {"label": text}


def test_upgrading_carries_event_rows_into_hash_chained_segments(db_url: str) -> None:
    """A store written before audit segments keeps every event, in order, on a valid chain."""
    from alembic import command
    from sqlalchemy import create_engine, text

    from keel.store import verify_trail
    from keel.store._migrate import alembic_config

    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            for head in ("0002_review", "0002_serve"):
                command.upgrade(alembic_config(conn), head)
            conn.execute(text("insert into records (id, workflow, key, input, source, created_at) "
                              "values ('r1', 'tickets', 'k1', '{}', 'in.csv:2', 1.0)"))
            for seq, kind in enumerate(("received", "validated", "predicted", "routed"), 1):
                conn.execute(text(
                    "insert into events (record_id, workflow, seq, kind, at, model_version, detail,"
                    " prev_hash, hash) values ('r1', 'tickets', :seq, :kind, :at, :mv, :detail,"
                    " 'old', 'old')"), {"seq": seq, "kind": kind, "at": 1.0 + seq,
                                        "mv": "m-1" if kind == "predicted" else None,
                                        "detail": f'{{"n": {seq}}}'})
    finally:
        engine.dispose()
    st_ = Store.open(db_url)
    try:
        (rec,) = keel.trace("k1", store=st_)
        assert [(e["kind"], e["detail"], e["segment"]) for e in rec["events"]] == [
            ("received", {"n": 1}, 1), ("validated", {"n": 2}, 2), ("predicted", {"n": 3}, 3),
            ("routed", {"n": 4}, 4), ("sealed", {"by": "migration 0004_ledger"}, 5)]
        assert rec["events"][2]["model_version"] == "m-1"
        report = verify_trail(store=st_)
        assert report.ok and (report.records, report.segments, report.events) == (1, 5, 5)
        assert report.blocks == 1  # migration 0004 sealed the store as it found it
    finally:
        st_.close()


def test_a_write_transaction_that_reads_first_survives_another_process_committing(
        tmp_path: Path) -> None:
    """Two writers on one SQLite file (a writer process, a second keel): a transaction that
    reads before it writes holds the write lock from its start, so it cannot lose it."""
    import sqlite3

    from sqlalchemy import text

    path = tmp_path / "keel.db"
    store = Store.open(f"sqlite:///{path}")
    other = sqlite3.connect(path, timeout=0.2)
    try:
        with store.tx() as conn:
            conn.execute(text("select count(*) from workflows")).scalar_one()
            try:  # the other writer must wait its turn (here: gives up after 0.2 s)
                other.execute("insert into runs (id, workflow, kind, started_at) "
                              "values ('x', 'w', 'run', 1.0)")
                other.commit()
                raced = True
            except sqlite3.OperationalError:
                raced = False
            conn.execute(text("insert into runs (id, workflow, kind, started_at) "
                              "values ('y', 'w', 'run', 1.0)"))
        assert not raced
        with store.engine.connect() as conn:
            assert conn.execute(text("select id from runs")).scalars().all() == ["y"]
    finally:
        other.close()
        store.close()
