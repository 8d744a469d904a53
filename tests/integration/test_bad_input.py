"""Bad input gets a clear outcome and nothing is lost (every case counts reads vs dispositions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests._workflows import make, write_csv
from tests.conftest import counts_balance

import keel
from keel.store import Store


def _run(src: Path, store: Store) -> keel.RunSummary:
    s = keel.run(make(), src, store=store)
    assert counts_balance(s), s.as_dict()
    return s


def _reasons(store: Store) -> dict[str, list[dict[str, str]]]:
    return {q["key"]: q["violations"] for q in keel.quarantined(store=store)}


def test_malformed_csv_rows_are_quarantined_with_line(tmp_path: Path, store: Store) -> None:
    src = tmp_path / "in.csv"
    src.write_text('id,text\na,fine message\nb,"two",extra\nc,another fine one\n"d,unclosed\n')
    s = _run(src, store)
    assert s.read == 4
    assert s.counts["accepted"] == 2 and s.counts["quarantined"] == 2
    reasons = _reasons(store)
    assert "in.csv#3" in reasons  # the record is named by file and line
    assert "3 fields but the header has 2" in reasons["in.csv#3"][0]["message"]


def test_missing_and_extra_fields(tmp_path: Path, store: Store) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in [
        {"id": "m1"}, {"id": "m2", "text": "ok text", "unexpected": 1}, {"text": "no id here"},
    ]) + "\n")
    s = _run(src, store)
    assert s.counts["quarantined"] == 2 and s.counts["accepted"] == 1  # extras are ignored
    reasons = _reasons(store)
    assert reasons["m1"][0] == {"field": "text", "rule": "missing",
                                "message": "required field 'text' is missing; supply a value for it"}
    assert reasons["in.jsonl#3"][0]["field"] == "id"


def test_wrong_types_and_empty_strings(tmp_path: Path, store: Store) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in [
        {"id": "w1", "text": ["a", "list"]}, {"id": "w2", "text": "x", "amount": "lots"},
        {"id": "w3", "text": ""}, {"id": "w4", "text": "fine", "amount": "12.5"},
    ]) + "\n")
    s = _run(src, store)
    assert s.counts["quarantined"] == 3 and s.counts["accepted"] == 1
    reasons = _reasons(store)
    assert reasons["w1"][0]["rule"] == "string_type"
    assert reasons["w2"][0]["field"] == "amount"
    assert reasons["w3"][0]["rule"] == "string_too_short"


def test_one_megabyte_text_field(tmp_path: Path, store: Store) -> None:
    src = write_csv(tmp_path / "in.csv", [("big", "x" * 1_000_000), ("small", "hello there")])
    s = _run(src, store)
    assert s.counts["quarantined"] == 1 and s.counts["accepted"] == 1
    (v,) = _reasons(store)["big"]
    assert v["rule"] == "string_too_long" and "5000" in v["message"]
    assert len(v["message"]) < 300  # the message quotes a snippet, not the megabyte


def test_a_field_over_the_csv_limit_is_quarantined_not_read(tmp_path: Path, store: Store,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A CSV field over keel's limit (16 MiB; lowered here) never reaches the store whole."""
    import keel.sources._files

    monkeypatch.setattr(keel.sources._files, "_MAX_FIELD", 1_000)
    src = write_csv(tmp_path / "in.csv", [("ok", "hello there"), ("huge", "y" * 1_001)])
    s = _run(src, store)
    assert s.counts["quarantined"] == 1 and s.counts["accepted"] == 1
    (v,) = _reasons(store)["in.csv#3"]
    assert v["message"] == "field 'text' is larger than 1000 bytes"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_invalid_utf8_is_quarantined_and_kept(tmp_path: Path, store: Store, suffix: str) -> None:
    src = tmp_path / f"in{suffix}"
    if suffix == ".csv":
        src.write_bytes(b"id,text\ngood,fine text\nbad,caf\xe9 au lait\n")
    else:
        src.write_bytes(b'{"id": "good", "text": "fine text"}\n{"id": "bad", "text": "caf\xe9"}\n')
    s = _run(src, store)
    assert s.counts["quarantined"] == 1 and s.counts["accepted"] == 1
    (row,) = keel.quarantined(store=store)
    assert "UTF-8" in row["violations"][0]["message"]
    assert row["input"]  # the raw row is kept for replay


