"""Contracts: what a valid input or output is, and violations a person can act on."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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
        self.fields = tuple(model.model_fields)
        self._validate = model.__pydantic_validator__.validate_python  # model_validate, minus a hop

    def validate(self, data: Any, *, strict: bool = False) -> tuple[BaseModel | None, list[Violation]]:
        """Parse ``data``; return the value, or None and every violation found. ``strict``
        takes values only as the JSON schema describes them (no ``false`` for a number, no
        ``"1"`` for an integer): what an API promising that schema must do."""
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
        found = [v for v in (c.run(value) for c in self.checks) if v is not None]
        return (None, found) if found else (value, [])

    def as_json(self, value: BaseModel) -> dict[str, Any]:
        """A valid value as JSON-ready data: ``value.model_dump(mode="json")`` without its
        argument handling (a third of its cost, on the hot path once per record)."""
        out: dict[str, Any] = type(value).__pydantic_serializer__.to_python(value, mode="json")
        return out

    def schema(self) -> dict[str, Any]:
        return self.model.model_json_schema()
