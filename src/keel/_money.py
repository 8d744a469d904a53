"""What a workflow declares about money: model prices (versioned by effective date), what a
reviewer's hour and a wrong automatic decision cost, what automation is worth, and budgets.

Plain settings, checked when declared: a negative or malformed price, an unknown currency or
a budget without a limit is a :class:`keel.errors.CostError` naming the item and the fix.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from keel._prediction import Usage
from keel.errors import CostError

#: keel accounts in US dollars: model price tables are in USD, and one currency keeps sums honest
CURRENCY = "USD"
#: what a workflow does with a record once a budget is spent
ON_EXHAUSTED = ("fallback", "review", "stop")
PERIODS = ("day", "month")
#: a month, for projections
MONTH_DAYS = 30.0
_VOLUME = re.compile(r"^\s*([0-9][0-9_,]*(?:\.\d+)?)\s*/\s*(day|d|month|mo|hour|h)\s*$")
_PER_DAY = {"day": 1.0, "d": 1.0, "month": 1 / MONTH_DAYS, "mo": 1 / MONTH_DAYS,
            "hour": 24.0, "h": 24.0}


def _amount(what: str, value: Any, *, allow_none: bool = False) -> float | None:
    """A money or count figure: a finite number >= 0 (a numeric string is accepted)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool):
        raise CostError(f"{what} must be a number >= 0, got {value!r}")
    try:
        num = float(value)
    except (TypeError, ValueError):
        raise CostError(f"{what} must be a number >= 0, got {value!r}") from None
    if not math.isfinite(num) or num < 0:
        raise CostError(f"{what} must be a finite number >= 0, got {value!r}")
    return num


def _currency(what: str, code: Any) -> None:
    if code != CURRENCY:
        known = isinstance(code, str) and len(code) == 3 and code.isalpha() and code.isupper()
        why = ("keel accounts in USD only; convert the amount to USD" if known
               else "not an ISO 4217 currency code; keel accounts in USD")
        raise CostError(f"{what}: currency {code!r} is {why}")


def parse_volume(text: str | float) -> float:
    """``50000/day``, ``1.5e6/month``, ``2000/hour`` (or a number: per day) -> records per day."""
    if isinstance(text, (int, float)):
        per_day = float(text)
    else:
        m = _VOLUME.match(text)
        if m is None:
            try:
                per_day = float(text)
            except ValueError:
                raise CostError(f"volume {text!r}: write records per period, e.g. 50000/day, "
                                "1500000/month or 2000/hour") from None
        else:
            per_day = float(m.group(1).replace(",", "").replace("_", "")) * _PER_DAY[m.group(2)]
    if not math.isfinite(per_day) or per_day <= 0:
        raise CostError(f"volume {text!r}: a projection needs more than 0 records, e.g. 50000/day")
    return per_day


@dataclass(frozen=True)
class ModelPrice:
    """A model's price from ``effective_from`` (an ISO date, UTC) until a later entry for the
    same model: USD per million input and output tokens, and per call (a self-hosted model's
    serving cost). ``model`` is the model's name (``Model.name``) or its version."""

    model: str
    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    per_call_usd: float = 0.0
    effective_from: str = "1970-01-01"
    currency: str = CURRENCY

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise CostError(f"a price needs the model's name, got model={self.model!r}")
        for name in ("input_per_mtok", "output_per_mtok", "per_call_usd"):
            object.__setattr__(self, name, _amount(f"price of {self.model}: {name}",
                                                   getattr(self, name)))
        _currency(f"price of {self.model}", self.currency)
        try:
            date.fromisoformat(str(self.effective_from))
        except ValueError:
            raise CostError(f"price of {self.model}: effective_from {self.effective_from!r} is "
                            "not an ISO date such as 2026-01-31") from None
        object.__setattr__(self, "effective_from", str(self.effective_from))

    @property
    def starts_at(self) -> float:
        day = date.fromisoformat(self.effective_from)
        return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()

    @property
    def tag(self) -> str:
        """How a decision names the price it was charged at."""
        return self.model + "@" + self.effective_from

    def cost_usd(self, usage: Usage) -> float:
        return (self.per_call_usd + usage.input_tokens * self.input_per_mtok / 1e6
                + usage.output_tokens * self.output_per_mtok / 1e6)

    def max_call_usd(self, tokens: int) -> float:
        """The most a call of at most ``tokens`` tokens (in and out) can cost."""
        return self.per_call_usd + tokens * max(self.input_per_mtok, self.output_per_mtok) / 1e6


