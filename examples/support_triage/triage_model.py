"""The support_triage demo model: TF-IDF + logistic regression trained on Banking77's train split.

Trained the first time it is needed and cached under ``.keel/artifacts/``; the cache file is
named by the training data's hash, and keel versions the model by the artifact's content hash.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import pickle
import re
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"
INTENTS: frozenset[str] = frozenset(json.loads((DATA / "categories.json").read_text()))


def training_data_hash(paths: list[Path] | None = None) -> str:
    digest = hashlib.sha256()
    for path in paths or [DATA / "train.csv"]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def read_labelled(path: Path) -> tuple[list[str], list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [r["text"] for r in rows], [r["category"] for r in rows]


def fit(texts: list[str], labels: list[str]) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipe = make_pipeline(
        TfidfVectorizer(sublinear_tf=True),
        LogisticRegression(C=20.0, max_iter=2000),
    )
    return pipe.fit(texts, labels)


def cache_dir() -> Path:
    return Path(os.environ.get("KEEL_ARTIFACTS", Path(".keel") / "artifacts"))


def load_or_train() -> Any:
    """The fitted pipeline, from the artifact cache or trained now (about 5 s)."""
    return _cached_fit(training_data_hash(), *read_labelled(DATA / "train.csv"))


def artifact_path(name: str | None = None) -> Path:
    """Where the model trained on these data (default: the train split) is cached."""
    return cache_dir() / f"support_triage-{name or training_data_hash()}.pkl"


def _cached_fit(name: str, texts: list[str], labels: list[str]) -> Any:
    path = artifact_path(name)
    if path.exists():
        with path.open("rb") as fh:
            return pickle.load(fh)
    model = fit(texts, labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        pickle.dump(model, fh, protocol=5)
    tmp.replace(path)
    return model


def retrain_with(labels: list[dict[str, Any]]) -> tuple[Any, str]:
    """Fit on Banking77's train split plus reviewed examples; (pipeline, training data hash).

    ``labels`` are keel's labelled examples:
    ``{"input": {"text": ...}, "output": {"intent": ...}}``.
    Labels whose intent is not one of the 77 are left out.
    """
    texts, cats = read_labelled(DATA / "train.csv")
    extra = [(x["input"]["text"], x["output"]["intent"]) for x in labels
             if x["output"].get("intent") in INTENTS and x["input"].get("text")]
    digest = hashlib.sha256(training_data_hash().encode())
    digest.update(json.dumps(sorted(extra), ensure_ascii=False).encode())
    data_hash = digest.hexdigest()[:12]
    model = _cached_fit(data_hash, texts + [t for t, _ in extra], cats + [c for _, c in extra])
    return model, data_hash


# Keyword rules: the fallback when the model is unavailable. They know a few intents well
# and say nothing (None) otherwise, so unknown messages go to a person.
_RULES: list[tuple[str, str]] = [
    (r"\b(lost|stolen)\b.*\bcard\b|\bcard\b.*\b(lost|stolen)\b", "lost_or_stolen_card"),
    (r"\bpin\b.*\b(block|locked)\b|\b(block|locked)\b.*\bpin\b", "pin_blocked"),
    (r"\bcard\b.*\b(arrive|arrival|delivery|received)\b", "card_arrival"),
    (r"\bexchange rate\b", "exchange_rate"),
    (r"\brefund\b", "request_refund"),
    (r"\b(close|delete)\b.*\baccount\b", "terminate_account"),
    (r"\bpassword\b", "passcode_forgotten"),
    (r"\bcontactless\b", "contactless_not_working"),
    (r"\batm\b.*\b(swallow|kept|took|retain)", "card_swallowed"),
]
_COMPILED = [(re.compile(p, re.IGNORECASE), intent) for p, intent in _RULES]


def keyword_rules(ticket: Any) -> dict[str, str] | None:
    for pattern, intent in _COMPILED:
        if pattern.search(ticket.text):
            return {"intent": intent}
    return None
