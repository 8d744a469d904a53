"""Drift checks: a current window against its reference profile, with verdicts a person can read.

Each check yields a p-value and effect sizes. p-values are adjusted across every check of a
report with Benjamini-Hochberg. A check's level is:

- ``alert``: its adjusted p-value is at most ``alpha`` **and** its effect is material (PSI >=
  0.1 or Wasserstein >= 0.2 sd for numbers, a share moving >= 2 percentage points for
  categories, classifier AUC >= 0.6 for embeddings);
- ``minor``: significant (adjusted p-value at most ``alpha``) but below materiality: a small
  real shift, shown in reports, never alerting;
- ``none``: not significant.

False alarms: when nothing shifted, every p-value is valid (the binned KS is conservative,
the classifier test is exact), so Benjamini-Hochberg keeps the chance that a report raises
any alert at or below ``alpha`` (1% by default); the materiality rule only lowers it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import numpy as np

from keel.monitor import _stats
from keel.monitor._columns import SEP, as_float, as_labels
from keel.monitor._profile import Profile
from keel.monitor._window import Window

SECTIONS = ("input", "output", "schema", "data")
#: A check's verdict, most severe first.
LEVELS = ("alert", "minor", "none")


@dataclass(frozen=True)
class DriftSettings:
    alpha: float = 0.01  # false-discovery rate across a report's checks
    min_psi: float = 0.1
    min_wasserstein_sd: float = 0.2
    min_pp: float = 2.0  # a category's share must move this many percentage points
    min_quarantine_pp: float = 1.0
    min_auc: float = 0.6
    embedding_sample: int = 1000


@dataclass
class Check:
    field: str
    section: str
    test: str
    p_value: float
    effect: dict[str, float]
    material: bool
    summary: str
    q_value: float = 1.0
    drift: bool = False
    #: alert | minor | none (see the module's docstring)
    level: str = "none"
    examples: list[dict[str, Any]] = dc_field(default_factory=list)
    plot: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "section": self.section,
            "test": self.test,
            "drift": self.drift,
            "level": self.level,
            "p_value": self.p_value,
            "q_value": self.q_value,
            "material": self.material,
            "effect": self.effect,
            "summary": self.summary,
            "examples": self.examples,
            "plot": self.plot,
        }


@dataclass
class DriftReport:
    workflow: str | None
    profile: dict[str, Any]
    window: dict[str, Any]
    settings: DriftSettings
    checks: list[Check]
    rates: dict[str, dict[str, float]] = dc_field(default_factory=dict)

    @property
    def alerts(self) -> list[Check]:
        return [c for c in self.checks if c.drift]

    @property
    def drifted(self) -> bool:
        return bool(self.alerts)

    @property
    def minor(self) -> list[Check]:
        """Significant shifts below materiality: reported, never alerting."""
        return [c for c in self.checks if c.level == "minor"]

    def drifted_fields(self) -> set[str]:
        return {c.field for c in self.alerts}

    def levels(self) -> dict[str, str]:
        """Each field's most severe level over its checks."""
        out: dict[str, str] = {}
        for c in self.checks:
            have = out.get(c.field, "none")
            out[c.field] = min(have, c.level, key=LEVELS.index)
        return out

    def metrics(self) -> dict[str, float]:
        """Drift scores by name, for Prometheus-style export (one gauge per check)."""
        out: dict[str, float] = {
            "keel_drift_alerts": float(len(self.alerts)),
            "keel_drift_minor": float(len(self.minor)),
        }
        for c in self.checks:
            base = f'field="{c.field}",test="{c.test}"'
            out[f"keel_drift_score{{{base}}}"] = _score(c)
            out[f"keel_drift_alert{{{base}}}"] = 1.0 if c.drift else 0.0
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "drift": self.drifted,
            "alerts": [f"{c.field} ({c.test}): {c.summary}" for c in self.alerts],
            "minor": [f"{c.field} ({c.test}): {c.summary}" for c in self.minor],
            "profile": self.profile,
            "window": self.window,
            "settings": self.settings.__dict__,
            "rates": self.rates,
            "checks": [c.as_dict() for c in self.checks],
        }


def _score(c: Check) -> float:
    for key in ("psi", "auc", "ood_rate", "max_pp"):
        if key in c.effect:
            return float(c.effect[key])
    return 0.0


