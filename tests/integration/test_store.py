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