class PriceTable:
    """Model prices by effective date. ``at(model, when)`` is the entry in force then."""

    def __init__(self, entries: Sequence[ModelPrice]) -> None:
        by_model: dict[str, list[ModelPrice]] = {}
        for e in entries:
            if not isinstance(e, ModelPrice):
                raise CostError(f"prices takes keel.ModelPrice entries, got {type(e).__name__}")
            by_model.setdefault(e.model, []).append(e)
        for model, rows in by_model.items():
            rows.sort(key=lambda r: r.effective_from)
            dates = [r.effective_from for r in rows]
            if len(set(dates)) != len(dates):
                raise CostError(f"model {model} has two prices effective on the same day; "
                                "keep one entry per model and date")
        self.by_model = by_model
        self._starts = {m: [(r.starts_at, r) for r in rows] for m, rows in by_model.items()}
        blob = json.dumps([asdict(e) for rows in by_model.values() for e in rows], sort_keys=True)
        #: the table's content hash: which prices a report was computed with
        self.version = hashlib.sha256(blob.encode()).hexdigest()[:12]

    def at(self, names: Sequence[str], when: float) -> ModelPrice | None:
        for name in names:
            found = None
            for start, row in self._starts.get(name, ()):
                if start <= when:
                    found = row
            if found is not None:
                return found
        return None

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_model.values())


def load_prices(path: str | Path) -> list[ModelPrice]:
    """Prices from a TOML or JSON file: ``[[price]]`` tables (TOML) or a ``price`` list (JSON),
    each with ``model`` and any of ``input_per_mtok``, ``output_per_mtok``, ``per_call_usd``,
    ``effective_from``, ``currency``."""
    file = Path(path)
    if not file.is_file():
        raise CostError(f"price file {str(file)!r} does not exist")
    try:
        data = (json.loads(file.read_text()) if file.suffix == ".json"
                else tomllib.loads(file.read_text()))
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if file.suffix == ".json" else "TOML"
        raise CostError(f"price file {file} is not valid {kind}: {exc}") from exc
    rows = data.get("price") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        raise CostError(f"price file {file} lists no prices; add [[price]] tables with "
                        "model = ... and input_per_mtok / output_per_mtok / per_call_usd")
    known = set(ModelPrice.__dataclass_fields__)
    out = []
    for n, row in enumerate(rows, 1):
        extra = sorted(set(row) - known) if isinstance(row, dict) else ["(not a table)"]
        if extra:
            raise CostError(f"price file {file}, price {n}: unknown field(s) {extra}; "
                            f"fields are {sorted(known)}")
        out.append(ModelPrice(**row))
    return out