def section_of(name: str) -> str:
    head = name.split(".", 1)[0]
    return head if head in ("input", "output") and "." in name else "data"


def compare(
    profile: Profile,
    window: Window,
    settings: DriftSettings | None = None,
    *,
    workflow: str | None = None,
) -> DriftReport:
    """Run every check of ``window`` against ``profile`` and decide which are alerts."""
    s = settings or DriftSettings()
    checks: list[Check] = []
    kinds = profile.all_kinds()
    for name, kind in kinds.items():
        if kind == "numeric" and name in window.numeric:
            checks.append(_numeric(profile, window, name, s))
        elif kind == "categorical" and name in window.categories:
            checks.append(_categorical(profile, window, name, s))
    for name in profile.text:
        checks.extend(_text_checks(profile, window, name, s))
    checks.extend(_null_checks(profile, window, s))
    checks.extend(_schema_checks(profile, window, s))
    q = _stats.benjamini_hochberg([c.p_value for c in checks])
    for c, qv in zip(checks, q, strict=True):
        c.q_value = qv
        c.drift = qv <= s.alpha and c.material
        c.level = "none" if qv > s.alpha else ("alert" if c.material else "minor")
    checks.sort(
        key=lambda c: (LEVELS.index(c.level), SECTIONS.index(c.section), c.q_value, c.field)
    )
    return DriftReport(
        workflow,
        profile.summary(),
        {"rows": window.rows, **window.meta},
        s,
        checks,
        _rates(profile, window),
    )


# -- numbers ----------------------------------------------------------------------------------
def _numeric(profile: Profile, window: Window, name: str, s: DriftSettings) -> Check:
    ref, bins, cur = profile.moments[name], profile.bins[name], window.numeric[name]
    shift = _stats.numeric_shift(
        bins.edges,
        bins.cdf,
        bins.n_eff,
        ref.mean,
        ref.sd,
        cur.counts,
        cur.gap_below,
        cur.gap_above,
        cur.moments.mean,
    )
    material = shift.psi >= s.min_psi or shift.wasserstein_sd >= s.min_wasserstein_sd
    summary = (
        f"mean {_num(ref.mean)} -> {_num(cur.moments.mean)} "
        f"({shift.mean_shift_sd:+.2f} sd), PSI {shift.psi:.3f}, "
        f"Wasserstein {shift.wasserstein_sd:.3f} sd, KS {shift.ks:.3f}"
    )
    plot = _numeric_plot(bins.edges, bins.cdf, cur.counts)
    return Check(
        name,
        _section(name),
        "ks",
        shift.p_value,
        {
            "ks": shift.ks,
            "psi": shift.psi,
            "wasserstein_sd": shift.wasserstein_sd,
            "mean_shift_sd": shift.mean_shift_sd,
            "ref_mean": ref.mean,
            "cur_mean": cur.moments.mean,
        },
        material,
        summary,
        examples=_numeric_examples(window, name, plot),
        plot=plot,
    )


def _numeric_plot(edges: np.ndarray, cdf: np.ndarray, counts: np.ndarray) -> dict[str, Any]:
    ref_p = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
    cur_p = counts / max(counts.sum(), 1.0)
    groups = _stats.coarse_groups(ref_p)
    labels, lo_hi = [], []
    for g in groups:
        lo = -math.inf if g[0] == 0 else float(edges[g[0] - 1])
        hi = math.inf if g[-1] >= edges.size else float(edges[g[-1]])
        lo_hi.append((lo, hi))
        labels.append(f"{_num(lo)} .. {_num(hi)}")
    return {
        "kind": "bins",
        "labels": labels,
        "bounds": lo_hi,
        "reference": [float(ref_p[g].sum()) for g in groups],
        "current": [float(cur_p[g].sum()) for g in groups],
    }


def _numeric_examples(window: Window, name: str, plot: dict[str, Any]) -> list[dict[str, Any]]:
    excess = np.array(plot["current"]) - np.array(plot["reference"])
    if excess.size == 0 or excess.max() <= 0:
        return []
    lo, hi = plot["bounds"][int(excess.argmax())]
    vals = as_float(window.sample.columns.get(name, []))
    hits = np.flatnonzero((vals > lo) & (vals <= hi))
    # the most telling rows of that bin: furthest from the middle of the reference
    middle = float(np.nanmedian(vals)) if vals.size else 0.0
    hits = hits[np.argsort(-np.abs(vals[hits] - middle), kind="stable")]
    return [_example(window, int(i), name, float(vals[i])) for i in hits[:3]]