@pytest.mark.parametrize("content", ["", "id,text\n"])
def test_empty_and_header_only_files(tmp_path: Path, store: Store, content: str) -> None:
    src = tmp_path / "in.csv"
    src.write_text(content)
    s = _run(src, store)
    assert s.read == 0 and s.decided == 0


def test_duplicate_keys_within_a_file_and_across_runs(tmp_path: Path, store: Store) -> None:
    src = write_csv(tmp_path / "in.csv", [("d1", "same text"), ("d2", "other"), ("d1", "same text")])
    s = _run(src, store)
    assert s.read == 3 and s.decided == 2 and s.duplicates == 1 and s.conflicts == 0
    (rec,) = keel.trace("d1", store=store)
    assert rec["input"]["text"] == "same text"
    assert "duplicate_seen" in [e["kind"] for e in rec["events"]]
    again = _run(src, store)
    assert again.decided == 0 and again.duplicates == 3


def test_a_key_reused_with_other_content_is_a_conflict_kept_with_both_versions(
        tmp_path: Path, store: Store) -> None:
    first = write_csv(tmp_path / "first.csv", [("d1", "first copy"), ("d2", "other")])
    _run(first, store)
    second = write_csv(tmp_path / "second.csv", [("d1", "second copy"), ("d2", "other"),
                                                 ("d3", "new one"), ("d3", "newer one")])
    s = _run(second, store)
    assert s.read == 4 and s.duplicates == 1 and s.conflicts == 2
    assert s.counts["quarantined"] == 2 and s.counts["accepted"] == 1  # d3's first copy
    found = {q["key"]: q for q in keel.quarantined(store=store)}
    (d1,) = [k for k in found if k.startswith("d1~conflict-")]
    (v,) = found[d1]["violations"]
    assert v["rule"] == "key_conflict" and "already belongs to record" in v["message"]
    (new,) = keel.trace(d1, store=store)
    (old,) = keel.trace("d1", store=store)
    assert new["input"]["text"] == "second copy" and old["input"]["text"] == "first copy"
    (d3,) = [k for k in found if k.startswith("d3~conflict-")]
    assert "an earlier row of this run" in found[d3]["violations"][0]["message"]
    again = _run(second, store)  # the same conflicting rows again: already decided, once
    assert again.conflicts == 0 and again.duplicates == 4 and again.decided == 0


def test_quarantined_records_replay_after_the_contract_is_fixed(tmp_path: Path, store: Store) -> None:
    src = write_csv(tmp_path / "in.csv", [("q1", "y" * 6000), ("q2", "short")])
    assert _run(src, store).counts["quarantined"] == 1
    from pydantic import BaseModel

    class Roomier(BaseModel):
        id: str
        text: str

    fixed = keel.Workflow(name="tickets", input=Roomier, output=make().output, key="id",
                          model=keel.FakeModel({"label": "long"}), owners=make().owners)
    s = keel.replay(fixed, "quarantined", store=store)
    assert s.read == 1 and s.counts["accepted"] == 1
    assert keel.quarantined(store=store) == []
    st = keel.status(store=store)[0]
    assert st["dispositions"]["quarantined"] == 0 and st["dispositions"]["accepted"] == 2


def test_parquet_input(tmp_path: Path, store: Store) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ["p1", "p2", None], "text": ["hello world", "", "x"]}), src)
    s = _run(src, store)
    assert s.read == 3 and s.counts["accepted"] == 1 and s.counts["quarantined"] == 2


def test_invalid_utf8_in_the_key_field(tmp_path: Path, store: Store) -> None:
    src = tmp_path / "in.csv"
    src.write_bytes(b"id,text\nk\xff1,some text\n")
    s = _run(src, store)
    assert s.counts["quarantined"] == 1
    (row,) = keel.quarantined(store=store)
    assert row["key"] == "k\\xff1"
