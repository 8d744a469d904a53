"""The webhook sink against a loopback receiver: Idempotency-Key, retries, dead letters,
`keel deliveries`, and redelivery after a crash between sending and recording."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from tests._loopback import Reply, Request, serve
from tests._workflows import make, write_csv
from tests.conftest import counts_balance

import keel
from keel.cli import main
from keel.store import Store


class Receiver:
    """Accepts decisions, deduping by Idempotency-Key; can fail on purpose."""

    def __init__(self) -> None:
        self.by_key: dict[str, dict[str, Any]] = {}
        self.posts = 0
        self.fail_times: dict[str, int] = {}  # record key -> how many posts to fail first
        self.status = 200
        self.lock = threading.Lock()

    def __call__(self, req: Request) -> Reply:
        line = req.json()
        with self.lock:
            self.posts += 1
            left = self.fail_times.get(line["key"], 0)
            if left:
                self.fail_times[line["key"]] = left - 1
                return Reply(503, {"error": "busy"})
            if self.status != 200:
                return Reply(self.status, {"error": "nope"})
            self.by_key.setdefault(req.headers["idempotency-key"], line)
        return Reply(200, {"ok": True})

    def keys(self) -> list[str]:
        return sorted(line["key"] for line in self.by_key.values())


def _src(tmp_path: Path, n: int) -> Path:
    return write_csv(tmp_path / "in.csv", [(f"k{i}", f"message {i}") for i in range(n)])


def hook(url: str, **kw: Any) -> keel.WebhookSink:
    kw.setdefault("base_delay_s", 0.001)
    return keel.WebhookSink(url, **kw)


def test_each_decision_is_posted_once_with_an_idempotency_key(tmp_path: Path,
                                                              store: Store) -> None:
    rx = Receiver()
    with serve(rx) as (url, seen):
        s = keel.run(make(), _src(tmp_path, 30), store=store, webhook=hook(url), batch_size=8)
        again = keel.run(make(), _src(tmp_path, 30), store=store, webhook=hook(url))
    assert counts_balance(s) and s.delivered == 30 and s.dead_letters == 0
    assert again.duplicates == 30 and again.delivered == 0
    assert len(seen) == 30 and rx.keys() == sorted(f"k{i}" for i in range(30))
    assert all(len(r.headers["idempotency-key"]) == 40 for r in seen)
    line = next(iter(rx.by_key.values()))
    assert {"key", "record_id", "disposition", "output", "confidence"} <= set(line)
    rows = keel.deliveries(store=store)
    assert len(rows) == 30 and {r["status"] for r in rows} == {"delivered"}


def test_failed_posts_are_retried_with_backoff(tmp_path: Path, store: Store) -> None:
    rx = Receiver()
    rx.fail_times = {"k1": 2, "k2": 1}
    with serve(rx) as (url, _seen):
        s = keel.run(make(), _src(tmp_path, 5), store=store, webhook=hook(url, max_attempts=3))
    assert s.delivered == 5 and s.dead_letters == 0
    attempts = {r["key"]: r["attempts"] for r in keel.deliveries(store=store)}
    assert attempts == {"k0": 1, "k1": 3, "k2": 2, "k3": 1, "k4": 1}


def test_dead_letters_are_listed_and_retried(tmp_path: Path, store: Store, db_url: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    rx = Receiver()
    rx.status = 500
    with serve(rx) as (url, seen):
        s = keel.run(make(), _src(tmp_path, 4), store=store, webhook=hook(url, max_attempts=3))
        assert s.dead_letters == 4 and s.delivered == 0 and counts_balance(s)
        assert len(seen) == 12  # three tries each
        capsys.readouterr()
        assert main(["deliveries", "--failed", "--json", "--db", db_url]) == 0
        dead = json.loads(capsys.readouterr().out)
        assert len(dead) == 4 and {d["status"] for d in dead} == {"dead"}
        assert all(d["attempts"] == 3 and "HTTP 500" in d["last_error"] for d in dead)
        first_keys = {r.headers["idempotency-key"] for r in seen}
        rx.status = 200  # the receiver is fixed
        assert main(["deliveries", "retry", "--db", db_url]) == 0
        assert "4 sent, 4 delivered, 0 still dead" in capsys.readouterr().out
        assert main(["deliveries", "--failed", "--db", db_url]) == 0
        assert "no failed deliveries" in capsys.readouterr().out
    assert rx.keys() == ["k0", "k1", "k2", "k3"]
    assert set(rx.by_key) == first_keys  # the retry sent the same Idempotency-Keys


def test_a_4xx_is_dead_at_once(tmp_path: Path, store: Store) -> None:
    rx = Receiver()
    rx.status = 422
    with serve(rx) as (url, seen):
        s = keel.run(make(), _src(tmp_path, 3), store=store, webhook=hook(url))
    assert s.dead_letters == 3 and len(seen) == 3
    assert {r["attempts"] for r in keel.deliveries(store=store, failed=True)} == {1}


def test_crash_between_post_and_record_is_redelivered_with_the_same_key(
        tmp_path: Path, store: Store) -> None:
    from keel.store.delivery import SinkLedger

    rx = Receiver()
    original = SinkLedger.commit

    def crash(*a: Any, **k: Any) -> None:
        raise SystemExit("killed")

    with serve(rx) as (url, seen):
        SinkLedger.commit = crash  # type: ignore[method-assign]
        try:
            with pytest.raises(SystemExit):
                keel.run(make(), _src(tmp_path, 6), store=store, webhook=hook(url))
        finally:
            SinkLedger.commit = original  # type: ignore[method-assign]
        # the outbox: each decision is owed from the transaction that made it
        assert len(seen) == 6
        assert {r["status"] for r in keel.deliveries(store=store)} == {"pending"}
        s = keel.run(make(), _src(tmp_path, 6), store=store, webhook=hook(url))
    assert s.duplicates == 6 and s.delivered == 6 and s.updates_delivered == 6
    assert len(seen) == 12  # sent again...
    assert len(rx.by_key) == 6  # ...with the same keys, so the receiver kept one of each
    assert {r["status"] for r in keel.deliveries(store=store)} == {"delivered"}


def test_webhook_url_must_be_http(tmp_path: Path) -> None:
    with pytest.raises(keel.UserError, match="http"):
        keel.WebhookSink("ftp://example.com/x")


def test_receiver_credentials_go_with_every_post_and_retry(
        tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`--webhook-header` on `keel run` and on `keel deliveries retry`; never stored."""
    from tests._cli import keel_cli
    from tests._workflows import write_workflow

    wf = write_workflow(tmp_path)
    src = _src(tmp_path, 3)
    token = {"value": "Bearer right"}

    def guarded(req: Request) -> Reply:
        if req.headers.get("authorization") != token["value"]:
            return Reply(401, {"error": "who are you"})
        return Reply(200, {"ok": True})

    with serve(guarded) as (url, seen):
        ran = keel_cli(capsys, "run", str(wf), str(src), "--db", db_url, "--webhook", url,
                       "--webhook-header", "Authorization: Bearer wrong", "--json")
        assert ran.returncode == 0 and json.loads(ran.stdout)["dead_letters"] == 3
        assert {r.headers["authorization"] for r in seen} == {"Bearer wrong"}
        no_creds = keel_cli(capsys, "deliveries", "retry", "--db", db_url, "--json")
        assert no_creds.returncode == 2  # some still dead
        assert json.loads(no_creds.stdout)["sinks"][0]["dead"] == 3  # nothing was stored
        fixed = keel_cli(capsys, "deliveries", "retry", "--db", db_url, "--json",
                         "--webhook-header", "Authorization: Bearer right")
        assert json.loads(fixed.stdout)["sinks"][0]["delivered"] == 3
        bad = keel_cli(capsys, "run", str(wf), str(src), "--db", db_url, "--webhook", url,
                       "--webhook-header", "Authorization Bearer right")
        assert bad.returncode == 1 and "Name: value" in bad.stderr + bad.stdout
    store = Store.open(db_url)
    try:
        with store.engine.connect() as conn:
            from sqlalchemy import text

            dump = " ".join(str(row) for table in ("sinks", "deliveries", "runs")
                            for row in conn.execute(text(f"select * from {table}")))
        assert "right" not in dump and "wrong" not in dump
    finally:
        store.close()