def _example(window: Window, i: int, name: str, value: Any) -> dict[str, Any]:
    row = {"key": window.sample.keys[i] if i < len(window.sample.keys) else "", "value": value}
    base = name.split(SEP, 1)[0]
    if base != name:
        row["text"] = window.sample.columns.get(base, [None] * (i + 1))[i]
    return row


# -- categories -------------------------------------------------------------------------------
def _categorical(profile: Profile, window: Window, name: str, s: DriftSettings) -> Check:
    ref = profile.categories.get(name, Counter())
    cur = window.categories[name]
    shift = _stats.categorical_shift(dict(ref), dict(cur))
    material = shift.max_pp >= s.min_pp or (shift.psi >= s.min_psi and shift.max_pp >= 1.0)
    parts = [f"{c!r} {r:.1%} -> {k:.1%} ({(k - r) * 100:+.1f} pp)" for c, r, k in shift.changes[:3]]
    if shift.new:
        parts.append("new: " + ", ".join(f"{c!r} {p:.1%}" for c, p in shift.new[:3]))
    plot = _categorical_plot(shift)
    return Check(
        name,
        _section(name),
        "chi2",
        shift.p_value,
        {
            "chi2": shift.chi2,
            "psi": shift.psi,
            "max_pp": shift.max_pp,
            "new_categories": float(len(shift.new)),
        },
        material,
        "; ".join(parts),
        examples=_category_examples(window, name, shift),
        plot=plot,
    )


def _categorical_plot(shift: _stats.CategoricalShift, top: int = 12) -> dict[str, Any]:
    rows = shift.changes[:top]
    return {
        "kind": "categories",
        "labels": [c for c, _, _ in rows],
        "reference": [r for _, r, _ in rows],
        "current": [k for _, _, k in rows],
    }