@dataclass(frozen=True)
class Budget:
    """A spending limit for the workflow per ``period`` (``day`` or ``month``, UTC), in USD
    and/or in tokens. keel reserves a call's estimated maximum before it is made and settles
    the real cost after, atomically in the store."""

    period: str = "day"
    usd: float | None = None
    tokens: int | None = None
    currency: str = CURRENCY

    def __post_init__(self) -> None:
        if self.period not in PERIODS:
            raise CostError(f"budget period {self.period!r}: use 'day' or 'month'")
        if self.usd is None and self.tokens is None:
            raise CostError(f"a {self.period} budget needs a limit: usd=... and/or tokens=...")
        object.__setattr__(self, "usd", _amount(f"{self.period} budget usd", self.usd,
                                                allow_none=True))
        toks = _amount(f"{self.period} budget tokens", self.tokens, allow_none=True)
        object.__setattr__(self, "tokens", None if toks is None else int(toks))
        _currency(f"{self.period} budget", self.currency)

    def window(self, now: float) -> str:
        """The period ``now`` falls in: ``2026-12-06`` or ``2026-12``."""
        day = datetime.fromtimestamp(now, tz=UTC)
        return day.strftime("%Y-%m-%d" if self.period == "day" else "%Y-%m")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Cost:
    """Money, declared on a workflow: ``Workflow(..., cost=keel.Cost(...))``.

    ``prices``: :class:`ModelPrice` entries, or the path of a TOML/JSON price file (relative
    to the workflow file). A model with no entry is priced by its adapter (an LLM's price
    from genai-prices); one with neither is reported as *unknown*, never as $0. Rules are
    free. ``reviewer_usd_per_hour`` prices review: a task's handling time (claim to decision)
    times the rate; until reviews are measured, ``review_s_per_task`` is the declared
    estimate. ``wrong_decision_usd`` is what a wrong automatic decision costs;
    ``manual_handling_s`` and ``value_per_record_usd`` what a record costs by hand and is
    worth, for the value of automation. ``infra_usd_per_month``, ``retrain_usd_per_run`` and
    ``retrains_per_month`` enter the monthly projection. ``target_volume`` is the production
    volume the dashboard projects to (``"50000/day"``, ``"1500000/month"``; see
    :func:`keel.cost.parse_volume`).

    ``budgets`` are enforced per workflow: each record reserves ``max_call_usd`` (default:
    the primary model's price for ``max_call_tokens`` tokens) before its model call. Once a
    budget is spent the workflow does ``on_exhausted``: ``fallback`` (its rules decide),
    ``review`` (a person decides) or ``stop`` (the record ends ``failed`` with code
    ``keel.budget``, kept for ``keel replay``). ``labels`` is a labelled file for
    ``keel cost --thresholds`` when the store has too few reviewed labels (its right answer in
    ``label_column``, or in columns named after the output's fields).
    """

    prices: Sequence[ModelPrice] | str | Path = ()
    reviewer_usd_per_hour: float | None = None
    review_s_per_task: float | None = None
    reviewer_hours_per_day: float = 6.0
    wrong_decision_usd: float | None = None
    manual_handling_s: float | None = None
    value_per_record_usd: float | None = None
    infra_usd_per_month: float = 0.0
    retrain_usd_per_run: float = 0.0
    retrains_per_month: float = 0.0
    budgets: Sequence[Budget] = ()
    max_call_usd: float | None = None
    max_call_tokens: int = 4000
    on_exhausted: str = "stop"
    labels: str | None = None
    label_column: str | None = None
    target_volume: str | None = None
    currency: str = CURRENCY
    _table: list[PriceTable] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        _currency("cost", self.currency)
        for name in ("reviewer_usd_per_hour", "review_s_per_task", "wrong_decision_usd",
                     "manual_handling_s", "value_per_record_usd", "max_call_usd"):
            object.__setattr__(self, name, _amount(name, getattr(self, name), allow_none=True))
        for name in ("reviewer_hours_per_day", "infra_usd_per_month", "retrain_usd_per_run",
                     "retrains_per_month", "max_call_tokens"):
            object.__setattr__(self, name, _amount(name, getattr(self, name)))
        if self.target_volume is not None:
            parse_volume(self.target_volume)  # a bad volume is said where it is declared
        if not self.reviewer_hours_per_day:
            raise CostError("reviewer_hours_per_day must be > 0 (a reviewer's working hours)")
        object.__setattr__(self, "max_call_tokens", int(self.max_call_tokens))
        if self.on_exhausted not in ON_EXHAUSTED:
            raise CostError(f"on_exhausted {self.on_exhausted!r}: use one of "
                            f"{', '.join(ON_EXHAUSTED)}")
        for b in self.budgets:
            if not isinstance(b, Budget):
                raise CostError(f"budgets takes keel.Budget objects, got {type(b).__name__}")
        periods = [b.period for b in self.budgets]
        if len(set(periods)) != len(periods):
            raise CostError("one budget per period: merge the usd and tokens limits into one "
                            "keel.Budget")
        if not isinstance(self.prices, (str, Path)):
            self._table.append(PriceTable(list(self.prices)))

    def table(self, base: str | Path | None = None) -> PriceTable:
        """The price table (a price file is read once, relative to ``base``)."""
        if not self._table:
            path = Path(self.prices)  # type: ignore[arg-type]
            if not path.is_absolute() and base is not None:
                path = Path(base) / path
            self._table.append(PriceTable(load_prices(path)))
        return self._table[0]

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("_table", "prices", "budgets")}
        out["prices"] = (str(self.prices) if isinstance(self.prices, (str, Path))
                         else [asdict(p) for p in self.prices])
        out["budgets"] = [b.as_dict() for b in self.budgets]
        return out



#: (cost in USD, known?, the price entry's tag or None)
Priced = tuple[float, bool, str | None]


class Pricer:
    """Prices one try of one model from the workflow's table, in force at the time of the
    call. Rules are free; a model with no entry keeps its adapter's price; a model with
    neither (an adapter that priced nothing) is unknown."""

    def __init__(self, table: PriceTable, clock: Callable[[], float] = time.time) -> None:
        self.table = table
        self.clock = clock
        self._cache: dict[tuple[str, int], ModelPrice | None] = {}

    def __call__(self, model: Any, usage: Usage | None) -> Priced:
        if model.kind == "rules":
            return 0.0, True, None
        entry = self.entry(model, self.clock())
        if entry is None:
            if usage is None:
                return 0.0, True, None  # nothing came back: nothing was billed
            known = usage.priced and (usage.cost_usd > 0 or model.kind in ("openai",))
            return usage.cost_usd, known, None
        if usage is None:
            return 0.0, True, entry.tag
        return entry.cost_usd(usage), True, entry.tag

    def entry(self, model: Any, when: float) -> ModelPrice | None:
        """The entry in force for ``model`` at ``when`` (looked up once per model and day)."""
        key = (model.version, int(when // 86400))
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = self._cache[key] = self.table.at((model.name, model.version), when)
        if len(self._cache) > 1024:
            self._cache.clear()
        return found
