"""Cost: declared prices (versioned by effective date), per-decision accounting with human
review included, budgets that hold under concurrency, reports and a projection to a
production volume.

Names load on first use: the declarations are light, the reports pull in NumPy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel._money import (
        CURRENCY,
        Budget,
        Cost,
        ModelPrice,
        Pricer,
        PriceTable,
        load_prices,
        parse_volume,
    )
    from keel.cost._report import (
        budget_state,
        metrics_text,
        outlook,
        parse_window,
        project,
        render_html,
        report,
        thresholds,
    )
    from keel.store.cost import BudgetKeeper, metering

_WHERE = {
    "CURRENCY": "keel._money", "Budget": "keel._money", "Cost": "keel._money",
    "ModelPrice": "keel._money", "PriceTable": "keel._money", "Pricer": "keel._money",
    "load_prices": "keel._money",
    "BudgetKeeper": "keel.store.cost", "metering": "keel.store.cost",
    "budget_state": "keel.cost._report", "parse_volume": "keel._money",
    "parse_window": "keel.cost._report", "project": "keel.cost._report",
    "report": "keel.cost._report",
    "outlook": "keel.cost._report", "render_html": "keel.cost._report", "metrics_text": "keel.cost._report",
    "thresholds": "keel.cost._report",
}

__all__ = [
    "CURRENCY",
    "Budget",
    "BudgetKeeper",
    "Cost",
    "ModelPrice",
    "PriceTable",
    "Pricer",
    "budget_state",
    "load_prices",
    "metering",
    "metrics_text",
    "outlook",
    "parse_volume",
    "parse_window",
    "project",
    "render_html",
    "report",
    "thresholds",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'keel.cost' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value
