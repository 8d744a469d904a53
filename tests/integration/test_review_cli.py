"""keel review list / decide / show / escalate, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests._workflows import write_csv, write_workflow

import keel
from keel.cli import main


def _seed(tmp_path: Path, db_url: str) -> None:
    wf = write_workflow(tmp_path)
    rows = [("c1", "unsure which"), ("c2", "a long plain message"), ("c3", "unsure again")]
    keel.run(wf, write_csv(tmp_path / "in.csv", rows), db=db_url)


def _list(db_url: str, capsys: pytest.CaptureFixture[str], *extra: str) -> list[dict]:  # type: ignore[type-arg]
    capsys.readouterr()
    assert main(["review", "list", "--json", "--db", db_url, *extra]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_list_and_decide(tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    _seed(tmp_path, db_url)
    tasks = sorted(_list(db_url, capsys), key=lambda t: t["key"])
    assert [t["key"] for t in tasks] == ["c1", "c3"]
    assert main(["review", "list", "--db", db_url]) == 0
    table = capsys.readouterr().out
    # On an 80-column terminal (capsys is not a terminal: Rich's default width) every task
    # id shows whole, ready to copy into `decide`, beside its reason.
    assert all(t["id"] in table for t in tasks)
    assert "low_confidence" in table and "c3" in table and "0.300" in table
    assert table.startswith("tickets: open review tasks")  # one workflow: named once

    assert main(["review", "decide", tasks[0]["id"], "--accept", "--reviewer", "dana",
                 "--db", db_url]) == 0
    assert "accept by dana" in capsys.readouterr().out
    assert main(["review", "decide", tasks[1]["id"], "--correct", '{"label": "short"}',
                 "--reviewer", "dana", "--db", db_url]) == 0
    assert _list(db_url, capsys) == []
    decided = _list(db_url, capsys, "--status", "decided")
    assert {t["decision"] for t in decided} == {"accept", "correct"}
    (rec,) = keel.trace("c3", db=db_url)
    assert rec["decision"]["disposition"] == "reviewed"
    assert rec["decision"]["output"] == {"label": "short"}
    assert rec["events"][-1]["actor"] == "dana"


def test_user_mistakes_exit_1_with_a_message(tmp_path: Path, db_url: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    _seed(tmp_path, db_url)
    tid = _list(db_url, capsys)[0]["id"]
    cases = [
        (["--accept", "--reject", "x"], "exactly one of"),
        (["--correct", "{not json"], "JSON object"),
        (["--correct", '{"label": 3}'], "output contract"),
        (["--reject", ""], "reason"),
    ]
    for args, message in cases:
        assert main(["review", "decide", tid, *args, "--db", db_url]) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert main(["review", "decide", "no-such-task", "--accept", "--db", db_url]) == 1
    assert "no review task" in capsys.readouterr().err
    assert _list(db_url, capsys)[0]["status"] == "open"


def test_show_and_reject(tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    _seed(tmp_path, db_url)
    tid = next(t["id"] for t in _list(db_url, capsys) if t["key"] == "c1")
    assert main(["review", "show", tid, "--db", db_url]) == 0
    shown = capsys.readouterr().out
    assert "unsure which" in shown and "0.300" in shown and "not confident" in shown
    assert main(["review", "decide", tid, "--reject", "not a real ticket", "--reviewer", "eve",
                 "--json", "--db", db_url]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["decision"] == "reject" and done["note"] == "not a real ticket"
