"""The recovery drill: replay a sample of recent inputs on a scratch store with faults
injected into the model and a crash mid-run, then check that nothing was lost or decided
twice."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from keel import _json
from keel._record import RawRow
from keel.errors import MalformedOutput, ModelTimeout, ModelUnavailable, UserError
from keel.models import Model, Outcome
from keel.runtime import Runner
from keel.store import Store, queries, verify_trail
from keel.store import gates as sql
from keel.workflow import Workflow

#: Per model call: which fault the drill injects, and how often.
FAULTS = (("error", 0.10), ("timeout", 0.05), ("malformed", 0.05))


class FaultyModel(Model):
    """The workflow's model with faults injected: unavailable, timed out, malformed answer."""

    def __init__(self, inner: Model, seed: int, pause_s: float, hold_after: int | None = None,
                 holding: Any = None) -> None:
        self.inner = inner
        self.name = f"{inner.name}+faults"
        self.kind = inner.kind
        self.rng = random.Random(seed)
        self.pause_s = pause_s
        self.injected = 0
        #: the crashing run stops answering after this many records and says so (``holding``,
        #: a process-shared event), so the crash lands mid-run however fast the machine is
        self.hold_after, self.holding = hold_after, holding
        self.asked = 0

    @property
    def version(self) -> str:
        return self.inner.version  # the release under drill: its answers are its own

    def warm(self) -> None:
        self.inner.warm()

    def bind(self, output_contract: Any) -> None:
        self.inner.bind(output_contract)

    def predict(self, inputs: Sequence[BaseModel]) -> list[Outcome]:
        time.sleep(self.pause_s)  # room for the crash to land mid-run
        if self.hold_after is not None and self.asked >= self.hold_after:
            self.holding.set()
            time.sleep(3600)  # until the drill's SIGKILL
        self.asked += len(inputs)
        answers = self.inner.predict(inputs) if not self.inner.is_async else [
            ModelUnavailable("drill: async models answer through the real endpoint")] * len(inputs)
        out: list[Outcome] = []
        for a in answers:
            draw, fault = self.rng.random(), None
            edge = 0.0
            for kind, rate in FAULTS:
                edge += rate
                if draw < edge:
                    fault = kind
                    break
            if fault is None:
                out.append(a)
                continue
            self.injected += 1
            out.append(ModelUnavailable("drill: injected model error") if fault == "error" else
                       ModelTimeout("drill: injected timeout") if fault == "timeout" else
                       MalformedOutput("drill: injected malformed output"))
        return out


def _decide(wf: Workflow, rows: list[dict[str, Any]], url: str, seed: int, pause_s: float,
            holding: Any = None) -> None:
    """One run over the sample with faults (the drill's child process, which stops answering
    half-way and waits for its crash when given ``holding``; then the resume)."""
    hold_after = len(rows) // 2 if holding is not None else None
    faulty = replace_model(wf, FaultyModel(wf.model, seed, pause_s, hold_after, holding))
    store = Store.open(url)
    try:
        Runner(faulty, store, batch_size=10).run(
            (RawRow("drill", n, r) for n, r in enumerate(rows, 1)), source="drill")
    finally:
        store.close()


def replace_model(wf: Workflow, model: Model) -> Workflow:
    """The workflow deciding with ``model`` (same name, contracts, policy and fallbacks)."""
    clone = replace(wf, model=model, fallback=list(wf.fallback_chain) or None)
    clone.source_path = wf.source_path
    return clone


def drill(wf: Workflow, store: Store, *, sample: int = 200, seed: int = 7) -> dict[str, Any]:
    """Run the drill on a scratch copy of ``sample`` recent inputs; store and return the result."""
    rows = [_json.loads(text) for text in queries.recent_inputs(store, wf.name, sample)]
    if not rows:
        raise UserError(f"{wf.name} has no records in this store to drill with; run it on some "
                        "traffic first (keel run)")
    with tempfile.TemporaryDirectory(prefix="keel-drill-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'drill.db'}"
        Store.open(url).close()
        ctx = mp.get_context("fork")
        holding = ctx.Event()
        child = ctx.Process(target=_decide, args=(wf, rows, url, seed, 0.02, holding),
                            daemon=True)
        child.start()
        killed_at = _kill_mid_run(child, url, wf.name, len(rows), holding)
        _decide(wf, rows, url, seed + 1, 0.0)  # resume: the same inputs, decided to the end
        result = _check(url, wf, rows, killed_at)
    result["sample"] = len(rows)
    ok = result["problem"] is None
    result["id"] = sql.save_drill(store, wf.name, wf.version, ok, result)
    result["ok"] = ok
    return result


def _kill_mid_run(child: Any, url: str, workflow: str, n: int, holding: Any) -> int | None:
    """SIGKILL the child once a third of the records are decided or it has stopped answering
    half-way (whichever comes first); how many were decided."""
    scratch = Store.open(url)
    try:
        deadline = time.monotonic() + 120
        while child.is_alive() and time.monotonic() < deadline:
            done = queries.status(scratch, workflow)["records"] if workflow in \
                queries.workflow_names(scratch) else 0
            if done >= max(1, n // 3) or holding.is_set():
                os.kill(child.pid, signal.SIGKILL)
                child.join()
                return int(done)
            time.sleep(0.01)
        if child.is_alive():  # still running at the deadline (stuck): stop it, never wait on it
            os.kill(child.pid, signal.SIGKILL)
        child.join()
        return None
    finally:
        scratch.close()


def _check(url: str, wf: Workflow, rows: list[dict[str, Any]],
           killed_at: int | None) -> dict[str, Any]:
    """Every input ended in exactly one disposition, none twice, the trail verifies."""
    scratch = Store.open(url)
    try:
        st = queries.status(scratch, wf.name)
        trail = verify_trail(store=scratch)
        keys = queries.key_counts(scratch, wf.name)
        faults = queries.failed_attempts(scratch, wf.name)
    finally:
        scratch.close()
    decided = sum(st["dispositions"].values())
    expected = len({str(r.get(wf.key)) for r in rows})
    twice = [k for k, c in keys.items() if c > 1]
    problem = None
    if st["records"] != expected:
        problem = f"{expected} inputs, {st['records']} records stored"
    elif st["pending"] or decided != st["records"]:
        problem = f"{st['records'] - decided} records were left without a disposition"
    elif twice:
        problem = f"{len(twice)} keys were decided twice"
    elif not trail.ok:
        problem = "the audit trail does not verify"
    elif killed_at is None:
        problem = "the crash did not land mid-run (the sample was decided too fast)"
    return {"records": st["records"], "expected": expected, "dispositions": st["dispositions"],
            "faults": faults, "killed_at": killed_at, "decided_twice": len(twice),
            "trail_ok": trail.ok, "problem": problem}
