"""Cost in the store: budget windows (reserve before a call, settle after, atomically) and the
rows a cost report is computed from.

A reservation is one read of its windows and one conditional UPDATE per window
(``spent + reserved + ask <= limit``, booking the previous batch's settlement in the same
statement) inside one transaction: PostgreSQL re-checks the condition on the row it locks, SQLite runs
the transaction under its write lock (BEGIN IMMEDIATE), so concurrent runs, servers and
workers can never reserve past a limit together.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, and_, func, select, tuple_, update

from keel._money import Cost, Pricer
from keel.errors import CostError
from keel.models import Model
from keel.store import _schema as t
from keel.store._engine import insert_ignore
from keel.store._store import Store


@dataclass(frozen=True)
class Limit:
    """One budget window: its limits (None: no limit in that unit)."""

    period: str
    window: str
    usd: float | None
    tokens: int | None


class _Lost(Exception):
    """Another writer took the room between our read and our update: read again."""


#: a reservation takes records' room ahead only while every window has this many times more
SLACK = 8

#: the fewest records' room taken ahead when there is room to spare: a server deciding one
#: record per request then needs a reservation transaction every few dozen records
AHEAD = 64

#: a reservation asks for room for this many batches ahead of the one that asks (graded
#: down by SLACK as the windows fill): a reservation transaction every dozen batches, where
#: each waits for the writer's commit on SQLite
AHEAD_BATCHES = 12

#: money is compared with this slack, so float sums of reservations never refuse a call
#: that fits to the cent
_EPS = 1e-9


def reserve(store: Store, workflow: str, limits: Sequence[Limit], n: int, each_usd: float,
            each_tokens: int, now: float | None = None,
            settling: tuple[Sequence[Limit], tuple[float, int, float, int]] | None = None,
            prefetch: int = 0) -> int:
    """Reserve room for up to ``n`` calls in every window; returns how many were granted
    (0..n, or n + ``prefetch`` when every window has room for :data:`SLACK` times that).
    The refused are counted on the windows that were short. ``settling``: an earlier
    batch's settlement (its windows; reserved USD and tokens to give back, USD and tokens
    spent), booked in the same statements when its windows are these, else first in the
    same transaction."""
    now = time.time() if now is None else now
    back = None
    if settling is not None and list(settling[0]) == list(limits):
        back, settling = settling[1], None
    for _try in range(20):
        try:
            with store.tx() as conn:
                if settling is not None:
                    _settle(conn, store, workflow, settling[0], *settling[1], now)
                return _reserve(conn, store, workflow, limits, n, each_usd, each_tokens, now,
                                prefetch, back or _NOTHING)
        except _Lost:
            continue
    if settling is not None:
        settle(store, workflow, settling[0], *settling[1], now=now)
    elif back is not None:
        settle(store, workflow, limits, *back, now=now)
    return 0


#: no settlement: reserved USD and tokens to give back, USD and tokens spent
_NOTHING = (0.0, 0, 0.0, 0)


def _reserve(conn: Connection, store: Store, workflow: str, limits: Sequence[Limit], n: int,
             each_usd: float, each_tokens: int, now: float, prefetch: int,
             back: tuple[float, int, float, int]) -> int:
    """One read of the windows, then one conditional UPDATE per window that books ``back``
    (a settlement) and takes the reservation together."""
    rows = [_after(row, back) for row in _rows(conn, store, workflow, limits, now)]
    room = min((_room(lim, row, each_usd, each_tokens)
                for lim, row in zip(limits, rows, strict=True)), default=1 << 30)
    # room to spare: take some ahead (as much as asked while every window keeps SLACK times
    # what is held, less as the windows fill, none near a limit), so that the next batches
    # need no transaction of their own
    extra = min(prefetch, room // SLACK - n) if prefetch else 0
    grant = max(n + extra if extra > 0 else min(n, room), 0)
    for lim, row in zip(limits, rows, strict=True):
        short = grant <= 0 and _room(lim, row, each_usd, each_tokens) < n
        if grant <= 0 and not short and back == _NOTHING:
            continue  # nothing to book on this window
        values, held_usd, held_tok = _booking(store, back, grant * each_usd,
                                              grant * each_tokens)
        cond = [_key(workflow, lim)]
        if grant > 0 and lim.usd is not None:
            cond.append(t.budget_windows.c.spent_usd + back[2] + held_usd <= lim.usd + _EPS)
        if grant > 0 and lim.tokens is not None:
            cond.append(t.budget_windows.c.spent_tokens + back[3] + held_tok <= lim.tokens)
        refused = n - grant if grant > 0 else (n if short else 0)
        done = conn.execute(update(t.budget_windows).where(and_(*cond)).values(
            **values, refused=t.budget_windows.c.refused + max(refused, 0), updated_at=now))
        if not done.rowcount:
            raise _Lost
    return grant


def _booking(store: Store, back: tuple[float, int, float, int], ask_usd: float,
             ask_tokens: int) -> tuple[dict[str, Any], Any, Any]:
    """The new columns of a window that gives back ``back`` and takes ``ask``; and what it
    holds reserved afterwards (USD, tokens), for the limit's condition."""
    bw = t.budget_windows
    floor = func.max if store.dialect == "sqlite" else func.greatest
    held_usd = floor(bw.c.reserved_usd - back[0], 0.0) + ask_usd
    held_tok = bw.c.reserved_tokens - back[1] + ask_tokens
    return ({"reserved_usd": held_usd, "reserved_tokens": held_tok,
             "spent_usd": bw.c.spent_usd + back[2], "spent_tokens": bw.c.spent_tokens + back[3]},
            held_usd, held_tok)