def _category_examples(
    window: Window, name: str, shift: _stats.CategoricalShift
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for cat, _share in shift.new[:3]:
        out += [{"key": k, "value": cat} for k in window.new_keys.get(name, {}).get(cat, [])[:2]]
    grown = [c for c, r, k in shift.changes if k > r][:1]
    if grown:
        labels = as_labels(window.sample.columns.get(name, []))
        hits = [i for i, v in enumerate(labels) if v == grown[0]][:3]
        out += [_example(window, i, name, grown[0]) for i in hits]
    return out[:5]


# -- text: embeddings and out-of-distribution rate --------------------------------------------
def _text_checks(profile: Profile, window: Window, name: str, s: DriftSettings) -> list[Check]:
    ref = profile.text[name]
    rt = ref.runtime(profile.sample)
    sample = window.sample.ordered()  # priority order: a uniform random order
    pairs = [
        (k, t)
        for k, t in zip(sample.keys, sample.columns.get(name, []), strict=False)
        if t is not None
    ]
    if rt is None or len(pairs) < 20:
        return []
    texts = [t for _, t in pairs[: s.embedding_sample]]
    test = _stats.classifier_two_sample(
        rt.cal_dense.astype(np.float64), rt.dense(texts).astype(np.float64)
    )
    emb = Check(
        name,
        _section(name),
        "embedding_classifier",
        test.p_value,
        {"auc": test.auc},
        test.auc >= s.min_auc,
        f"a classifier tells current from reference texts with AUC {test.auc:.3f} "
        f"(0.5 = indistinguishable; {test.n_cur} vs {test.n_ref} texts, {ref.embedder})",
    )
    scores = rt.scores(texts)
    flagged = int((scores > rt.threshold).sum())
    rate = flagged / len(texts)
    order = np.argsort(-scores)[:3]
    ood = Check(
        name,
        _section(name),
        "ood_rate",
        _stats.binomial_excess(flagged, len(texts), ref.fpr),
        {"ood_rate": rate, "expected_rate": ref.fpr},
        rate >= max(2 * ref.fpr, ref.fpr + s.min_pp / 100.0),
        f"{rate:.1%} of sampled texts are out-of-distribution "
        f"(score > {rt.threshold:.3f}; expected <= {ref.fpr:.0%})",
        examples=[
            {"key": pairs[i][0], "text": texts[i], "score": round(float(scores[i]), 3)}
            for i in order
            if scores[i] > rt.threshold
        ],
    )
    emb.examples = ood.examples
    return [emb, ood]


# -- missing values and schema ----------------------------------------------------------------
def _null_checks(profile: Profile, window: Window, s: DriftSettings) -> list[Check]:
    out = []
    for name, kind in profile.kinds.items():
        if kind == "numeric":
            r_null, r_n = profile.moments[name].nulls, profile.moments[name].n
            c = window.numeric.get(name)
            if c is None:
                continue
            c_null, c_n = c.moments.nulls, c.moments.n
        else:
            r_null = profile.nulls.get(name, 0)
            r_n = profile.rows - r_null
            c_null = window.nulls.get(name, 0)
            c_n = window.rows - c_null
        if r_null + c_null == 0 or c_null + c_n == 0:
            continue
        out.append(
            _rate_check(
                name, "null_rate", "missing", r_null, r_null + r_n, c_null, c_null + c_n, s.min_pp
            )
        )
    return out


def _rate_check(
    name: str,
    test: str,
    what: str,
    k1: float,
    n1: float,
    k2: float,
    n2: float,
    min_pp: float,
    section: str | None = None,
) -> Check:
    r, c = (k1 / n1 if n1 else 0.0), (k2 / n2 if n2 else 0.0)
    pp = (c - r) * 100.0
    return Check(
        name,
        section or _section(name),
        test,
        _stats.two_proportions(k1, n1, k2, n2),
        {"ref_rate": r, "cur_rate": c, "max_pp": abs(pp)},
        abs(pp) >= min_pp,
        f"{what} {r:.1%} -> {c:.1%} ({pp:+.1f} pp)",
    )


def _schema_checks(profile: Profile, window: Window, s: DriftSettings) -> list[Check]:
    ref, cur = profile.schema, window.schema
    if ref is None or cur is None or cur.rows == 0:
        return []
    out = []
    for name in sorted(set(ref.fields) | set(cur.fields)):
        r, c = ref.fields.get(name, Counter()), cur.fields.get(name, Counter())
        r_has, c_has = sum(r.values()), sum(c.values())
        what = "new field, present in" if r_has == 0 else "field present in"
        out.append(
            _rate_check(
                f"input.{name}",
                "presence",
                what,
                r_has,
                ref.rows,
                c_has,
                cur.rows,
                s.min_pp,
                "schema",
            )
        )
        if r_has and c_has:
            shift = _stats.categorical_shift(dict(r), dict(c))
            parts = [
                f"{k} {a:.1%} -> {b:.1%} ({(b - a) * 100:+.1f} pp)" for k, a, b in shift.changes[:2]
            ]
            out.append(
                Check(
                    f"input.{name}",
                    "schema",
                    "value_kinds",
                    shift.p_value,
                    {"max_pp": shift.max_pp},
                    shift.max_pp >= s.min_pp,
                    "value kinds: " + "; ".join(parts),
                    plot=_categorical_plot(shift),
                )
            )
    for rule in sorted(set(ref.rules) | set(cur.rules)):
        out.append(
            _rate_check(
                f"quarantine.{rule}",
                "quarantine_rate",
                f"quarantined for {rule}",
                ref.rules.get(rule, 0),
                ref.rows,
                cur.rules.get(rule, 0),
                cur.rows,
                s.min_quarantine_pp,
                "schema",
            )
        )
    return out


def _rates(profile: Profile, window: Window) -> dict[str, dict[str, float]]:
    """Fallback and review rates from the dispositions, reference vs current."""
    ref, cur = (
        profile.categories.get("output.disposition"),
        window.categories.get("output.disposition"),
    )
    if not ref or not cur:
        return {}
    out = {}
    for label, cats in (
        ("review_rate", ("in_review", "reviewed")),
        ("fallback_rate", ("fallback",)),
        ("accepted_rate", ("accepted",)),
    ):
        r = sum(ref.get(c, 0) for c in cats) / max(sum(ref.values()), 1)
        k = sum(cur.get(c, 0) for c in cats) / max(sum(cur.values()), 1)
        out[label] = {"reference": r, "current": k, "pp": (k - r) * 100.0}
    return out


def _section(name: str) -> str:
    return section_of(name.split(SEP, 1)[0])


def _num(x: float) -> str:
    if math.isinf(x):
        return "-inf" if x < 0 else "inf"
    return f"{x:.4g}"
