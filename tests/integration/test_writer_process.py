"""A long run on SQLite commits its batches in a writer process: same store, same guarantees."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests._workflows import make, write_csv
from tests.conftest import counts_balance

import keel
import keel.runtime._runner  # patched below: imported here, whichever test runs first
from keel._child import usable_cores
from keel.errors import StoreError
from keel.runtime._writer import RowWriter
from keel.sources._files import read_rows
from keel.store import Store, verify_trail
from keel.store._store import BatchRows


def _rows(n: int) -> list[tuple[str, str]]:
    return [(f"k{i}", "unsure what this is" if i % 4 == 0 else f"message number {i}")
            for i in range(n)]


def test_batches_go_through_the_writer_process_and_read_back_alike(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_WRITER_PROCESS", "off")
    # one segment per record: the fake answers count as cheap however loaded the machine is
    monkeypatch.setattr(keel.runtime._runner, "DEAR_MS_PER_RECORD", 1e9)
    src = write_csv(tmp_path / "in.csv", _rows(600))
    here = Store.open(f"sqlite:///{tmp_path / 'here.db'}")
    there = Store.open(f"sqlite:///{tmp_path / 'there.db'}")
    try:
        one = keel.Runner(make(), here, batch_size=50)
        s1 = one.run(read_rows(src))
        assert one.rows_writer.batches_there == 0
        two = keel.Runner(make(), there, batch_size=50, writer_process_after=0)
        s2 = two.run(read_rows(src))
        assert two.rows_writer.batches_there == 12
        assert counts_balance(s1) and counts_balance(s2) and s1.counts == s2.counts
        for store in (here, there):
            report = verify_trail(store=store)
            assert report.ok and report.records == 600 and report.release_trails == 1
            assert report.segments == 600 + 2  # and the release history's two
        (a,), (b,) = keel.trace("k9", store=here), keel.trace("k9", store=there)
        assert a["decision"]["disposition"] == b["decision"]["disposition"] == "accepted"
        assert [e["kind"] for e in a["events"]] == [e["kind"] for e in b["events"]]
        # idempotency holds across the two writers: nothing is decided twice
        again = keel.Runner(make(), there, batch_size=50, writer_process_after=0).run(read_rows(src))
        assert again.duplicates == 600 and again.decided == 0
        assert keel.status(store=there)[0]["dispositions"]["in_review"] == 150
    finally:
        here.close()
        there.close()


def test_a_failed_write_in_the_writer_process_fails_the_run_with_the_cause(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'keel.db'}")
    try:
        keel.run(make(), write_csv(tmp_path / "in.csv", _rows(3)), store=store)
        rid = keel.trace("k1", store=store)[0]["record_id"]
        writer = RowWriter(store, after_records=0)
        clash = (rid, "tickets", "accepted", None, None, 0.9, "m", "m", "p", False, 1, 0, 1.0,
                 0.0, 1.0, None)  # a second decision for a decided record
        rows = BatchRows([], [], [clash], [], [], [], [])
        try:
            with pytest.raises(StoreError, match=r"writer process.*UNIQUE"):
                writer.write(rows)
        finally:
            writer.close()  # the child process and its files go, whatever the outcome
    finally:
        store.close()


def test_memory_and_postgresql_stores_never_start_one(pg_url: str) -> None:
    for url in ("sqlite://", pg_url):
        store = Store.open(url)
        try:
            assert RowWriter(store, after_records=0).after is None
        finally:
            store.close()


def test_a_misspelt_setting_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.errors import ConfigError

    monkeypatch.setenv("KEEL_WRITER_PROCESS", "sometimes")
    store = Store.open(f"sqlite:///{tmp_path / 'keel.db'}")
    try:
        with pytest.raises(ConfigError, match="KEEL_WRITER_PROCESS='sometimes'"):
            RowWriter(store)
    finally:
        store.close()


def test_a_process_with_one_core_keeps_its_writes_in_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The child only pays off with a second core to run on: pinned to one, a run never
    starts it unless told to (KEEL_WRITER_PROCESS=N)."""
    import os

    monkeypatch.delenv("KEEL_WRITER_PROCESS", raising=False)
    store = Store.open(f"sqlite:///{tmp_path / 'keel.db'}")
    cpus = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(cpus)})  # this thread, and what it starts
        assert RowWriter(store).after is None
        monkeypatch.setenv("KEEL_WRITER_PROCESS", "100")
        assert RowWriter(store).after == 100
    finally:
        os.sched_setaffinity(0, cpus)
        store.close()
    monkeypatch.delenv("KEEL_WRITER_PROCESS")
    if usable_cores() >= 2:  # unpinned again, on a machine with a second core
        two = Store.open(f"sqlite:///{tmp_path / 'two.db'}")
        assert RowWriter(two).after == 20_000
        two.close()
