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
from keel.store import Store, verify_trail
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
    report = verify_trail(store=store)
    assert report.ok and report.records == 12 and report.events >= 48
    # and the workflow's release history: r1 registered, then made champion by the first run
    assert report.release_trails == 1
    assert report.segments == 24 + 2
    assert report.blocks == 6 + 2  # three batches: the answers, then the decisions
    assert len(report.root) == 64 and report.root == report.head_hash
    assert verify_trail(store=store).root == report.root  # stable while nothing changes


def test_an_edited_event_is_named_with_key_seq_and_what_changed(tmp_path: Path, store: Store) -> None:
    _decide(tmp_path, store)
    routed = _segment(store, "k3", "routed")
    forged = _forge(routed, "routed", detail={"disposition": "accepted"})
    _edit(store, routed, entries=forged)
    report = verify_trail(store=store)
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
                            int(predicted["seq"]), str(predicted["workflow"]), predicted["at"], forged,
                            predicted["digests"])
    _edit(store, predicted, entries=forged, hash=new_hash)
    report = verify_trail(store=store)
    (brk,) = report.broken
    assert (brk.key, brk.seq, brk.problem) == ("k4", predicted["seq"], "rewritten")
    assert [p["problem"] for p in report.ledger_problems] == ["block_content_changed"]


def test_a_deleted_segment_shows_as_a_gap(tmp_path: Path, store: Store) -> None:
    _decide(tmp_path, store)
    first = _segment(store, "k7", "validated")
    with store.engine.begin() as conn:
        conn.execute(text("delete from events where record_id = :r and seq = :s"),
                     {"r": first["record_id"], "s": first["seq"]})
    (brk,) = verify_trail(store=store).broken
    assert (brk.key, brk.problem) == ("k7", "seq_gap")
    assert f"seq {first['seq']}.." in brk.message


def test_a_record_whose_events_are_all_gone_is_reported(tmp_path: Path, store: Store) -> None:
    _decide(tmp_path, store)
    with store.engine.begin() as conn:
        conn.execute(text("delete from events where record_id = "
                          "(select id from records where key = 'k1')"))
    (brk,) = verify_trail(store=store).broken
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


# -- what the trail covers beyond the events (the decision, answers, input; the ledger) --------
def _sql(store: Store, statement: str, **params: Any) -> None:
    with store.engine.begin() as conn:
        conn.execute(text(statement), params)


def _record_id(store: Store, key: str) -> str:
    with store.engine.connect() as conn:
        return str(conn.execute(text("select id from records where key = :k"), {"k": key}).scalar_one())


def test_a_decision_changed_from_review_to_accepted_is_caught(tmp_path: Path, store: Store) -> None:
    _decide(tmp_path, store)
    rid = _record_id(store, "k3")  # "unsure": sent to review
    _sql(store, "update decisions set disposition = 'accepted', output = :o, confidence = 0.99 "
         "where record_id = :r", o='{"label": "long"}', r=rid)
    report = verify_trail(store=store)
    (brk,) = report.broken
    assert (brk.key, brk.problem) == ("k3", "row_changed")
    assert "decision row was edited" in brk.message


@pytest.mark.parametrize(("table", "column", "value"), [
    ("predictions", "confidence", 0.999), ("predictions", "output", '{"label": "x"}'),
    ("records", "input", '{"id": "k5", "text": "something else"}'),
])
def test_an_edited_answer_or_input_is_caught(tmp_path: Path, store: Store, table: str,
                                             column: str, value: Any) -> None:
    _decide(tmp_path, store)
    rid = _record_id(store, "k5")
    where = "record_id" if table == "predictions" else "id"
    _sql(store, f"update {table} set {column} = :v where {where} = :r", v=value, r=rid)
    (brk,) = verify_trail(store=store).broken
    assert (brk.key, brk.problem) == ("k5", "row_changed")
    name = "input" if table == "records" else "answer/primary"
    assert f"its {name} row was edited" in brk.message


def test_a_record_deleted_from_every_table_is_caught(tmp_path: Path, store: Store) -> None:
    _decide(tmp_path, store)
    rid = _record_id(store, "k2")
    for table, col in (("review_tasks", "record_id"), ("predictions", "record_id"),
                       ("decisions", "record_id"), ("events", "record_id"), ("records", "id")):
        _sql(store, f"delete from {table} where {col} = :r", r=rid)
    report = verify_trail(store=store)
    assert not report.ok and report.broken_records == 0 and report.records == 11
    assert {p["problem"] for p in report.ledger_problems} == {"block_content_changed"}


def test_a_truncated_trail_is_caught(tmp_path: Path, store: Store) -> None:
    _decide(tmp_path, store)
    routed = _segment(store, "k8", "routed")  # the record's last segment
    _sql(store, "delete from events where record_id = :r and seq = :s",
         r=routed["record_id"], s=routed["seq"])
    report = verify_trail(store=store)
    assert not report.ok
    assert {p["problem"] for p in report.ledger_problems} == {"block_content_changed"}
    (brk,) = report.broken  # the decision row is on no remaining segment
    assert (brk.key, brk.problem) == ("k8", "row_changed")


