"""Workers on one PostgreSQL store: `keel submit`, several `keel worker` processes, SIGKILLs,
a paused worker whose lease ran out, workers racing for the same records. Every record ends
in exactly one disposition and none is decided twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from tests._workflows import write_csv

import keel
from keel.monitor import evaluate
from keel.store import Store, verify_trail
from keel.store import queue as q
from keel.telemetry import metrics_text

WORKFLOW = '''
import time
from pydantic import BaseModel, Field
import keel

class Ticket(BaseModel):
    id: str
    text: str = Field(min_length=1)

class Label(BaseModel):
    label: str

def answer(t):
    time.sleep({delay})
    return {{"label": "long" if len(t.text) > 12 else "short"}}, 0.95

workflow = keel.Workflow(
    name="tickets", input=Ticket, output=Label, key="id",
    model=keel.FunctionModel(answer), policy=keel.Policy(threshold=0.5, audit_rate=0.0),
    owners=keel.Owners(business="b@example.com", support="s@example.com"),
)
'''


def _workflow(tmp_path: Path, delay: float = 0.002) -> Path:
    path = tmp_path / "workflow.py"
    path.write_text(WORKFLOW.format(delay=delay))
    return path


def _rows(n: int) -> list[tuple[str, ...]]:
    return [(f"t{i}", "where is my new card" if i % 3 else "hi") for i in range(n)]


def _worker(wf: Path, db: str, *extra: str) -> subprocess.Popen[str]:
    """A `keel worker` process; what it prints goes to files beside the workflow."""
    n = len(list(wf.parent.glob("worker-*.out")))
    out = (wf.parent / f"worker-{n}.out").open("w")
    err = (wf.parent / f"worker-{n}.err").open("w")
    try:
        return subprocess.Popen([sys.executable, "-m", "keel", "worker", str(wf), "--db", db,
                                 "--batch-size", "20", *extra], stdout=out, stderr=err, text=True,
                                env={**os.environ,
                                     "PYTHONPATH": str(Path(__file__).parents[2] / "src")})
    finally:
        out.close()
        err.close()


def _said(wf: Path) -> str:
    return " ".join(" ".join(p.read_text() for p in sorted(wf.parent.glob("worker-*.*"))).split())


def _decided_once(db: str, n: int) -> dict[str, int]:
    """Every submitted record has exactly one decision; returns the dispositions."""
    store = Store.open(db)
    try:
        with store.engine.connect() as conn:
            records = conn.execute(text("select count(*) from records")).scalar_one()
            decisions = conn.execute(text("select count(*) from decisions")).scalar_one()
            dup_keys = conn.execute(text(
                "select count(*) from (select key from records group by key "
                "having count(*) > 1) d")).scalar_one()
            undecided = conn.execute(text(
                "select count(*) from records r where not exists "
                "(select 1 from decisions d where d.record_id = r.id)")).scalar_one()
            left = conn.execute(text("select count(*) from queue where status != 'done'"
                                     )).scalar_one()
        st = keel.status(store=store)[0]
        assert verify_trail(store=store).ok
    finally:
        store.close()
    assert (records, decisions, dup_keys, undecided, left) == (n, n, 0, 0, 0)
    return st["dispositions"]


def _wait_drained(db: str, deadline_s: float = 120.0) -> None:
    store = Store.open(db)
    try:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            d = q.depth(store, "tickets")
            if d["pending"] == 0 and d["leased"] == 0:
                return
            time.sleep(0.2)
    finally:
        store.close()
    raise AssertionError("the queue did not drain")


def test_submit_queues_and_quarantines_like_a_run(tmp_path: Path, db_url: str) -> None:
    wf = _workflow(tmp_path)
    src = write_csv(tmp_path / "in.csv", [*_rows(30), ("t30", "")])
    s = keel.submit(wf, src, db=db_url)
    assert (s.read, s.queued, s.counts["quarantined"]) == (31, 30, 1)
    again = keel.submit(wf, src, db=db_url)  # the same keys: nothing queued twice
    assert again.queued == 0 and again.duplicates + again.queued + again.decided == 31
    _queue_is_seen(db_url, pending=30)
    done = keel.work(wf, db=db_url, until_empty=True, batch_size=7)
    assert done.decided == 30
    assert _decided_once(db_url, 31)["quarantined"] == 1
    _queue_is_seen(db_url, pending=0)


def test_submit_deduplicates_keys_far_apart_in_a_long_file(tmp_path: Path, db_url: str) -> None:
    """A key repeated many chunks later is still one record (submit remembers only the last
    chunks' keys and asks the store for older ones); a repeat with other content is kept as
    a quarantined conflict, as within one chunk."""
    wf = _workflow(tmp_path)
    rows = [*_rows(10), *_rows(10), ("t3", "other content"), ("t3", "other content")]
    s = keel.submit(wf, write_csv(tmp_path / "in.csv", rows), db=db_url, batch_size=3)
    assert (s.read, s.queued, s.duplicates, s.conflicts) == (22, 10, 11, 1)
    assert s.counts["quarantined"] == 1
    store = Store.open(db_url)
    try:
        with store.engine.connect() as conn:
            records = conn.execute(text("select count(*) from records")).scalar_one()
    finally:
        store.close()
    assert records == 11


def _queue_is_seen(db: str, *, pending: int) -> None:
    """What waits for workers shows in keel status, in Prometheus, and to an alert rule."""
    store = Store.open(db)
    try:
        st = keel.status(store=store)[0]
        assert (st["queue"]["pending"], st["queue"]["leased"]) == (pending, 0)
        text_ = metrics_text(store, None).decode()
        rule = keel.AlertRule("queue_age_s", above=0.0, min_count=1)
        states = [s.state for s in evaluate(store, "tickets", rules=[rule]).statuses]
    finally:
        store.close()
    assert f'keel_queue_depth{{status="pending",workflow="tickets"}} {float(pending)}' in text_
    assert ("keel_queue_oldest_pending_age_seconds{" in text_) == (pending > 0)
    assert states == (["firing"] if pending else ["resolved"])


@pytest.mark.slow
def test_workers_killed_at_random_lose_and_repeat_nothing(tmp_path: Path, pg_url: str) -> None:
    n = 50_000
    wf = _workflow(tmp_path, delay=0.0)
    keel.submit(wf, write_csv(tmp_path / "in.csv", _rows(n)), db=pg_url)
    procs = [_worker(wf, pg_url, "--lease", "3", "--batch-size", "200") for _ in range(4)]
    kills = 0
    try:
        rng = __import__("random").Random(3)
        for _ in range(20):  # SIGKILL a worker every so often and start a new one
            time.sleep(rng.uniform(0.5, 1.5))
            victim = rng.randrange(len(procs))
            procs[victim].kill()
            procs[victim].wait()
            kills += 1
            procs[victim] = _worker(wf, pg_url, "--lease", "3", "--batch-size", "200")
        _wait_drained(pg_url, deadline_s=600)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
    assert kills == 20
    assert sum(_decided_once(pg_url, n).values()) == n


@pytest.mark.slow
def test_a_paused_worker_cannot_commit_what_another_took_over(tmp_path: Path,
                                                              pg_url: str) -> None:
    wf = _workflow(tmp_path, delay=0.05)  # 20 records take a second
    keel.submit(wf, write_csv(tmp_path / "in.csv", _rows(200)), db=pg_url)
    slow = _worker(wf, pg_url, "--lease", "2")
    store = Store.open(pg_url)
    try:  # wait until it holds a batch...
        end = time.monotonic() + 60
        while q.depth(store, "tickets")["leased"] == 0 and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        store.close()
    slow.send_signal(signal.SIGSTOP)  # ...and freeze it past its lease
    held = _leased(pg_url)  # one batch in hand, or two (the next claimed while one is decided)
    assert held in (20, 40)
    time.sleep(3.0)
    other = _worker(wf, pg_url, "--lease", "2", "--until-empty")
    assert other.wait(timeout=120) == 0
    slow.send_signal(signal.SIGCONT)  # it wakes up and tries to commit its stale batch
    time.sleep(2.0)
    slow.send_signal(signal.SIGTERM)
    slow.wait(timeout=60)
    said = " ".join((tmp_path / "worker-0.out").read_text().split())
    assert f"leases lost to other workers: {held}" in said, _said(wf)
    assert sum(_decided_once(pg_url, 200).values()) == 200


def _leased(db: str) -> int:
    store = Store.open(db)
    try:
        return int(q.depth(store, "tickets")["leased"])
    finally:
        store.close()


@pytest.mark.slow
def test_a_stopped_worker_finishes_every_batch_it_holds(tmp_path: Path, pg_url: str) -> None:
    """SIGTERM while two batches are in hand: both are decided and committed, nothing stays
    leased for another worker to wait out, and the rest is still pending."""
    wf = _workflow(tmp_path, delay=0.05)  # 20 records take a second
    keel.submit(wf, write_csv(tmp_path / "in.csv", _rows(200)), db=pg_url)
    worker = _worker(wf, pg_url)
    end = time.monotonic() + 60
    while _leased(pg_url) < 40 and time.monotonic() < end:
        time.sleep(0.02)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, _said(wf)
    store = Store.open(pg_url)
    try:
        with store.engine.connect() as conn:
            by_status = dict(conn.execute(text(
                "select status, count(*) from queue group by status")).all())
            decisions = conn.execute(text("select count(*) from decisions")).scalar_one()
    finally:
        store.close()
    done = by_status.get("done", 0)
    assert done >= 40 and done % 20 == 0 and "leased" not in by_status
    assert decisions == done and by_status.get("pending", 0) == 200 - done


@pytest.mark.slow
def test_workers_started_at_the_same_instant_never_share_a_record(tmp_path: Path,
                                                                 pg_url: str) -> None:
    wf = _workflow(tmp_path, delay=0.0)
    for round_ in range(3):
        keel.submit(wf, write_csv(tmp_path / f"in{round_}.csv",
                                          [(f"r{round_}-{i}", "a message") for i in range(400)]),
                            db=pg_url)
        procs = [_worker(wf, pg_url, "--until-empty") for _ in range(4)]
        for p in procs:
            assert p.wait(timeout=120) == 0, _said(wf)
    assert sum(_decided_once(pg_url, 1200).values()) == 1200


def test_a_second_worker_on_sqlite_is_refused_with_the_reason(tmp_path: Path) -> None:
    wf = _workflow(tmp_path)
    db = f"sqlite:///{tmp_path / 'keel.db'}"
    keel.submit(wf, write_csv(tmp_path / "in.csv", _rows(5)), db=db)
    store = Store.open(db)
    try:
        q.heartbeat(store, "elsewhere:1:abc", "tickets", 0, "working", time.time())
        with pytest.raises(keel.UserError, match="one worker per SQLite store"):
            keel.work(wf, store=store, until_empty=True)
    finally:
        store.close()


def test_a_poison_record_is_quarantined_after_repeated_claims(tmp_path: Path,
                                                              db_url: str) -> None:
    wf = _workflow(tmp_path)
    keel.submit(wf, write_csv(tmp_path / "in.csv", _rows(3)), db=db_url)
    store = Store.open(db_url)
    try:
        for _ in range(3):  # three workers each claimed it and died (their leases ran out)
            q.claim(store, "tickets", "dead:1:x", 1, lease_s=-1.0)
        done = keel.work(wf, store=store, until_empty=True)
        assert done.decided == 3
        (rec,) = keel.trace("t0", store=store)
    finally:
        store.close()
    assert rec["decision"]["disposition"] == "quarantined"
    assert "claimed 3 times and never decided" in rec["decision"]["reason"]


SHARED_LIMIT = '''
import os, time
from pydantic import BaseModel
import keel

class Ticket(BaseModel):
    id: str
    text: str

class Label(BaseModel):
    label: str

async def answer(t):
    with open({calls!r}, "a") as f:  # one line per call: when, and which process
        f.write(f"{{time.time()}} {{os.getpid()}}\\n")
    return {{"label": "x"}}, 0.95

workflow = keel.Workflow(
    name="tickets", input=Ticket, output=Label, key="id",
    model=keel.FunctionModel(answer, name="api"),
    resilience=keel.Resilience(limits=keel.RateLimits(max_concurrency=8, requests_per_s=5,
                                                      shared=True)),
    policy=keel.Policy(threshold=0.5, audit_rate=0.0),
    owners=keel.Owners(business="b@example.com", support="s@example.com"),
)
'''


@pytest.mark.slow
def test_a_shared_rate_limit_holds_across_four_workers(tmp_path: Path, pg_url: str) -> None:
    calls = tmp_path / "calls.log"
    wf = tmp_path / "workflow.py"
    wf.write_text(SHARED_LIMIT.format(calls=str(calls)))
    keel.submit(wf, write_csv(tmp_path / "in.csv", _rows(400)), db=pg_url)
    procs = [_worker(wf, pg_url, "--batch-size", "5") for _ in range(4)]
    store = Store.open(pg_url)
    try:
        end = time.monotonic() + 120  # until all four are up (start-up takes seconds)...
        while sum(w["alive"] for w in q.workers(store, "tickets")) < 4 and time.monotonic() < end:
            time.sleep(0.2)
        time.sleep(8)  # ...then let them compete for the limit
    finally:
        store.close()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
    seen = [line.split() for line in calls.read_text().splitlines()]
    times = sorted(float(t) for t, _pid in seen)
    assert len(times) >= 20 and len({pid for _t, pid in seen}) >= 2, _said(wf)
    # a bucket of 5 a second (and 5 at once): in any stretch of w seconds, at most 5 + 5w calls
    for i, start in enumerate(times):
        for w in (1.0, 3.0, times[-1] - start):
            within = sum(1 for t in times[i:] if t <= start + w)
            assert within <= 5 + 5 * w + 1, (w, within)


PG_BIN = Path("/usr/lib/postgresql")


class _OwnPostgres:
    """A PostgreSQL server of the test's own (initdb in a temporary folder, a free port), so
    that restarting it disturbs no other test; run as the postgres user, as it requires."""

    def __init__(self) -> None:
        import shutil
        import tempfile

        self.bin = sorted(PG_BIN.glob("*/bin"))[-1]
        self.folder = Path(tempfile.mkdtemp(prefix="keel-pg-"))  # pytest's are root-only
        shutil.chown(self.folder, "postgres", "postgres")
        self.data = self.folder / "pgdata"
        with __import__("socket").socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust",
                          "-U", "root")
        self.ctl("start")

    def _as_postgres(self, *cmd: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True,
                       capture_output=True, timeout=120)

    def ctl(self, action: str) -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-l",
                          str(self.data / "log"), "-o",
                          f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1",
                          action)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://root@127.0.0.1:{self.port}/postgres"


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.skipif(os.geteuid() != 0 or not PG_BIN.is_dir(),
                    reason="a PostgreSQL server of its own needs Debian's postgresql and root")
def test_workers_wait_out_a_postgres_restart_and_go_on(tmp_path: Path) -> None:
    own = _OwnPostgres()
    pg_url = own.url
    n = 1500
    wf = _workflow(tmp_path, delay=0.004)
    keel.submit(wf, write_csv(tmp_path / "in.csv", _rows(n)), db=pg_url)
    procs = [_worker(wf, pg_url, "--lease", "5") for _ in range(2)]
    try:
        store = Store.open(pg_url)
        try:  # restart once they are well into the queue
            end = time.monotonic() + 120
            while q.depth(store, "tickets")["pending"] > n * 0.7 and time.monotonic() < end:
                time.sleep(0.1)
        finally:
            store.close()
        own.ctl("restart")
        _wait_drained(pg_url, deadline_s=180)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
        try:
            assert sum(_decided_once(pg_url, n).values()) == n
        finally:
            own.ctl("stop")
            __import__("shutil").rmtree(own.folder, ignore_errors=True)
    assert all(p.returncode == 0 for p in procs), _said(wf)
    assert "store outages waited out" in _said(wf)


def test_a_breaker_another_worker_opened_holds_for_this_one(tmp_path: Path, db_url: str) -> None:
    wf_py = _workflow(tmp_path)
    text_ = wf_py.read_text().replace(
        "owners=keel.Owners(", "fallback=keel.FunctionModel(lambda t: ({'label': 'rules'}, 1.0),"
        " name='rules'),\n    resilience=keel.Resilience(breaker=keel.BreakerPolicy("
        "reset_timeout_s=600)),\n    owners=keel.Owners(")
    wf_py.write_text(text_)
    wf = keel.load_workflow(wf_py)
    keel.submit(wf, write_csv(tmp_path / "in.csv", _rows(20)), db=db_url)
    store = Store.open(db_url)
    try:
        first = keel.work(wf, store=store, until_empty=True, batch_size=10)
        assert {k: n for k, n in first.counts.items() if n} == {"accepted": 20}  # the model is well
        keel.submit(wf, write_csv(tmp_path / "more.csv", [(f"m{i}", "a message") for i in
                                                          range(10)]), db=db_url)
        # meanwhile another worker's calls failed and it opened the breaker in the store
        from keel.resilience import BreakerState
        from keel.store import BreakerBook

        BreakerBook(store).save([BreakerState("tickets", wf.model.version, "open", 5,
                                              time.time(), time.time())])
        second = keel.work(wf, store=store, until_empty=True, batch_size=10)
    finally:
        store.close()
    assert {k: n for k, n in second.counts.items() if n} == {"fallback": 10}  # the rules decided