@dataclass(frozen=True)
class _Window:
    spent_usd: float
    reserved_usd: float
    spent_tokens: int
    reserved_tokens: int


def _after(row: Any, back: tuple[float, int, float, int]) -> _Window:
    """A window as it stands once ``back`` is booked."""
    return _Window(row.spent_usd + back[2], max(row.reserved_usd - back[0], 0.0),
                   row.spent_tokens + back[3], row.reserved_tokens - back[1])


def _room(lim: Limit, row: Any, each_usd: float, each_tokens: int) -> int:
    room = math.inf
    if lim.usd is not None:
        left = lim.usd - row.spent_usd - row.reserved_usd + _EPS
        room = min(room, left // each_usd if each_usd > 0 else (math.inf if left >= 0 else 0))
    if lim.tokens is not None:
        left_t = lim.tokens - row.spent_tokens - row.reserved_tokens
        room = min(room, left_t // each_tokens if each_tokens > 0 else
                   (math.inf if left_t >= 0 else 0))
    return int(max(room, 0)) if room != math.inf else 1 << 30


def _key(workflow: str, lim: Limit) -> Any:
    bw = t.budget_windows
    return and_(bw.c.workflow == workflow, bw.c.period == lim.period, bw.c.window == lim.window)


def _rows(conn: Connection, store: Store, workflow: str, limits: Sequence[Limit],
          now: float) -> list[Any]:
    """The windows' rows, in the order of ``limits``, made on first use (one SELECT once
    they exist)."""
    bw = t.budget_windows
    want = [(lim.period, lim.window) for lim in limits]
    found = {(r.period, r.window): r for r in conn.execute(select(bw).where(
        bw.c.workflow == workflow, tuple_(bw.c.period, bw.c.window).in_(want)))} if want else {}
    missing = [w for w in want if w not in found]
    if missing:
        conn.execute(insert_ignore(store.engine, bw), [
            {"workflow": workflow, "period": period, "window": window, "spent_usd": 0.0,
             "reserved_usd": 0.0, "spent_tokens": 0, "reserved_tokens": 0, "refused": 0,
             "updated_at": now} for period, window in missing])
        return _rows(conn, store, workflow, limits, now)
    return [found[w] for w in want]


def settle(store: Store, workflow: str, limits: Sequence[Limit], reserved_usd: float,
           reserved_tokens: int, spent_usd: float, spent_tokens: int,
           now: float | None = None) -> None:
    """Give back a reservation and book what was really spent (in one transaction)."""
    now = time.time() if now is None else now
    with store.tx() as conn:
        _settle(conn, store, workflow, limits, reserved_usd, reserved_tokens, spent_usd,
                spent_tokens, now)


def _settle(conn: Connection, store: Store, workflow: str, limits: Sequence[Limit],
            reserved_usd: float, reserved_tokens: int, spent_usd: float, spent_tokens: int,
            now: float) -> None:
    back = (reserved_usd, reserved_tokens, spent_usd, spent_tokens)
    for lim in limits:
        values = _booking(store, back, 0.0, 0)[0]
        conn.execute(update(t.budget_windows).where(_key(workflow, lim)).values(
            **values, updated_at=now))


def windows(store: Store, workflow: str, limits: Sequence[Limit] = ()) -> list[dict[str, Any]]:
    """The budget windows' state: every stored window of ``workflow``, newest first."""
    bw = t.budget_windows
    with store.engine.connect() as conn:
        rows = conn.execute(select(bw).where(bw.c.workflow == workflow)
                            .order_by(bw.c.window.desc(), bw.c.period)).mappings().all()
    return [dict(r) for r in rows]


# -- the budget keeper the predict stage calls ----------------------------------------------
@dataclass
class Grant:
    """What one batch reserved: records granted, and the room they hold."""

    granted: int
    usd: float
    tokens: int


class BudgetKeeper:
    """Reserves room in a workflow's budget windows before a batch's model calls and settles
    the real spend after. ``each_usd``/``each_tokens``: one record's reservation.

    A settlement is booked in the next reservation's transaction (one transaction per batch,
    not two) or by :meth:`flush` (the runner's close, and ``keel serve`` every few seconds);
    until then its room stays reserved, so the limit holds meanwhile."""

    def __init__(self, store: Store, workflow: str, cost: Cost, each_usd: float,
                 each_tokens: int, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.workflow = workflow
        self.cost = cost
        self.each_usd = each_usd
        self.each_tokens = each_tokens
        self.clock = clock
        self.on_exhausted = cost.on_exhausted
        self._lock = threading.Lock()
        #: settlements not yet booked, per set of windows
        self._pending: dict[tuple[Limit, ...], list[float]] = {}
        #: records' room reserved ahead in the store and not yet handed out, per windows
        self._ahead: dict[tuple[Limit, ...], int] = {}

    def limits(self, now: float) -> list[Limit]:
        return [Limit(b.period, b.window(now), b.usd, b.tokens)
                for b in self.cost.budgets]

    def reserve(self, n: int) -> tuple[Grant, list[Limit]]:
        limits = self.limits(self.clock())
        key = tuple(limits)
        with self._lock:
            have = self._ahead.get(key, 0)
            if have >= n:  # room taken ahead: no transaction
                self._ahead[key] = have - n
                return self._grant(n), limits
            self._ahead[key] = 0
            pending = self._pending.pop(key, None)
        settling = None if pending is None else (limits, _amounts(pending))
        need = n - have
        got = reserve(self.store, self.workflow, limits, need, self.each_usd,
                      self.each_tokens, settling=settling, prefetch=max(AHEAD_BATCHES * need, AHEAD))
        with self._lock:
            self._ahead[key] = self._ahead.get(key, 0) + max(got - need, 0)
        return self._grant(have + min(got, need)), limits

    def _grant(self, n: int) -> Grant:
        return Grant(n, n * self.each_usd, n * self.each_tokens)

    def settle(self, grant: Grant, limits: list[Limit], spent_usd: float,
               spent_tokens: int) -> None:
        with self._lock:
            acc = self._pending.setdefault(tuple(limits), [0.0, 0.0, 0.0, 0.0])
            acc[0] += grant.usd
            acc[1] += grant.tokens
            acc[2] += spent_usd
            acc[3] += spent_tokens

    def flush(self) -> None:
        """Book every settlement not yet booked."""
        with self._lock:
            pending, self._pending = self._pending, {}
            ahead, self._ahead = self._ahead, {}
        for key, records in ahead.items():  # room taken ahead goes back
            acc = pending.setdefault(key, [0.0, 0.0, 0.0, 0.0])
            acc[0] += records * self.each_usd
            acc[1] += records * self.each_tokens
        for limits, acc in pending.items():
            settle(self.store, self.workflow, limits, *_amounts(acc))

    def describe(self) -> str:
        parts = []
        for b in self.cost.budgets:
            lim = " and ".join(x for x in (f"${b.usd:g}" if b.usd is not None else "",
                                            f"{b.tokens:,} tokens" if b.tokens else "") if x)
            parts.append(f"{b.period} budget of {lim}")
        return "; ".join(parts)


def _amounts(acc: list[float]) -> tuple[float, int, float, int]:
    return acc[0], int(acc[1]), acc[2], int(acc[3])


def metering(cost: Cost | None, primary: Model, fallbacks: Sequence[Model], store: Store,
             workflow: str, base: str | Path | None) -> tuple[Pricer | None, BudgetKeeper | None]:
    """The pricer and budget keeper a workflow's declaration asks for (None, None: none)."""
    if cost is None:
        return None, None
    pricer = Pricer(cost.table(base))
    if not cost.budgets:
        return pricer, None
    if cost.on_exhausted == "fallback" and not any(m.kind == "rules" for m in fallbacks):
        raise CostError("on_exhausted='fallback' needs rules in the workflow's fallback "
                        "(keel.Rules or a function); or use 'review' or 'stop'")
    each = cost.max_call_usd
    if each is None:
        entry = pricer.table.at((primary.name, primary.version), time.time())
        if entry is None:
            if any(b.usd is not None for b in cost.budgets):
                raise CostError(
                    f"a budget in USD needs what one call may cost: give the model "
                    f"{primary.name!r} a keel.ModelPrice, or set Cost(max_call_usd=...)")
            each = 0.0
        else:
            each = entry.max_call_usd(cost.max_call_tokens)
    return pricer, BudgetKeeper(store, workflow, cost, each, cost.max_call_tokens)


# -- what a cost report reads ---------------------------------------------------------------------
def decision_rows(store: Store, workflow: str, since: float | None) -> list[dict[str, Any]]:
    """Per decided record: disposition, model cost (all tries, all steps), its fallback share,
    whether its cost is unknown, release, audit flag, decided_at."""
    d, p = t.decisions, t.predictions
    cond = [d.c.workflow == workflow]
    if since is not None:
        cond.append(d.c.decided_at >= since)
    fb = (select(p.c.record_id, func.sum(p.c.cost_usd).label("fallback_usd"))
          .where(p.c.step != "primary").group_by(p.c.record_id).subquery())
    unk = (select(p.c.record_id, func.count().label("unknown"))
           .where(p.c.metadata.like('%"price":"unknown"%')).group_by(p.c.record_id).subquery())
    q = (select(d.c.record_id, d.c.disposition, d.c.cost_usd, d.c.release_id, d.c.audit,
                d.c.decided_at, d.c.confidence,
                func.coalesce(fb.c.fallback_usd, 0.0).label("fallback_usd"),
                func.coalesce(unk.c.unknown, 0).label("unknown"))
         .select_from(d.outerjoin(fb, fb.c.record_id == d.c.record_id)
                      .outerjoin(unk, unk.c.record_id == d.c.record_id))
         .where(and_(*cond)))
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


def review_rows(store: Store, workflow: str, since: float | None) -> list[dict[str, Any]]:
    """Decided review tasks: record, reason, reviewer, handling time in seconds (None when the
    task was decided without a claim), decided_at."""
    rt = t.review_tasks
    cond = [rt.c.workflow == workflow, rt.c.status == "decided"]
    if since is not None:
        cond.append(rt.c.decided_at >= since)
    q = select(rt.c.record_id, rt.c.reason, rt.c.decided_by, rt.c.claimed_at, rt.c.decided_at,
               rt.c.created_at).where(and_(*cond))
    with store.engine.connect() as conn:
        out = []
        for r in conn.execute(q).mappings():
            row = dict(r)
            claimed = row.pop("claimed_at")
            row["handling_s"] = (max(0.0, row["decided_at"] - claimed)
                                 if claimed is not None and row["decided_at"] is not None else None)
            out.append(row)
        return out


def open_reviews(store: Store, workflow: str) -> int:
    rt = t.review_tasks
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).where(
            rt.c.workflow == workflow, rt.c.status == "open")).scalar_one())
