"""keel drift from files: read column by column, counted as a row-by-row read would count them;
a monitor-only declaration (keel.Watch); the same verdicts every time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import keel
from keel.errors import ConfigError, WorkflowLoadError
from keel.monitor import _api, build_reference, drift_report
from keel.store import Store

WATCH = '''
from typing import Literal

import keel
from pydantic import BaseModel


class Order(BaseModel):
    id: str
    amount: float
    count: int
    kind: Literal["a", "b"]
    note: str | None = None


class Scored(BaseModel):
    score: float


watch = keel.Watch(name="orders", input=Order, output=Scored, key="id")
'''

CSV = """id,amount,count,kind,note,score
o1,10.5,3,a,fine,0.9
o2,abc,2,b,,0.8
o3,7,1.5,a,late,0.7
o4,,4,c,x,0.6
o5,3.25,2,b,ok,
o6,1e3,7,a,"quoted, with comma",0.5
o7,2,3,a,too,many,fields
o8, 4 ,5,b,spaced number,0.4
o9,5,1,a,"a note
on two lines",0.2
"""


def _watch(tmp_path: Path) -> Path:
    path = tmp_path / "watch.py"
    path.write_text(WATCH, encoding="utf-8")
    return path


def _counts(profile):  # type: ignore[no-untyped-def]
    assert profile.schema is not None
    return {
        "rows": profile.rows,
        "kinds": profile.kinds,
        "moments": {  # sums of squares agree to the last bits, not in them
            k: {**m.to_json(), "total_sq": pytest.approx(m.total_sq, rel=1e-12)}
            for k, m in profile.moments.items()
        },
        "categories": {k: dict(c) for k, c in profile.categories.items()},
        "nulls": profile.nulls,
        "schema": {k: dict(v) for k, v in profile.schema.fields.items()},
        "rules": dict(profile.schema.rules),
    }


def _both_ways(store: Store, watch: Path, data: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    columnar = build_reference(watch, store=store, source=data, embedder="tfidf")
    with monkeypatch.context() as m:
        m.setattr(_api, "columns_readable", lambda _path: False)
        rows = build_reference(watch, store=store, source=data, embedder="tfidf")
    return _counts(columnar), _counts(rows)


def test_csv_counted_by_column_as_row_by_row(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "orders.csv"
    data.write_text(CSV, encoding="utf-8")
    by_column, by_row = _both_ways(store, _watch(tmp_path), data, monkeypatch)
    assert by_column == by_row
    assert by_column["rows"] == 9  # the row with too many fields counts, as a parse error
    assert by_column["rules"] == {
        "float_parsing": 2,  # "abc" and an empty amount
        "int_parsing": 1,  # 1.5 is not an integer
        "parse": 1,
    }
    assert by_column["moments"]["input.amount"]["n"] == 6  # " 4 " is a number
    assert by_column["kinds"]["output.score"] == "numeric"


def test_parquet_counted_by_column_as_row_by_row(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    n = 5000
    table = pa.table({
        "id": [f"o{i}" for i in range(n)],
        "amount": pa.array(np.where(rng.random(n) < 0.1, np.nan, rng.normal(50, 5, n))),
        "count": pa.array([None if i % 97 == 0 else int(i % 9) for i in range(n)], pa.int64()),
        "kind": rng.choice(["a", "b", "z"], n, p=[0.6, 0.39, 0.01]),
        "note": [None if i % 3 else "x" * (i % 50) for i in range(n)],
        "score": rng.random(n),
        "extra": rng.integers(0, 3, n),
    })
    data = tmp_path / "orders.parquet"
    pq.write_table(table, data)
    by_column, by_row = _both_ways(store, _watch(tmp_path), data, monkeypatch)
    assert by_column == by_row
    assert by_column["rules"]["literal_error"] > 0 and by_column["rules"]["int_type"] > 0
    assert by_column["schema"]["extra"] == {"number": n}


def test_csv_with_bytes_that_are_not_text_is_read_again_row_by_row(
    store: Store, tmp_path: Path
) -> None:
    data = tmp_path / "orders.csv"
    data.write_bytes(CSV.encode() + b"o9,1,1,a,caf\xe9,0.3\n")
    profile = build_reference(_watch(tmp_path), store=store, source=data, embedder="tfidf")
    assert profile.rows == 10  # nothing lost: the bad row is counted too
    assert profile.schema is not None and profile.schema.rules["encoding"] == 1


def test_a_watch_has_no_window_of_decided_records(store: Store, tmp_path: Path) -> None:
    watch = _watch(tmp_path)
    with pytest.raises(ConfigError, match=r"keel\.Watch.*--from FILE"):
        build_reference(watch, store=store, window="24h")
    with pytest.raises(WorkflowLoadError, match=r"declares a keel\.Watch .*keel drift"):
        keel.load_workflow(watch)  # keel run: nothing to decide with


def test_a_watch_names_its_columns_once(tmp_path: Path) -> None:
    from pydantic import BaseModel

    class In(BaseModel):
        text: str

    class Out(BaseModel):
        text: str

    with pytest.raises(ValueError, match="both the input and the output"):
        keel.Watch(name="w", input=In, output=Out)
    with pytest.raises(ValueError, match="key field 'id'"):
        keel.Watch(name="w", input=In, key="id")


def _keel(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KEEL_DB": f"sqlite:///{tmp_path / 'keel.db'}", "KEEL_EMBEDDER": "tfidf"}
    return subprocess.run(
        [sys.executable, "-m", "keel", *args], env=env, capture_output=True, text=True,
        timeout=300, cwd=tmp_path,
    )


@pytest.mark.slow
def test_cli_watch_reports_the_same_levels_every_time(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    n = 60_000

    def table(shift: float) -> pa.Table:
        return pa.table({
            "id": [f"o{i}" for i in range(n)],
            "amount": rng.normal(50 + 5 * shift, 5, n),
            "count": rng.poisson(4, n),
            "kind": rng.choice(["a", "b"], n, p=[0.6, 0.4]),
            "score": rng.random(n),
        })

    pq.write_table(table(0.0), tmp_path / "ref.parquet")
    pq.write_table(table(0.08), tmp_path / "cur.parquet")  # 0.08 sd: real, not material
    watch = str(_watch(tmp_path))
    made = _keel(tmp_path, "drift", "reference", watch, "--from", "ref.parquet", "--json")
    assert made.returncode == 0, made.stderr
    reports = []
    for _ in range(2):
        res = _keel(tmp_path, "drift", "report", watch, "--from", "cur.parquet", "--json",
                    "--fail-on-drift")
        assert res.returncode == 0, res.stderr  # a minor shift never fails the run
        reports.append(json.loads(res.stdout))
    levels = [{(c["field"], c["test"]): (c["level"], c["q_value"]) for c in r["checks"]}
              for r in reports]
    assert levels[0] == levels[1]
    assert levels[0][("input.amount", "ks")][0] == "minor"
    assert reports[0]["minor"] and not reports[0]["alerts"]
    text = _keel(tmp_path, "drift", "report", watch, "--from", "cur.parquet")
    assert "minor" in text.stdout and "below materiality" in text.stdout


def test_drift_report_reads_files_for_a_watch_in_python(store: Store, tmp_path: Path) -> None:
    watch = _watch(tmp_path)
    data = tmp_path / "orders.csv"
    data.write_text(CSV, encoding="utf-8")
    build_reference(watch, store=store, source=data, embedder="tfidf")
    report = drift_report(store, watch, source=data)
    assert report.window["rows"] == 9 and not report.drifted
