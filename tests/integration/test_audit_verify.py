"""keel audit verify: tampering with the event trail in SQL is found and named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text
from tests._cli import Result, keel_cli
from tests._workflows import make, write_csv

import keel
from keel import audit
from keel.store import Store
from keel.store._audit import event_hash


def _decide(tmp_path: Path, store: Store, n: int = 12) -> None:
    src = write_csv(tmp_path / "in.csv", [(f"k{i}", "unsure" if i % 3 == 0 else f"message {i}")
                                          for i in range(n)])
    keel.run(make(), src, store=store, batch_size=5)


def _event(store: Store, key: str, kind: str) -> dict[str, object]:
    with store.engine.connect() as conn:
        row = conn.execute(text(
            "select e.* from events e join records r on r.id = e.record_id "
            "where r.key = :k and e.kind = :kind"), {"k": key, "kind": kind}).mappings().one()
    return dict(row)


def test_an_untouched_trail_verifies(tmp_path: Path, store: Store) -> None:
    _decide(tmp_path, store)
    report = audit.verify(store=store)
    assert report.ok and report.records == 12 and report.events >= 48
    assert len(report.root) == 64
    assert audit.verify(store=store).root == report.root  # stable while nothing changes


def test_an_edited_event_is_named_with_key_seq_and_what_changed(tmp_path: Path, store: Store) -> None:
    _decide(tmp_path, store)
    routed = _event(store, "k3", "routed")
    forged = json.loads(str(routed["detail"]))
    forged["disposition"] = "accepted"
    with store.engine.begin() as conn:
        conn.execute(text("update events set detail = :d where id = :i"),
                     {"d": json.dumps(forged), "i": routed["id"]})
    report = audit.verify(store=store)
    assert not report.ok and report.broken_records == 1
    (brk,) = report.broken
    assert (brk.key, brk.seq, brk.problem) == ("k3", routed["seq"], "content_changed")
    assert "detail" in brk.message
    assert brk.event["detail"] == json.dumps(forged)


def test_a_rewrite_that_recomputes_the_hash_is_still_caught(tmp_path: Path, store: Store) -> None:
    _decide(tmp_path, store)
    predicted = _event(store, "k4", "predicted")
    row = {**predicted, "cost_usd": 0.0, "latency_ms": 0.001}
    new_hash = event_hash(str(predicted["prev_hash"]), row)
    with store.engine.begin() as conn:
        conn.execute(text("update events set latency_ms = 0.001, hash = :h where id = :i"),
                     {"h": new_hash, "i": predicted["id"]})
    (brk,) = audit.verify(store=store).broken
    assert (brk.key, brk.seq, brk.problem) == ("k4", predicted["seq"], "rewritten")


def test_a_deleted_event_shows_as_a_gap(tmp_path: Path, store: Store) -> None:
    _decide(tmp_path, store)
    validated = _event(store, "k7", "validated")
    with store.engine.begin() as conn:
        conn.execute(text("delete from events where id = :i"), {"i": validated["id"]})
    (brk,) = audit.verify(store=store).broken
    assert (brk.key, brk.problem) == ("k7", "seq_gap")
    assert f"seq {validated['seq']}.." in brk.message


def test_a_record_whose_events_are_all_gone_is_reported(tmp_path: Path, store: Store) -> None:
    _decide(tmp_path, store)
    with store.engine.begin() as conn:
        conn.execute(text("delete from events where record_id = "
                          "(select id from records where key = 'k1')"))
    (brk,) = audit.verify(store=store).broken
    assert (brk.key, brk.problem) == ("k1", "chain_missing")


def test_cli_exits_3_and_prints_the_first_broken_link(tmp_path: Path, db_url: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    store = Store.open(db_url)
    try:
        _decide(tmp_path, store)
        routed = _event(store, "k6", "routed")
        with store.engine.begin() as conn:
            conn.execute(text("update events set actor = 'mallory' where id = :i"), {"i": routed["id"]})
    finally:
        store.close()

    def cli(*args: str) -> Result:
        return keel_cli(capsys, "audit", "verify", "--db", db_url, *args)

    as_json = cli("--json")
    assert as_json.returncode == 3
    first = json.loads(as_json.stdout)["first_broken"]
    assert (first["key"], first["seq"], first["problem"]) == ("k6", routed["seq"], "content_changed")
    assert first["event"]["actor"] == "mallory"
    shown = cli()
    assert shown.returncode == 3
    assert "first broken link: record k6" in " ".join(shown.stdout.split())
