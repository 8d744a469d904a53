"""Contracts: what a valid input or output is, and violations a person can act on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

_SNIPPET = 60


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: which field, which rule, and what to do about it."""

    field: str
    rule: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "rule": self.rule, "message": self.message}

    def __str__(self) -> str:
        return f"{self.field}: {self.message} [{self.rule}]"


@dataclass(frozen=True, slots=True)
class Check:
    """A named rule over a parsed value: ``fn(value) -> bool`` (True means it holds)."""

    name: str
    fn: Callable[[Any], bool]
    field: str = "*"
    message: str | None = None

    def run(self, value: Any) -> Violation | None:
        try:
            ok = bool(self.fn(value))
        except Exception as exc:  # a check that crashes is a violation, not a lost record
            return Violation(self.field, self.name, f"check raised {type(exc).__name__}: {exc}")
        if ok:
            return None
        return Violation(self.field, self.name, self.message or f"check '{self.name}' failed")


def check(
    name: str, fn: Callable[[Any], bool], *, field: str = "*", message: str | None = None
) -> Check:
    """Declare a named check, e.g. ``check("total matches lines", lambda r: r.total == sum(r.lines))``."""
    return Check(name=name, fn=fn, field=field, message=message)


#: What a store hands a :class:`DecidedValues`: (record key, decided output, decided_at) rows
#: decided at or after the given time (None: all of them).
DecidedSource = Callable[[float | None], Iterable[tuple[str, Any, float]]]


def _norm(value: Any) -> str:
    return " ".join(str(value).split()).casefold()


class DecidedValues:
    """Which record holds each combination of some output fields' values: the workflow's
    decided outputs in the store once :meth:`bind` is called (read once, then what was
    decided since at each :meth:`refresh`), plus the outputs this process has passed. Values
    are compared with case and runs of spaces ignored."""

    #: transactions commit in an order their decided_at times need not follow: every
    #: SWEEP_EVERY_S a refresh reads again the OVERLAP_S before the newest decision seen
    OVERLAP_S = 120.0
    SWEEP_EVERY_S = 30.0

    def __init__(self, fields: Sequence[str]) -> None:
        self.fields = tuple(fields)
        self.owner: dict[tuple[str, ...], str] = {}
        self._source: DecidedSource | None = None
        self._newest: float | None = None
        self._swept = 0.0
        self._lock = threading.Lock()

    def bind(self, source: DecidedSource) -> None:
        """Read the decided outputs from ``source`` now, and at each refresh what is new."""
        with self._lock:
            self._source, self._newest = source, None
        self.refresh()

    def refresh(self) -> None:
        """Learn the outputs decided since the last refresh (by any process on the store):
        one query over the newest decisions, not a read of them all."""
        with self._lock:
            if self._source is None:
                return
            since, now = self._newest, time.monotonic()
            if since is not None and now - self._swept >= self.SWEEP_EVERY_S:
                since, self._swept = since - self.OVERLAP_S, now
            for key, output, at in self._source(since):
                values = self.values_of(output)
                if values is not None:
                    self.owner.setdefault(values, key)
                self._newest = at if self._newest is None else max(self._newest, at)

    def values_of(self, output: Any) -> tuple[str, ...] | None:
        if isinstance(output, dict):
            values = [output.get(f) for f in self.fields]
        else:
            values = [getattr(output, f, None) for f in self.fields]
        return None if any(v is None for v in values) else tuple(_norm(v) for v in values)

    def claim(self, output: Any, key: str) -> str | None:
        """Take the output's values for ``key``; the other record holding them, if any."""
        values = self.values_of(output)
        if values is None:
            return None
        with self._lock:
            holder = self.owner.setdefault(values, key)
        return None if holder == key else holder


