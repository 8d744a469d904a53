"""`keel run` killed with SIGKILL at random points, then run again with the same arguments:
no record lost, none decided twice, no duplicate line in --out, no checkpointed call paid twice.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from keel.store import _schema as t

WORKFLOW = textwrap.dedent('''
    import os
    import random
    import time

    from pydantic import BaseModel, Field

    import keel

    CALLS = os.environ["KEEL_CALLS_FILE"]

    class Msg(BaseModel):
        id: str
        text: str = Field(min_length=1)

    class Label(BaseModel):
        label: str

    class Flaky(keel.Model):
        """A batch model where one call in ten fails for a record with a 503."""

        name = "flaky"

        @property
        def version(self):
            return "flaky-1"

        def predict(self, batch):
            out, log = [], []
            for m in batch:
                ok = random.random() >= 0.1
                log.append(f"{m.id} {'ok' if ok else 'fail'}\\n")
                out.append(keel.Prediction({"label": "long" if len(m.text) > 12 else "short"},
                                           0.3 if m.id.endswith("7") else 0.95)
                           if ok else keel.ModelUnavailable("injected 503"))
            with open(CALLS, "a") as fh:  # every record sent to the model, paid or not
                fh.write("".join(log))
            time.sleep(0.02)
            return out

    workflow = keel.Workflow(
        name="crashy", input=Msg, output=Label, key="id",
        model=Flaky(), fallback=lambda m: {"label": "rules"},
        policy=keel.Policy(threshold=0.8, audit_rate=0.1),
        owners=keel.Owners(business="ops@example.com", support="ml@example.com"),
    )
''')

N = 5000
BATCH = 25
KILLS = 20


def _input(path: Path) -> set[str]:
    keys = set()
    with path.open("w") as fh:
        fh.write("id,text\n")
        for i in range(N):
            n = i - 1 if i % 100 == 99 else i  # now and then the row before again, whole
            key = f"r{n}"
            text = "" if n % 50 == 0 else f"message number {n} about my card"
            fh.write(f"{key},{text}\n")
            keys.add(key)
    return keys


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.slow
@pytest.mark.parametrize("writer", ["off", "0"], ids=["writer-thread", "writer-process"])
def test_sigkill_at_random_points_loses_and_doubles_nothing(tmp_path: Path, writer: str) -> None:
    """With batches committed by the run's thread, or by its writer process (which must then
    never commit half a batch, nor outlive the run and race the next one)."""
    wf = tmp_path / "workflow.py"
    wf.write_text(WORKFLOW)
    src = tmp_path / "in.csv"
    keys = _input(src)
    out, db, calls = tmp_path / "out.jsonl", tmp_path / "keel.db", tmp_path / "calls.txt"
    env = {**os.environ, "KEEL_CALLS_FILE": str(calls), "KEEL_WRITER_PROCESS": writer}
    cmd = [sys.executable, "-m", "keel", "run", str(wf), str(src), "--out", str(out),
           "--db", str(db), "--batch-size", str(BATCH), "--json"]
    rng = random.Random(20240611)
    kills, deadline = 0, time.monotonic() + 240
    while kills < KILLS and time.monotonic() < deadline:
        before = _lines(calls)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        if rng.random() < 0.2:  # sometimes while it starts up or reads the store
            time.sleep(rng.uniform(0.0, 1.5))
        else:  # mostly once it is deciding: mid-batch, mid-commit, mid-write
            while _lines(calls) == before and proc.poll() is None:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.25))
        if proc.poll() is not None:
            break  # it finished before we got to kill it
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    assert kills >= KILLS, f"only {kills} kills before the run finished; make the input bigger"

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["read"] == N
    assert summary["read"] == sum(summary["dispositions"].values()) + summary["already_decided"]

    # --out: one whole line per record, none twice
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    per_key = Counter(line["key"] for line in lines)
    assert set(per_key) == keys and max(per_key.values()) == 1

    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            n_records = conn.execute(select(func.count()).select_from(t.records)).scalar_one()
            n_decided = conn.execute(select(func.count()).select_from(t.decisions)).scalar_one()
            n_preds = conn.execute(select(func.count()).select_from(t.predictions)).scalar_one()
            predicted: Counter[str] = Counter()
            seqs: dict[str, list[int]] = {}
            e = t.events
            for rid, seq, entries in conn.execute(select(e.c.record_id, e.c.seq, e.c.entries)):
                seqs.setdefault(rid, []).append(seq)
                predicted.update(rid for ev in json.loads(entries) if ev["kind"] == "predicted")
            quarantined = conn.execute(select(func.count()).select_from(t.decisions).where(
                t.decisions.c.disposition == "quarantined")).scalar_one()
            tasks = Counter(r for (r,) in conn.execute(select(t.review_tasks.c.record_id)))
    finally:
        engine.dispose()
    assert n_records == n_decided == len(keys)  # nothing lost, nothing decided twice
    assert n_preds == len(keys) - quarantined  # one checkpoint per record sent to the model
    assert set(predicted.values()) == {1} and len(predicted) == n_preds
    assert all(sorted(s) == list(range(1, len(s) + 1)) for s in seqs.values())
    assert not tasks or max(tasks.values()) == 1  # no review task opened twice

    # answers already paid for were not paid again, except those in flight at each kill
    # (the batch being decided and the transient failures riding along with it)
    tries = [line.split() for line in calls.read_text().splitlines()]
    answered = Counter(key for key, how in tries if how == "ok")
    assert answered and set(answered) <= keys
    assert sum(answered.values()) - len(answered) <= kills * 2 * BATCH
    fallback = sum(1 for line in lines if line["disposition"] == "fallback")
    assert len(answered) >= n_preds - fallback and fallback < len(keys) * 0.01

    # and the trail still verifies after all those kills: no half-written block or segment
    from keel.store import verify_trail

    assert verify_trail(db=f"sqlite:///{db}").ok


class _Receiver:
    """A webhook receiver as the docs ask one to be: refuses a body that does not match its
    Content-Length and Content-Digest, and applies each Idempotency-Key once."""

    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()
        self.posts = 0
        self.refused = 0
        self.effects: dict[str, dict[str, object]] = {}  # idempotency key -> the decision

    def __call__(self, req: object) -> object:
        import base64
        import hashlib

        from tests._loopback import Reply

        headers, body = req.headers, req.body  # type: ignore[attr-defined]
        digest = "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"
        with self.lock:
            self.posts += 1
            if len(body) != int(headers.get("content-length", -1)) or \
                    headers.get("content-digest") != digest:
                self.refused += 1
                return Reply(400, {"error": "incomplete body"})
            self.effects.setdefault(headers["idempotency-key"], json.loads(body))
        return Reply(200, {"ok": True}, delay_s=0.002)


@pytest.mark.slow
def test_sigkill_with_a_webhook_each_decision_takes_effect_once(tmp_path: Path) -> None:
    """At least once on the wire, exactly once in effect: kills while POSTs are in flight,
    then the same run again and `keel deliveries retry`; the receiver, deduplicating on the
    Idempotency-Key, applied every record's decision once, and keel re-sent at most what was
    in flight at each kill."""
    from tests._loopback import serve

    n, kills_wanted = 1500, 10
    wf = tmp_path / "workflow.py"
    wf.write_text(WORKFLOW)
    src = tmp_path / "in.csv"
    src.write_text("id,text\n" + "".join(f"w{i},webhook message {i}\n" for i in range(n)))
    db, calls = tmp_path / "keel.db", tmp_path / "calls.txt"
    env = {**os.environ, "KEEL_CALLS_FILE": str(calls), "KEEL_WRITER_PROCESS": "off"}
    rx = _Receiver()
    rng = random.Random(7)
    with serve(rx) as (url, _seen):  # type: ignore[arg-type]
        cmd = [sys.executable, "-m", "keel", "run", str(wf), str(src), "--db", str(db),
               "--batch-size", str(BATCH), "--webhook", url, "--json"]
        kills = 0
        while kills < kills_wanted:
            posted = rx.posts
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            while rx.posts == posted and proc.poll() is None:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.3))  # mid-delivery, mid-batch, mid-commit
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        retry = subprocess.run([sys.executable, "-m", "keel", "deliveries", "retry", "--db",
                                str(db)], env=env, capture_output=True, text=True, timeout=120)
        assert retry.returncode == 0, retry.stderr
    assert kills >= 5, "the run finished before it could be killed often enough"
    per_record = Counter(str(line["key"]) for line in rx.effects.values())
    assert set(per_record) == {f"w{i}" for i in range(n)}  # every decision took effect...
    assert max(per_record.values()) == 1  # ...once
    duplicates = rx.posts - rx.refused - len(rx.effects)
    # at most what was sent but not yet recorded at each kill: one commit group per sender
    assert duplicates <= kills * 2 * 32, (duplicates, kills)
