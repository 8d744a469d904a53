"""Records full of personal data: no raw value reaches logs, traces, metrics, exports or trace output."""

from __future__ import annotations

import io
import json
import logging
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import MetaData, select
from tests._cli import Result, keel_cli
from tests._workflows import write_csv

import keel
from keel.store import Store, export_trail, verify_trail
from keel.telemetry import Telemetry, configure_logging, metrics_text

NAME, EMAIL, PHONE = "Annabel Lee-Smith", "annabel.lee@example.org", "+44 20 7946 0958"
CARD, IBAN = "4111 1111 1111 1111", "GB82 WEST 1234 5698 7654 32"
SECRETS = (NAME, EMAIL, PHONE, CARD, IBAN, CARD.replace(" ", ""), IBAN.replace(" ", ""),
           "annabel.lee", "7946 0958", "5698 7654")

WORKFLOW = textwrap.dedent('''
    from pydantic import BaseModel, Field
    import keel

    class Customer(BaseModel):
        id: str
        name: str = Field(max_length=40)
        email: str
        text: str

    class Label(BaseModel):
        label: str

    def answer(c):
        if "refund" in c.text:
            raise keel.ModelUnavailable(f"upstream refused message from {c.email}: {c.text}")
        prompt = f"Customer {c.name} <{c.email}> wrote: {c.text}"
        return keel.Prediction({"label": "card"}, 0.3 if "unsure" in c.text else 0.95,
                               metadata={"prompt": prompt})

    workflow = keel.Workflow(
        name="pii", input=Customer, output=Label, key="id",
        model=keel.FunctionModel(answer),
        fallback=lambda c: {"label": "rules"} if "refund" in c.text and "x" in c.id else None,
        sensitive_fields=["name"], storage=STORAGE,
        policy=keel.Policy(threshold=0.8, audit_rate=0.0),
        owners=keel.Owners(business="ops@example.com", support="ml@example.com"),
    )
''')


def _rows() -> list[tuple[str, ...]]:
    text = f"My card {CARD} and IBAN {IBAN}, call me on {PHONE} or mail {EMAIL}"
    return [
        ("c1", NAME, EMAIL, text),
        ("c2", NAME, EMAIL, f"unsure: {text}"),
        ("c3", NAME, EMAIL, f"refund please, {text}"),      # model error quoting the input
        ("c4x", NAME, EMAIL, f"refund now {PHONE}"),         # error, then the fallback decides
        ("c5", NAME + " " + "x" * 40, EMAIL, text),          # name too long: quarantined
    ]


def _setup(tmp_path: Path, storage: str) -> tuple[Path, Path]:
    wf = tmp_path / "workflow.py"
    wf.write_text(WORKFLOW.replace("STORAGE", repr(storage)))
    src = write_csv(tmp_path / "in.csv", _rows(), header="id,name,email,text")
    return wf, src


def _leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


@pytest.fixture
def log_buffer() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    configure_logging("json", "debug", stream=buf)
    yield buf
    logger = logging.getLogger("keel")
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


def test_no_raw_personal_data_in_logs_traces_metrics_or_exports(
        tmp_path: Path, store: Store, log_buffer: io.StringIO) -> None:
    wf, src = _setup(tmp_path, "raw")
    exporter = InMemorySpanExporter()
    telemetry = Telemetry(exporter=exporter)
    summary = keel.run(wf, src, store=store, telemetry=telemetry)
    telemetry.shutdown()
    assert summary.counts == {**summary.counts, "accepted": 1, "in_review": 1, "failed": 1,
                              "fallback": 1, "quarantined": 1}
    spans = exporter.get_finished_spans()
    assert len(spans) > 10
    assert _leaks("\n".join(s.to_json() for s in spans)) == []
    errors = [s.status.description or "" for s in spans if s.status.description]
    assert any("[EMAIL]" in e for e in errors)  # the model's error quoted the input, masked
    logs = log_buffer.getvalue()
    assert '"event":"record decided"' in logs and _leaks(logs) == []
    assert _leaks(metrics_text(store, telemetry).decode()) == []
    exported = io.StringIO()
    assert export_trail(exported, store=store) > 20
    assert _leaks(exported.getvalue()) == []
    assert "[EMAIL]" in exported.getvalue() and "[REDACTED]" in exported.getvalue()
    for key in ("c1", "c3", "c5"):
        (story,) = keel.trace(key, store=store)
        assert _leaks(json.dumps(story, default=str)) == []
    assert _leaks(json.dumps(keel.quarantined(store=store), default=str)) == []
    # the store keeps raw input under storage="raw", and admins can still see it
    (raw_story,) = keel.trace("c3", store=store, raw=True)
    assert raw_story["input"]["name"] == NAME and EMAIL in json.dumps(raw_story)
    raw_export = io.StringIO()
    export_trail(raw_export, store=store, raw=True)
    assert EMAIL in raw_export.getvalue()


def _dump(store: Store) -> str:
    meta = MetaData()
    meta.reflect(store.engine)
    out = []
    with store.engine.connect() as conn:
        for table in meta.sorted_tables:
            out += [repr(tuple(row)) for row in conn.execute(select(table))]
    return "\n".join(out)