@dataclass(frozen=True, slots=True)
class Unique(Check):
    """A check that an output's ``fields`` hold values no other record's decided output
    holds (see :func:`unique`). It needs the record's key, so it is run only on a record's
    output (by the predict stage and for a reviewer's correction), after every other check of
    the contract has passed; the output it passes is remembered for the record."""

    book: DecidedValues = field(default_factory=lambda: DecidedValues(()))

    def run_for(self, value: Any, key: str) -> Violation | None:
        holder = self.book.claim(value, key)
        if holder is None:
            return None
        text = self.message or f"{', '.join(self.book.fields)} already decided for another record"
        return Violation(self.field, self.name, f"{text} (record {holder})")


def unique(name: str, *fields: str, field: str | None = None,
           message: str | None = None) -> Unique:
    """Declare that no two records may be decided with the same values of ``fields``, e.g.
    ``unique("no duplicate invoice", "vendor", "invoice_number", field="invoice_number")``.
    Put it in a workflow's ``output_checks``: keel reads the workflow's decided outputs from
    the store when a run starts, and what other processes decided since before each batch.
    A violation (a duplicate) names ``field`` (default: the last of ``fields``) and the record
    that holds the values."""
    if not fields:
        raise ValueError(f"unique check {name!r}: name the fields that must not repeat")
    return Unique(name=name, fn=lambda _value: True, field=field or fields[-1],
                  message=message, book=DecidedValues(fields))


def _snippet(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SNIPPET else text[: _SNIPPET - 3] + "..."


def _violation(err: Mapping[str, Any]) -> Violation:
    field = ".".join(str(p) for p in err.get("loc", ())) or "*"
    rule = str(err.get("type", "invalid"))
    if rule == "missing":
        return Violation(field, rule, f"required field '{field}' is missing; supply a value for it")
    if rule == "extra_forbidden":
        return Violation(field, rule, f"unexpected field '{field}'; remove it or declare it in the contract")
    msg = str(err.get("msg", "invalid value"))
    if "input" in err:
        msg = f"{msg} (got {_snippet(err['input'])})"
    return Violation(field, rule, msg)


class Contract:
    """A pydantic model plus named checks."""

    def __init__(self, model: type[BaseModel], checks: Sequence[Check] = ()) -> None:
        self.model = model
        self.checks = tuple(checks)
        self.unique = tuple(c for c in self.checks if isinstance(c, Unique))
        self._plain = tuple(c for c in self.checks if not isinstance(c, Unique))
        self.fields = tuple(model.model_fields)
        self._validate = model.__pydantic_validator__.validate_python  # model_validate, minus a hop

    def validate(self, data: Any, *, strict: bool = False,
                 key: str | None = None) -> tuple[BaseModel | None, list[Violation]]:
        """Parse ``data``; return the value, or None and every violation found. ``strict``
        takes values only as the JSON schema describes them (no ``false`` for a number, no
        ``"1"`` for an integer): what an API promising that schema must do. ``key``: the
        record the value is the output of; :class:`Unique` checks run only with it, and only
        once every other check has passed."""
        if isinstance(data, self.model):
            value = data
        else:
            if isinstance(data, BaseModel):
                data = data.model_dump()
            try:
                value = self._validate(data, strict=True) if strict else self._validate(data)
            except ValidationError as exc:
                return None, [_violation(e) for e in exc.errors(include_url=False)]
        if not self.checks:
            return value, []
        found = [v for v in (c.run(value) for c in self._plain) if v is not None]
        if not found and key is not None:
            found = [v for v in (c.run_for(value, key) for c in self.unique) if v is not None]
        return (None, found) if found else (value, [])

    def as_json(self, value: BaseModel) -> dict[str, Any]:
        """A valid value as JSON-ready data: ``value.model_dump(mode="json")`` without its
        argument handling (a third of its cost, on the hot path once per record)."""
        out: dict[str, Any] = type(value).__pydantic_serializer__.to_python(value, mode="json")
        return out

    def schema(self) -> dict[str, Any]:
        return self.model.model_json_schema()
