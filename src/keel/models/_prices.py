"""What a model's tokens cost, from a maintained price table (Pydantic's ``genai-prices``).

:func:`price_for` resolves a model name as an OpenAI-compatible client sends it: dated
snapshots (``gpt-4o-mini-2024-07-18``), fine-tunes (``ft:gpt-4o-mini:org::id``), routing
prefixes a proxy uses (``openai/gpt-4o-mini``) and dated names the table does not list yet
(``gpt-4.1-2099-01-01`` is priced as ``gpt-4.1``). A name it cannot resolve has no price:
``None``, which keel reports as an unknown cost, never as $0. Cached input tokens are billed
at the table's cache-read price. The table is the package's own snapshot (no network).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any

#: A date suffix on a model name: -2024-07-18 or -0613
_DATED = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{4})$")


@dataclass(frozen=True)
class Price:
    """USD per million tokens for one model, and where the numbers come from.

    ``matched`` is the table entry that priced the name (``gpt-4o-mini`` for
    ``gpt-4o-mini-2024-07-18``); ``source`` is ``genai-prices <version>`` or
    ``price_per_mtok`` for a price given in code. ``cached_input_per_mtok`` is None when the
    table has no cache-read price (cached tokens then cost what other input tokens cost).
    """

    model: str
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None
    matched: str | None = None
    provider: str | None = None
    source: str = "price_per_mtok"
    #: the (name, provider) the table resolved, to price each call with its own rules
    table_ref: tuple[str, str | None] | None = field(default=None, repr=False, compare=False)

    def cost_usd(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float:
        """What a call cost. ``input_tokens`` includes ``cached_tokens`` (as in OpenAI's
        ``usage``: ``prompt_tokens`` and ``prompt_tokens_details.cached_tokens``)."""
        cached = max(0, min(cached_tokens, input_tokens))
        if self.table_ref is not None:
            return _table_cost(*self.table_ref, input_tokens, output_tokens, cached)
        cached_rate = (self.cached_input_per_mtok if self.cached_input_per_mtok is not None
                       else self.input_per_mtok)
        return ((input_tokens - cached) * self.input_per_mtok + cached * cached_rate
                + output_tokens * self.output_per_mtok) / 1e6

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "matched": self.matched, "provider": self.provider,
                "source": self.source, "input_per_mtok": self.input_per_mtok,
                "cached_input_per_mtok": self.cached_input_per_mtok,
                "output_per_mtok": self.output_per_mtok}


def given_price(model: str, per_mtok: tuple[float, ...]) -> Price:
    """A price given in code: ``(input, output)`` or ``(input, output, cached input)``."""
    if len(per_mtok) not in (2, 3) or any(float(x) < 0 for x in per_mtok):
        raise ValueError("price_per_mtok is (input, output) or (input, output, cached input), "
                         f"USD per million tokens, none negative; got {per_mtok!r}")
    cached = float(per_mtok[2]) if len(per_mtok) == 3 else None
    return Price(model, float(per_mtok[0]), float(per_mtok[1]), cached)


def price_for(model: str) -> Price | None:
    """The price of ``model`` from the maintained table, or None when it has none.

    >>> price_for("gpt-4o-mini-2024-07-18").matched
    'gpt-4o-mini'
    """
    return _lookup(model.strip())


@lru_cache(maxsize=512)
def _lookup(model: str) -> Price | None:
    for ref, provider in _candidates(model):
        found = _table(ref, provider)
        if found is not None:
            matched, provider_id, mp = found
            return Price(model, _per_mtok(mp.input_mtok) or 0.0, _per_mtok(mp.output_mtok) or 0.0,
                         _per_mtok(mp.cache_read_mtok), matched, provider_id,
                         f"genai-prices {_version()}", (ref, provider))
    return None


def _candidates(model: str) -> list[tuple[str, str | None]]:
    """Names to try, most specific first: as given, without a routing prefix, undated."""
    out: list[tuple[str, str | None]] = [(model, None)]
    if model.startswith("ft:"):  # OpenAI's fine-tunes: the table finds them under openai
        out.append((model, "openai"))
    elif "/" in model:
        prefix, rest = model.split("/", 1)
        out += [(rest, prefix.lower()), (rest, None)]
    for ref, provider in list(out):
        undated = _DATED.sub("", ref)
        if undated != ref:
            out.append((undated, provider))
    return out


def _table(ref: str, provider: str | None) -> tuple[str, str, Any] | None:
    # start-up: the price table is a 1.6 MB module, loaded on the first look-up only
    from genai_prices import Usage, calc_price

    try:
        calc = calc_price(Usage(input_tokens=0, output_tokens=0), model_ref=ref,
                          provider_id=provider)
    except LookupError:
        return None
    return calc.model.id, calc.provider.id, calc.model_price


def _table_cost(ref: str, provider: str | None, input_tokens: int, output_tokens: int,
                cached_tokens: int) -> float:
    from genai_prices import Usage, calc_price  # start-up: see _table

    usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens,
                  cache_read_tokens=cached_tokens or None)
    return float(calc_price(usage, model_ref=ref, provider_id=provider).total_price)


def _per_mtok(value: Any) -> float | None:
    """A table price as a float: a flat price, or a tiered one's base tier."""
    if value is None:
        return None
    if isinstance(value, (Decimal, int, float)):
        return float(value)
    base = getattr(value, "base", None)
    return float(base) if base is not None else None


@lru_cache(maxsize=1)
def _version() -> str:
    from importlib.metadata import version

    return version("genai-prices")