@pytest.mark.parametrize("storage", ["redacted", "hash"])
def test_storage_policy_keeps_personal_data_out_of_the_store(tmp_path: Path, store: Store,
                                                             storage: str) -> None:
    wf, src = _setup(tmp_path, storage)
    summary = keel.run(wf, src, store=store)
    assert summary.read == summary.decided == 5
    dumped = _dump(store)
    assert _leaks(dumped) == []
    marker = "[EMAIL]" if storage == "redacted" else "[EMAIL:"
    assert marker in dumped
    (story,) = keel.trace("c1", store=store, raw=True)
    assert story["decision"]["output"] == {"label": "card"}  # the business result is kept
    if storage == "hash":  # equal values hash equal, so records can still be matched
        (other,) = keel.trace("c2", store=store, raw=True)
        assert story["input"]["name"] == other["input"]["name"] != "[REDACTED]"
    assert verify_trail(store=store).ok  # the chain is over what was stored


def test_keel_cli_masks_unless_raw(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wf, src = _setup(tmp_path, "raw")

    def cli(*args: str) -> Result:
        return keel_cli(capsys, *args)

    ran = cli("run", str(wf), str(src), "--json", "--log-format", "json", "--log-level", "debug",
              "--otel", "console")
    assert ran.returncode == 2
    assert '"name": "keel.record"' in ran.stderr and '"event":"record decided"' in ran.stderr
    assert _leaks(ran.stderr) == [] and _leaks(ran.stdout) == []  # logs, spans, summary
    masked = cli("trace", "c3", "--json")
    assert masked.returncode == 0 and _leaks(masked.stdout) == []
    assert json.loads(masked.stdout)["input"]["name"] == "[REDACTED]"
    shown = cli("trace", "c3", "--json", "--raw")
    assert json.loads(shown.stdout)["input"]["name"] == NAME
    table = cli("trace", "c1")
    assert table.returncode == 0 and _leaks(table.stdout) == []
    quarantine = cli("quarantine", "--json")
    assert _leaks(quarantine.stdout) == [] and "c5" in quarantine.stdout
    exported = cli("audit", "export", "--out", str(tmp_path / "events.jsonl"))
    assert exported.returncode == 0
    assert _leaks((tmp_path / "events.jsonl").read_text()) == []


def test_no_command_or_endpoint_shows_personal_data(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A sweep: every command that prints records and every endpoint that serves them, on a
    store holding the corpus, including a record whose key is a card number."""
    from fastapi.testclient import TestClient
    from tests.server._live import app_for, bearer, keys

    wf, src = _setup(tmp_path, "raw")
    with src.open("a") as fh:  # the key itself is a card number
        fh.write(f'{CARD.replace(" ", "")},{NAME},{EMAIL},"unsure: {PHONE}"\n')
    db = f"sqlite:///{tmp_path / 'keel.db'}"

    def cli(*args: str) -> str:
        res = keel_cli(capsys, *args, "--db", db) if args[0] != "run" else keel_cli(capsys, *args)
        assert "Traceback" not in res.stderr, res.stderr
        return res.stdout + res.stderr

    out = cli("run", str(wf), str(src), "--db", db, "--out", str(tmp_path / "out.jsonl"))
    seen = [out, (tmp_path / "out.jsonl").read_text()]
    tasks = json.loads(cli("review", "list", "--json"))
    assert len(tasks) == 2
    seen += [cli("review", "list"), cli("quarantine"), cli("quarantine", "--json"), cli("status"),
             cli("status", "--json"), cli("deliveries")]
    for task in tasks:
        seen += [cli("review", "show", task["id"]), cli("review", "show", task["id"], "--json")]
    for key in ("c1", "c2", "c5", CARD.replace(" ", "")):
        seen += [cli("trace", key), cli("trace", key, "--json")]
    first = tasks[0]["id"]
    seen.append(cli("review", "decide", first, "--accept", "--reviewer", "qa"))
    cli("labels", "export", str(tmp_path / "labels.csv"))
    cli("audit", "export", "--out", str(tmp_path / "events.jsonl"))
    seen += [(tmp_path / "labels.csv").read_text(), (tmp_path / "events.jsonl").read_text()]
    raw = cli("review", "show", tasks[1]["id"], "--json", "--raw")
    assert EMAIL in raw  # admins can still see it, when they ask
    store = Store.open(db)
    try:
        k = keys(store)
        app = app_for(store, workflow=keel.load_workflow(wf))
        with TestClient(app) as client:
            h = bearer(k["admin"])
            listed = client.get("/v1/review/tasks", headers=h).json()
            seen.append(json.dumps(listed))
            for task in listed:
                seen.append(client.get(f"/v1/review/tasks/{task['id']}", headers=h).text)
                seen.append(client.get(f"/v1/records/{task['record_id']}", headers=h).text)
            seen.append(client.post("/v1/review/claim", json={}, headers=h).text)
            seen += [client.get("/v1/dashboard", headers=h).text,
                     client.get("/metrics", headers=h).text]
            page = client.get("/login")
            csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            client.post("/login", data={"key": k["reviewer"], "csrf": csrf})
            seen.append(client.get("/ui/review").text)
            for task in listed:
                seen.append(client.get(f"/ui/review/tasks/{task['id']}").text)
                seen.append(client.get(f"/ui/records/{task['record_id']}").text)
    finally:
        store.close()
    where = [(n, [ln for ln in text.splitlines() if _leaks(ln)][:3])
             for n, text in enumerate(seen) if _leaks(text)]
    assert where == [], where
