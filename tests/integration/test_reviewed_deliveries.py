"""A decision a person changes after a sink received it reaches the sink too: `keel
deliveries retry` or the next run with the sink sends it, once, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests._loopback import serve
from tests._workflows import make, write_csv
from tests.integration.test_webhook import Receiver, hook

import keel
from keel.cli import main
from keel.review import ReviewQueue
from keel.store import Store


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _task(store: Store, key: str) -> str:
    (task,) = [t for t in ReviewQueue(store).list() if t["key"] == key]
    return str(task["id"])


def test_a_reviewed_decision_is_sent_to_the_sinks_that_had_the_first(
        tmp_path: Path, store: Store, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "decisions.jsonl"
    rows = [("k0", "unsure which"), ("k1", "a plain message"), ("k2", "unsure again")]
    rx = Receiver()
    with serve(rx) as (url, seen):
        s = keel.run(make(), write_csv(tmp_path / "in.csv", rows), store=store, out=out,
                     webhook=hook(url))
        assert s.delivered == 6 and s.updates_delivered == 0
        assert [line["disposition"] for line in _lines(out)] == ["in_review", "accepted",
                                                                 "in_review"]
        ReviewQueue(store).decide(_task(store, "k0"), "dana", "correct", {"label": "billing"})

        capsys.readouterr()
        assert main(["deliveries", "--failed", "--json", "--db", db_url]) == 0
        owed = json.loads(capsys.readouterr().out)
        assert sorted((d["key"], d["status"]) for d in owed) == [("k0", "pending")] * 2
        assert main(["deliveries", "--failed", "--db", db_url]) == 0
        table = capsys.readouterr().out
        assert table.count("pending") == 2 and "changed by review" in table

        assert main(["deliveries", "retry", "--db", db_url]) == 0
        said = capsys.readouterr().out
        assert said.count("1 sent, 1 delivered, 0 still dead") == 2
        # the file gets the new decision appended; the first line stays as it was
        lines = _lines(out)
        assert [(x["key"], x["disposition"]) for x in lines] == [
            ("k0", "in_review"), ("k1", "accepted"), ("k2", "in_review"), ("k0", "reviewed")]
        assert lines[-1]["output"] == {"label": "billing"}
        # the webhook receiver gets it under a new Idempotency-Key (its content changed)
        assert len(seen) == 4 and len(rx.by_key) == 4
        assert rx.keys() == ["k0", "k0", "k1", "k2"]
        assert seen[-1].json()["disposition"] == "reviewed"
        assert seen[-1].json()["output"] == {"label": "billing"}

        # nothing is owed twice
        assert main(["deliveries", "retry", "--db", db_url]) == 0
        assert capsys.readouterr().out.count("0 sent") == 2

        # a rejection, caught up by the next run with the same sinks, beside its new records
        ReviewQueue(store).decide(_task(store, "k2"), "dana", "reject", reason="spam")
        s2 = keel.run(make(), write_csv(tmp_path / "more.csv", [("k3", "a new message")]),
                      store=store, out=out, webhook=hook(url))
    assert s2.updates_delivered == 2 and s2.delivered == 4  # k2's change and k3, to both sinks
    k2, k3 = _lines(out)[-2:]
    assert (k2["key"], k2["disposition"], k2["output"]) == ("k2", "reviewed", None)
    assert "reject by dana: spam" in str(k2["reason"])
    assert (k3["key"], k3["disposition"]) == ("k3", "accepted")
    assert [r.json()["key"] for r in seen[4:]] == ["k2", "k3"]
    statuses = {r["status"] for r in keel.deliveries(store=store)}
    assert statuses == {"delivered"}


def test_a_csv_sink_gets_the_reviewed_line_in_its_own_columns(
        tmp_path: Path, store: Store) -> None:
    out = tmp_path / "decisions.csv"
    keel.run(make(), write_csv(tmp_path / "in.csv", [("k0", "unsure which"), ("k1", "fine one")]),
             store=store, out=out)
    ReviewQueue(store).decide(_task(store, "k0"), "dana", "correct", {"label": "billing"})
    done = keel.retry_deliveries(store=store)
    assert done["sinks"][0]["delivered"] == 1
    text = out.read_text().splitlines()
    assert text[0].split(",")[-1] == "output.label" and len(text) == 4
    assert text[-1].startswith("k0,") and ",reviewed," in text[-1]
    assert text[-1].endswith(",billing")
