"""Releases: the versioned bundles that decide records, the champion and challenger aliases,
the evaluation harness, shadow and canary rollouts, promotion and rollback, and the loop that
retrains on reviewers' labels.

Names load on first use, so that ``keel run`` does not import SciPy to find its champion.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.releases._bundle import Release, bundle, check_fits, release_id
    from keel.releases._eval import EvalReport, evaluate, labelled_rows, read_labelled
    from keel.releases._loop import retrain_release, tend_retraining
    from keel.releases._registry import (
        CHALLENGER,
        CHAMPION,
        actor,
        at,
        by_alias,
        champion_now,
        declared_note,
        ensure_champion,
        get,
        history,
        listing,
        model_for,
        parse_when,
        promote,
        register,
        rollback,
        runnable,
    )
    from keel.releases._report import write_html
    from keel.releases._rollout import (
        Lineup,
        abort,
        evidence,
        in_canary,
        lineup,
        pause,
        resume,
        start,
        status,
        tend,
    )
    from keel.releases._stats import (
        bootstrap_diff,
        mcnemar_exact,
        proportion_cs,
        release_difference_cs,
        reliability,
    )

_WHERE = {
    "Release": "keel.releases._bundle",
    "bundle": "keel.releases._bundle",
    "check_fits": "keel.releases._bundle",
    "release_id": "keel.releases._bundle",
    "EvalReport": "keel.releases._eval",
    "evaluate": "keel.releases._eval",
    "read_labelled": "keel.releases._eval",
    "labelled_rows": "keel.releases._eval",
    "retrain_release": "keel.releases._loop",
    "tend_retraining": "keel.releases._loop",
    "CHALLENGER": "keel.releases._registry",
    "CHAMPION": "keel.releases._registry",
    "actor": "keel.releases._registry",
    "at": "keel.releases._registry",
    "by_alias": "keel.releases._registry",
    "champion_now": "keel.releases._registry",
    "declared_note": "keel.releases._registry",
    "ensure_champion": "keel.releases._registry",
    "get": "keel.releases._registry",
    "history": "keel.releases._registry",
    "listing": "keel.releases._registry",
    "model_for": "keel.releases._registry",
    "parse_when": "keel.releases._registry",
    "promote": "keel.releases._registry",
    "register": "keel.releases._registry",
    "rollback": "keel.releases._registry",
    "runnable": "keel.releases._registry",
    "Lineup": "keel.releases._rollout",
    "abort": "keel.releases._rollout",
    "evidence": "keel.releases._rollout",
    "in_canary": "keel.releases._rollout",
    "lineup": "keel.releases._rollout",
    "pause": "keel.releases._rollout",
    "resume": "keel.releases._rollout",
    "start": "keel.releases._rollout",
    "status": "keel.releases._rollout",
    "tend": "keel.releases._rollout",
    "write_html": "keel.releases._report",
    "bootstrap_diff": "keel.releases._stats",
    "mcnemar_exact": "keel.releases._stats",
    "release_difference_cs": "keel.releases._stats",
    "proportion_cs": "keel.releases._stats",
    "reliability": "keel.releases._stats",
}

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "EvalReport",
    "Lineup",
    "Release",
    "abort",
    "actor",
    "at",
    "bootstrap_diff",
    "bundle",
    "by_alias",
    "champion_now",
    "check_fits",
    "declared_note",
    "ensure_champion",
    "evaluate",
    "evidence",
    "get",
    "history",
    "in_canary",
    "labelled_rows",
    "lineup",
    "listing",
    "mcnemar_exact",
    "model_for",
    "parse_when",
    "pause",
    "promote",
    "proportion_cs",
    "read_labelled",
    "register",
    "release_difference_cs",
    "release_id",
    "reliability",
    "resume",
    "retrain_release",
    "rollback",
    "runnable",
    "start",
    "status",
    "tend",
    "tend_retraining",
    "write_html",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'keel.releases' has no attribute {name!r}")
