"""keel calibrate / labels export / retrain / status, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import dataclasses
import json
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sqlalchemy import select
from tests.conftest import counts_balance

import keel
from keel.cli import main
from keel.monitor import evaluate
from keel.review import ReviewQueue, calibrate
from keel.store import Store
from keel.store import _schema as t

WORKFLOW = textwrap.dedent('''
    from pydantic import BaseModel
    import keel

    class Msg(BaseModel):
        id: str
        text: str
        score: float  # the model's confidence, carried in the input so tests can set it

    class Label(BaseModel):
        label: str

    def answer(msg):
        return {"label": "yes" if msg.text.startswith("y") else "no"}, msg.score

    def train(labels):
        table = {x["input"]["text"]: x["output"]["label"] for x in labels}
        def memo(msg):
            return {"label": table.get(msg.text, "no")}, 0.99
        version = "memo-" + keel.models._base.hash_text(repr(sorted(table.items())))
        return keel.FunctionModel(memo, version=version)

    workflow = keel.Workflow(
        name="scored", input=Msg, output=Label, key="id", model=keel.FunctionModel(answer),
        policy=keel.Policy(threshold=0.5, audit_rate=AUDIT_RATE),
        owners=keel.Owners(business="ops@example.com", support="ml@example.com"),
        train=train,
    )
''')


def _workflow(folder: Path, audit_rate: float = 0.0) -> Path:
    path = folder / "workflow.py"
    path.write_text(WORKFLOW.replace("AUDIT_RATE", repr(audit_rate)))
    return path


def _truth(i: int, score: float) -> bool:
    """Is the model right on row i? Rarely wrong when confident, often when not."""
    return i % 100 != 7 if score >= 0.5 else i % 4 != 0


def _rows(n: int, start: int = 0) -> list[dict[str, object]]:
    rows = []
    for i in range(start, start + n):
        score = round(((i * 37) % 1000 + 0.5) / 1000, 4)  # spread over (0, 1)
        text = ("yes " if i % 2 else "no ") + f"message {i}"
        said = "yes" if i % 2 else "no"
        right = said if _truth(i, score) else ("no" if said == "yes" else "yes")
        rows.append({"id": f"m{i}", "text": text, "score": score, "category": right})
    return rows


def _csv(path: Path, rows: list[dict[str, object]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    """stderr with Rich's line wrapping undone."""
    return " ".join(capsys.readouterr().err.split())


def _json_out(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = 0) -> object:
    capsys.readouterr()
    assert main(argv) == code
    return json.loads(capsys.readouterr().out)


