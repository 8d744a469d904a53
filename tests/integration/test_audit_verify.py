"""keel audit verify: tampering with the audit trail in SQL is found and named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from tests._cli import Result, keel_cli
from tests._workflows import make, write_csv

import keel
from keel import audit
from keel.store import Store
from keel.store._audit import segment_hash


def _decide(tmp_path: Path, store: Store, n: int = 12) -> None:
    """Two segments per record: the answer (checkpointed on its own) and the decision."""
    src = write_csv(tmp_path / "in.csv", [(f"k{i}", "unsure" if i % 3 == 0 else f"message {i}")
                                          for i in range(n)])
    keel.run(make(checkpoint="always"), src, store=store, batch_size=5)


def _segment(store: Store, key: str, kind: str) -> dict[str, Any]:
    """The stored segment holding ``key``'s event of ``kind``."""
    with store.engine.connect() as conn:
        rows = conn.execute(text(
            "select e.* from events e join records r on r.id = e.record_id "
            "where r.key = :k order by e.seq"), {"k": key}).mappings().all()
    (row,) = [dict(r) for r in rows if kind in [e["kind"] for e in json.loads(r["entries"])]]
    return row


def _edit(store: Store, seg: dict[str, Any], **values: Any) -> None:
    sets = ", ".join(f"{k} = :{k}" for k in values)
    with store.engine.begin() as conn:
        conn.execute(text(f"update events set {sets} where record_id = :r and seq = :s"),
                     {**values, "r": seg["record_id"], "s": seg["seq"]})


def _forge(seg: dict[str, Any], kind: str, **changes: Any) -> str:
    entries = json.loads(seg["entries"])
    for e in entries:
        if e["kind"] == kind:
            e.update(changes)
    return json.dumps(entries)


def test_an_untouched_trail_verifies(tmp_path: Path, store: Store) -> None:
    _decide(tmp_path, store)
    report = audit.verify(store=store)
    assert report.ok and report.records == 12 and report.events >= 48
    assert report.segments == 24
    assert len(report.root) == 64
    assert audit.verify(store=store).root == report.root  # stable while nothing changes


def test_an_edited_event_is_named_with_key_seq_and_what_changed(tmp_path: Path, store: Store) -> None:
    _decide(tmp_path, store)
    routed = _segment(store, "k3", "routed")
    forged = _forge(routed, "routed", detail={"disposition": "accepted"})
    _edit(store, routed, entries=forged)
    report = audit.verify(store=store)
    assert not report.ok and report.broken_records == 1
    (brk,) = report.broken
    assert (brk.key, brk.seq, brk.problem) == ("k3", routed["seq"], "content_changed")
    assert "entries" in brk.message
    assert brk.event["entries"] == forged


def test_a_rewrite_that_recomputes_the_hash_is_still_caught(tmp_path: Path, store: Store) -> None:
    _decide(tmp_path, store)
    predicted = _segment(store, "k4", "predicted")
    forged = _forge(predicted, "predicted", latency_ms=0.001)
    new_hash = segment_hash(str(predicted["prev_hash"]), str(predicted["record_id"]),
                            int(predicted["seq"]), str(predicted["workflow"]), predicted["at"], forged)
    _edit(store, predicted, entries=forged, hash=new_hash)
    (brk,) = audit.verify(store=store).broken
    assert (brk.key, brk.seq, brk.problem) == ("k4", predicted["seq"], "rewritten")


def test_a_deleted_segment_shows_as_a_gap(tmp_path: Path, store: Store) -> None:
    _decide(tmp_path, store)
    first = _segment(store, "k7", "validated")
    with store.engine.begin() as conn:
        conn.execute(text("delete from events where record_id = :r and seq = :s"),
                     {"r": first["record_id"], "s": first["seq"]})
    (brk,) = audit.verify(store=store).broken
    assert (brk.key, brk.problem) == ("k7", "seq_gap")
    assert f"seq {first['seq']}.." in brk.message


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
        routed = _segment(store, "k6", "routed")
        _edit(store, routed, entries=_forge(routed, "routed", actor="mallory"))
    finally:
        store.close()

    def cli(*args: str) -> Result:
        return keel_cli(capsys, "audit", "verify", "--db", db_url, *args)

    as_json = cli("--json")
    assert as_json.returncode == 3
    first = json.loads(as_json.stdout)["first_broken"]
    assert (first["key"], first["seq"], first["problem"]) == ("k6", routed["seq"], "content_changed")
    assert "mallory" in first["event"]["entries"]
    shown = cli()
    assert shown.returncode == 3
    assert "first broken link: record k6" in " ".join(shown.stdout.split())