def test_recomputing_every_hash_without_the_key_is_caught(tmp_path: Path, store: Store) -> None:
    """Edit a decision, then rebuild everything a plain hash protects: the segment, the
    block's digest and its hash (with a key of the attacker's own)."""
    from keel.store._audit import AuditKey, block_digest, block_text
    from keel.store._ledger import RowDigests

    _decide(tmp_path, store)
    seg = _segment(store, "k6", "routed")
    rid = str(seg["record_id"])
    _sql(store, "update decisions set output = :o where record_id = :r", o='{"label": "x"}', r=rid)
    with store.engine.connect() as conn:
        row = conn.execute(text("select record_id, workflow, disposition, reason, output, "
                                "confidence, model_version, decided_by, policy_version, audit, "
                                "attempts, failed_attempts, latency_ms, cost_usd, decided_at, "
                                "release_id from decisions where record_id = :r"), {"r": rid}).first()
    digests = str(seg["digests"]).split(";")
    digests = ";".join(d if not d.startswith("decision=") else
                       "decision=" + RowDigests().add_decisions([tuple(row)])[rid]["decision"]
                       for d in digests)
    new_hash = segment_hash(str(seg["prev_hash"]), rid, int(seg["seq"]), str(seg["workflow"]),
                            seg["at"], str(seg["entries"]), digests)
    _edit(store, seg, digests=digests, hash=new_hash)
    block = int(seg["block"])
    with store.engine.begin() as conn:
        members = [tuple(r) for r in conn.execute(text(
            "select record_id, seq, hash from events where block = :b"), {"b": block})]
        lrow = conn.execute(text("select * from ledger where seq = :b"), {"b": block}).mappings().one()
        mallory = AuditKey(b"not the real key", "mallory")
        digest = block_digest(members)
        forged = mallory.mac(block_text(lrow["prev_hash"], block, lrow["at"], len(members),
                                        digest, lrow["key_id"]))
        conn.execute(text("update ledger set digest = :d, hash = :h where seq = :b"),
                     {"d": digest, "h": forged, "b": block})
    report = verify_trail(store=store)
    assert report.broken == []  # every per-record check now passes...
    problems = {p["problem"] for p in report.ledger_problems}
    assert "block_forged" in problems and not report.ok  # ...but the key catches it


def test_verifying_a_store_that_does_not_exist_is_an_error(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere" / "keel.db"
    res = keel_cli(capsys, "audit", "verify", "--db", str(missing))
    assert res.returncode == 1 and "there is no store at" in res.stderr
    assert not missing.exists() and not missing.parent.exists()


def test_an_anchor_proves_the_ledger_was_not_cut_short(tmp_path: Path, db_url: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    store = Store.open(db_url)
    try:
        _decide(tmp_path, store)
        anchor_file = tmp_path / "anchor.json"
        made = keel_cli(capsys, "audit", "anchor", "--db", db_url, "--out", str(anchor_file))
        assert made.returncode == 0, made.stderr
        found = json.loads(anchor_file.read_text())
        # six blocks of decisions, two of the release history (r1 registered, then champion)
        assert found["seq"] == 8 and found["records"] == 12 and len(found["signature"]) == 64
        ok = keel_cli(capsys, "audit", "verify", "--db", db_url, "--against", str(anchor_file))
        assert ok.returncode == 0 and "anchor at block 8 holds" in " ".join(ok.stdout.split())
        # Delete the last block with all it sealed and rewind the head: nothing inside the
        # store can tell...
        with store.engine.connect() as conn:
            last = conn.execute(text("select seq, prev_hash from ledger order by seq desc")).first()
            assert last is not None
            gone = [r for (r,) in conn.execute(text(
                "select distinct record_id from events where block = :b"), {"b": last[0]})]
        _sql(store, "delete from events where block = :b", b=last[0])
        for rid in gone:
            for table in ("decisions", "review_tasks"):
                _sql(store, f"delete from {table} where record_id = :r", r=rid)
        _sql(store, "delete from ledger where seq = :b", b=last[0])
        _sql(store, "update ledger_head set seq = :s, hash = :h", s=last[0] - 1, h=last[1])
        assert verify_trail(store=store).ok
        # ...but the anchor kept outside it can
        res = keel_cli(capsys, "audit", "verify", "--db", db_url, "--against", str(anchor_file),
                       "--json")
        assert res.returncode == 3
        assert "truncated" in json.loads(res.stdout)["anchor"]["problem"]
        edited = dict(found, records=99)
        anchor_file.write_text(json.dumps(edited))
        res = keel_cli(capsys, "audit", "verify", "--db", db_url, "--against", str(anchor_file),
                       "--json")
        assert "anchor file was edited" in json.loads(res.stdout)["anchor"]["problem"]
    finally:
        store.close()


def test_a_store_checked_with_another_key_says_which_key_it_needs(
        tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    _decide(tmp_path, store)
    sealed_with = verify_trail(store=store).key_id
    monkeypatch.setenv("KEEL_AUDIT_KEY", "some other key")
    report = verify_trail(store=store)
    assert not report.ok and report.unknown_keys == [sealed_with]