def test_calibrate_from_a_file_then_runs_use_the_threshold(
        tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    wf = _workflow(tmp_path)
    labels = _csv(tmp_path / "labels.csv", _rows(1000))
    res = _json_out(capsys, ["calibrate", str(wf), "--labels", str(labels), "--label-column",
                             "category", "--target-accuracy", "0.95", "--db", db_url, "--json"])
    assert isinstance(res, dict)
    thr = res["threshold"]
    assert res["version"] == "scored@1" and res["used"] == 1000
    assert 0.2 < thr <= 0.6  # errors pile up below 0.5: a threshold near there is certified
    assert res["accuracy_bound"] >= 0.95 and res["empirical_accuracy"] >= res["accuracy_bound"]
    assert res["coverage"] == pytest.approx(sum(r["score"] >= thr for r in _rows(1000)) / 1000)
    # what certification costs: a threshold picked on the same labels with no guarantee
    # automates more, and the labels above the threshold had to beat the target by a margin
    assert res["uncertified_coverage"] >= res["coverage"]
    assert res["coverage_left"] == pytest.approx(res["uncertified_coverage"] - res["coverage"])
    assert res["uncertified_threshold"] <= thr
    assert 0 < res["margin"] < 0.05
    assert res["empirical_accuracy"] >= res["needed_accuracy"] == 0.95 + res["margin"]

    traffic = _csv(tmp_path / "traffic.csv", [
        {k: v for k, v in r.items() if k != "category"} for r in _rows(200, start=1000)])
    s = keel.run(wf, traffic, db=db_url)
    assert counts_balance(s)
    assert s.counts["accepted"] == sum(r["score"] >= thr for r in _rows(200, start=1000))
    store = Store.open(db_url)
    try:
        with store.engine.connect() as conn:
            versions = {v for (v,) in conn.execute(select(t.decisions.c.policy_version))}
    finally:
        store.close()
    assert versions == {"scored@1"}
    st = keel.status(db=db_url)[0]
    g = st["guarantee"]
    assert g["version"] == "scored@1" and g["in_force"] and g["target_accuracy"] == 0.95
    assert g["threshold"] == thr and g["decisions_routed"] == 200
    capsys.readouterr()
    assert main(["status", "--db", db_url]) == 0
    shown = capsys.readouterr().out
    assert "accuracy >= 95.0%" in shown and "scored@1" in shown


def test_refusals_are_clear(tmp_path: Path, db_url: str,
                            capsys: pytest.CaptureFixture[str]) -> None:
    wf = _workflow(tmp_path)
    few = _csv(tmp_path / "few.csv", _rows(40))
    capsys.readouterr()
    assert main(["calibrate", str(wf), "--labels", str(few), "--label-column", "category",
                 "--db", db_url]) == 1
    err = _err(capsys)
    assert "40 labelled examples" in err and "at least 149" in err and "Traceback" not in err
    bad = _rows(1000)
    for r in bad:  # the model is wrong one time in five everywhere
        r["category"] = "maybe" if int(str(r["id"])[1:]) % 5 == 0 else r["category"]
    assert main(["calibrate", str(wf), "--labels", str(_csv(tmp_path / "bad.csv", bad)),
                 "--label-column", "category", "--db", db_url]) == 1
    err = _err(capsys)
    assert "no confidence threshold certifies accuracy >= 0.98" in err
    assert main(["calibrate", str(wf), "--labels", str(few), "--db", db_url]) == 1
    assert "--label-column" in _err(capsys)
    assert keel.status(db=db_url) == [] or keel.status(db=db_url)[0]["guarantee"] is None


def test_calibrating_for_another_model_does_not_apply(tmp_path: Path, store: Store) -> None:
    wf = keel.load_workflow(_workflow(tmp_path))
    calibrate(wf, store, labels_file=_csv(tmp_path / "l.csv", _rows(1000)),
              label_column="category", target_accuracy=0.95)
    other = dataclasses.replace(wf, model=keel.FakeModel({"label": "yes"}, confidence=0.4))
    traffic = _csv(tmp_path / "traffic.csv", [
        {k: v for k, v in r.items() if k != "category"} for r in _rows(20, start=2000)])
    s = keel.run(other, traffic, store=store)
    assert s.counts["in_review"] == 20  # declared threshold 0.5, not the calibrated one
    g = keel.status(store=store)[0]["guarantee"]
    assert g["in_force"] is False and g["live_model_version"] == other.model.version


def _review_everything(store: Store, rows: list[dict[str, object]]) -> tuple[int, int]:
    """Decide every task as the truth says; returns (audits decided, audits where model right)."""
    truth = {f"m{i}": r["category"] for i, r in enumerate(rows)}
    q = ReviewQueue(store)
    audits = right = 0
    while (task := q.claim(None, "rita")) is not None:
        label = truth[task["key"]]
        if task["model_output"] == {"label": label}:
            q.decide(task["id"], "rita", "accept")
        else:
            q.decide(task["id"], "rita", "correct", {"label": label})
        if task["reason"] == "audit_sample":
            audits += 1
            right += task["model_output"] == {"label": label}
    return audits, right


@pytest.mark.slow
def test_labels_from_review_calibrate_export_and_retrain(
        tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    wf = _workflow(tmp_path, audit_rate=1.0)  # every record in the uniform sample
    rows = _rows(250)
    src = _csv(tmp_path / "in.csv", [{k: v for k, v in r.items() if k != "category"}
                                     for r in rows])
    keel.run(wf, src, db=db_url)
    store = Store.open(db_url)
    try:
        audits, right = _review_everything(store, rows)
    finally:
        store.close()
    assert audits == sum(r["score"] >= 0.5 for r in rows)

    st = keel.status(db=db_url)[0]
    real = st["realized_accuracy"]
    assert (real["audited"], real["correct"]) == (audits, right)
    lo, hi = real["ci95"]
    assert lo < right / audits < hi

    res = _json_out(capsys, ["calibrate", str(wf), "--target-accuracy", "0.9", "--db", db_url,
                             "--json"])
    assert isinstance(res, dict)
    assert res["source"] == "store:audit-sample" and res["used"] == 250
    assert res["threshold"] is not None and res["accuracy_bound"] >= 0.9

    assert main(["labels", "export", str(tmp_path / "labels.csv"), "--db", db_url]) == 0
    assert main(["labels", "export", str(tmp_path / "labels.parquet"), "--db", db_url]) == 0
    with (tmp_path / "labels.csv").open() as fh:
        exported = list(csv.DictReader(fh))
    assert len(exported) == 250
    first = exported[0]
    for col in ("key", "record_id", "model_version", "reviewer", "decided_at", "input.text",
                "model.label", "label.label", "model_correct"):
        assert col in first
    assert {r["reviewer"] for r in exported} == {"rita"}
    table = pq.read_table(tmp_path / "labels.parquet")
    assert table.num_rows == 250 and table.schema.field("confidence").type == "double"
    again = _json_out(capsys, ["calibrate", str(wf), "--labels", str(tmp_path / "labels.csv"),
                               "--target-accuracy", "0.9", "--dry-run", "--db", db_url, "--json"])
    assert isinstance(again, dict)
    assert again["threshold"] == res["threshold"] and again["version"] is None

    out = _json_out(capsys, ["retrain", str(wf), "--db", db_url, "--json"])
    assert isinstance(out, dict)
    assert out["label_examples"] == 250 and out["version"].startswith("memo-")
    assert out["live_version"] != out["version"]
    store = Store.open(db_url)
    try:
        with store.engine.connect() as conn:
            aliases = dict(conn.execute(select(t.model_versions.c.version,
                                               t.model_versions.c.alias)).all())
    finally:
        store.close()
    assert aliases[out["version"]] == "candidate"
    assert aliases[out["live_version"]] == "champion"  # the candidate is not live


def test_html_report_shows_the_curve_and_the_classes_never_automated(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wf = _workflow(tmp_path)
    rows = _rows(1000)
    for r in rows[::2]:  # the model says "no" only with low confidence
        r["score"] = round(float(r["score"]) * 0.3, 4)  # type: ignore[arg-type]
    labels = _csv(tmp_path / "labels.csv", rows)
    page = tmp_path / "report" / "calibration.html"
    assert main(["calibrate", str(wf), "--labels", str(labels), "--label-column", "category",
                 "--target-accuracy", "0.95", "--dry-run", "--html", str(page),
                 "--db", f"sqlite:///{tmp_path / 'k.db'}"]) == 0
    assert "report page:" in capsys.readouterr().out
    text = page.read_text()
    assert "<svg" in text and "certified (" in text and "uncertified (" in text
    assert "Per class (1 of 2 never automated)" in text
    never = text[text.index("<tr class='never'>"):]
    assert never.startswith("<tr class='never'><td>no</td>")
    assert "never confident enough" in never and "below the threshold" in never


@pytest.mark.slow
def test_all_labels_certify_with_reviews_as_well_as_audits(
        tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    wf = _workflow(tmp_path)  # no audit sample: every label comes from a review
    wf.write_text(wf.read_text().replace("threshold=0.5", "threshold=0.99"))
    rows = _rows(400)
    src = _csv(tmp_path / "in.csv", [{k: v for k, v in r.items() if k != "category"}
                                     for r in rows])
    keel.run(wf, src, db=db_url)
    store = Store.open(db_url)
    try:
        _review_everything(store, rows)
    finally:
        store.close()
    reviewed = sum(r["score"] < 0.99 for r in rows)  # type: ignore[operator]
    assert main(["calibrate", str(wf), "--target-accuracy", "0.9", "--db", db_url]) != 0
    assert "uniform audit sample" in _err(capsys)  # by default reviews do not count
    res = _json_out(capsys, ["calibrate", str(wf), "--all-labels", "--target-accuracy", "0.9",
                             "--dry-run", "--db", db_url, "--json"])
    assert isinstance(res, dict)
    assert res["source"] == "store:all-labels" and res["used"] == reviewed
    more = _csv(tmp_path / "labels.csv", _rows(600, start=400))
    both = _json_out(capsys, ["calibrate", str(wf), "--labels", str(more), "--label-column",
                              "category", "--all-labels", "--target-accuracy", "0.9",
                              "--dry-run", "--db", db_url, "--json"])
    assert isinstance(both, dict)
    assert both["source"] == f"file:{more}+store:all-labels"
    assert both["used"] == 600 + reviewed and both["warnings"] == []


def test_retrain_needs_a_train_function(tmp_path: Path, db_url: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from tests._workflows import write_workflow

    capsys.readouterr()
    assert main(["retrain", str(write_workflow(tmp_path)), "--db", db_url]) == 1
    assert "declares no train function" in _err(capsys)


def test_per_class_thresholds_route_each_class(tmp_path: Path, store: Store) -> None:
    """'yes' answers are always right, 'no' answers only when confident: 'yes' automates more."""
    rows = _rows(1000)
    for i, r in enumerate(rows):
        said = "yes" if i % 2 else "no"
        r["category"] = said if said == "yes" or float(r["score"]) >= 0.5 or i % 4 else "yes"
    wf = keel.load_workflow(_workflow(tmp_path))
    res = calibrate(wf, store, labels_file=_csv(tmp_path / "l.csv", rows), label_column="category",
                    target_accuracy=0.95, per_class=True)
    assert res.class_field == "label" and set(res.per_class) == {"yes", "no"}
    yes, no = res.per_class["yes"], res.per_class["no"]
    assert yes is not None and no is not None and yes < no
    assert res.version == "scored@1"
    traffic = _rows(300, start=5000)
    src = _csv(tmp_path / "t.csv", [{k: v for k, v in r.items() if k != "category"}
                                    for r in traffic])
    s = keel.run(wf, src, store=store)
    expect = sum(float(r["score"]) >= (yes if int(str(r["id"])[1:]) % 2 else no)
                 for r in traffic)
    assert s.counts["accepted"] == expect and counts_balance(s)


def test_calibrating_on_records_already_decided_as_traffic_warns(
        tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    wf = _workflow(tmp_path)
    rows = _rows(400)
    labels = _csv(tmp_path / "labels.csv", rows)
    res = _json_out(capsys, ["calibrate", str(wf), "--labels", str(labels), "--label-column",
                             "category", "--target-accuracy", "0.9", "--dry-run", "--db", db_url,
                             "--json"])
    assert isinstance(res, dict) and res["warnings"] == []
    traffic = _csv(tmp_path / "traffic.csv", [
        {k: v for k, v in r.items() if k != "category"} for r in rows[:150]])
    keel.run(wf, traffic, db=db_url)
    capsys.readouterr()
    assert main(["calibrate", str(wf), "--labels", str(labels), "--label-column", "category",
                 "--target-accuracy", "0.9", "--dry-run", "--db", db_url]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "warning: 150 of the 400 labelled records were also decided as traffic" in shown


def test_a_task_routed_before_calibration_names_the_policy_in_force(
        tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    wf = _workflow(tmp_path)
    traffic = _csv(tmp_path / "traffic.csv", [
        {k: v for k, v in r.items() if k != "category"} for r in _rows(40, start=2000)])
    keel.run(wf, traffic, db=db_url)
    tasks = _json_out(capsys, ["review", "list", "--db", db_url, "--json"])
    assert isinstance(tasks, list) and tasks
    task_id = tasks[0]["id"]
    capsys.readouterr()
    assert main(["review", "show", task_id, "--db", db_url]) == 0
    before = capsys.readouterr().out
    assert "(policy declared)" in before and "policy in force" not in before
    labels = _csv(tmp_path / "labels.csv", _rows(1000))
    _json_out(capsys, ["calibrate", str(wf), "--labels", str(labels), "--label-column",
                       "category", "--target-accuracy", "0.95", "--db", db_url, "--json"])
    assert main(["review", "show", task_id, "--db", db_url]) == 0
    after = " ".join(capsys.readouterr().out.split())
    assert "policy in force scored@1 (threshold" in after
    shown = _json_out(capsys, ["review", "show", task_id, "--db", db_url, "--json"])
    assert isinstance(shown, dict) and shown["policy_in_force"]["version"] == "scored@1"


def _contradict_audits(db_url: str, wrong_answers: int = 12) -> None:
    """A reviewer decides every open task: the first audits say the model was wrong."""
    store = Store.open(db_url)
    try:
        q, wrong = ReviewQueue(store), 0
        while (task := q.claim(None, "rita")) is not None:
            if task["reason"] == "audit_sample" and wrong < wrong_answers:
                said = task["model_output"]["label"]
                q.decide(task["id"], "rita", "correct", {"label": "no" if said == "yes" else "yes"})
                wrong += 1
            else:
                q.decide(task["id"], "rita", "accept")
    finally:
        store.close()


def test_status_marks_the_guarantee_void_when_audits_contradict_it(
        tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    wf = _workflow(tmp_path, audit_rate=1.0)
    labels = _csv(tmp_path / "labels.csv", _rows(1000))
    assert main(["calibrate", str(wf), "--labels", str(labels), "--label-column", "category",
                 "--target-accuracy", "0.95", "--db", db_url]) == 0
    traffic = _rows(120, start=1000)
    keel.run(wf, _csv(tmp_path / "traffic.csv", [
        {k: v for k, v in r.items() if k != "category"} for r in traffic]), db=db_url)
    (st,) = keel.status(db=db_url)
    assert st["guarantee"]["void"] is False  # no audit decided yet: nothing contradicts it
    rule = keel.AlertRule("guarantee_void", above=0.5, min_count=1)
    store = Store.open(db_url)
    try:
        assert [x.state for x in evaluate(store, "scored", rules=[rule]).statuses] == [
            "insufficient_data"]  # no audit yet: nothing to say
    finally:
        store.close()
    _contradict_audits(db_url)
    (st,) = keel.status(db=db_url)
    g, real = st["guarantee"], st["realized_accuracy"]
    assert real["audited"] > 12 and real["accuracy"] < 0.95
    assert g["void"] is True and g["violation_evidence"] >= 1 / g["delta"]
    store = Store.open(db_url)
    try:  # the default rule fires on it
        assert [x.state for x in evaluate(store, "scored", rules=[rule]).statuses] == ["firing"]
    finally:
        store.close()
    capsys.readouterr()
    assert main(["status", "--db", db_url]) == 0
    assert "VOID" in capsys.readouterr().out


def test_a_void_guarantee_sends_every_record_to_a_person_until_a_new_calibration(
        tmp_path: Path, db_url: str) -> None:
    """Policy(on_void="review"): once audits contradict the calibrated guarantee, nothing is
    automated (reason guarantee_void); a new `keel calibrate` brings automation back."""
    wf = tmp_path / "workflow.py"
    wf.write_text(WORKFLOW.replace("audit_rate=AUDIT_RATE", "audit_rate=1.0, on_void='review'"))
    labels = _csv(tmp_path / "labels.csv", _rows(1000))
    calibrate_argv = ["calibrate", str(wf), "--labels", str(labels), "--label-column",
                      "category", "--target-accuracy", "0.95", "--db", db_url]
    assert main(calibrate_argv) == 0

    def traffic(n: int, start: int) -> Path:
        return _csv(tmp_path / f"traffic-{start}.csv", [
            {k: v for k, v in r.items() if k != "category"} for r in _rows(n, start=start)])

    first = keel.run(wf, traffic(120, 1000), db=db_url)
    assert first.counts["accepted"] > 0  # the guarantee holds so far: it automates
    _contradict_audits(db_url)
    (st,) = keel.status(db=db_url)
    assert st["guarantee"]["void"] is True

    voided = keel.run(wf, traffic(60, 2000), db=db_url)
    assert voided.counts["accepted"] == 0 and voided.counts["in_review"] == 60
    assert voided.review_reasons == {"guarantee_void": 60}
    assert any("is void" in n for n in voided.notes)
    store = Store.open(db_url)
    try:
        task = ReviewQueue(store).claim(None, "rita")
        assert task is not None and task["reason"] == "guarantee_void"
        assert "guarantee of policy scored@1 is void" in task["detail"]
    finally:
        store.close()

    assert main(calibrate_argv) == 0  # a new policy, with no audit against it yet
    again = keel.run(wf, traffic(60, 3000), db=db_url)
    assert again.counts["accepted"] > 0 and "guarantee_void" not in again.review_reasons
