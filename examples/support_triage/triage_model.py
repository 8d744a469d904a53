"""The support_triage demo model: word and character TF-IDF + a linear SVM on Banking77's train split.

Its confidence is the chance its answer is right, read from the margin between its two best
intents (a logistic curve fitted on a fifth of the train split held out from a first fit).

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

import numpy as np

DATA = Path(__file__).parent / "data"
#: In the cache file's name: a cache left by an earlier kind of model is not picked up.
MODEL_KIND = "svm-margin"
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


class TriageClassifier:
    """Word (1-2 grams) and character (2-5 grams) TF-IDF features, a linear SVM on them.

    ``predict_proba`` gives the best intent the probability that it is right, from the gap
    between the SVM's two best scores (a logistic curve fitted on a held-out fifth of the
    training data, then the SVM is fitted again on all of it); the rest is spread evenly.
    The gap ranks right answers above wrong ones better than a softmax's top probability,
    which is what lets a certified threshold automate more.
    """

    def __init__(self, C: float = 0.5, holdout: float = 0.2, seed: int = 0) -> None:
        self.C = C
        self.holdout = holdout
        self.seed = seed

    def fit(self, texts: Any, labels: Any) -> TriageClassifier:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_union

        texts, y = list(texts), np.asarray(labels)
        self.features_ = make_union(
            TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2)),
            TfidfVectorizer(sublinear_tf=True, analyzer="char_wb", ngram_range=(2, 5), min_df=2),
        )
        x = self.features_.fit_transform(texts)  # no labels: the held-out part may shape it
        order = np.random.default_rng(self.seed).permutation(len(texts))
        cut = int(len(texts) * self.holdout)
        held, rest = order[:cut], order[cut:]
        first = self._svm(x[rest], y[rest])
        scores = first.decision_function(x[held])
        right = first.classes_[scores.argmax(axis=1)] == y[held]
        self.scaler_ = LogisticRegression().fit(margin(scores)[:, None], right)
        self.svm_ = self._svm(x, y)
        self.classes_ = self.svm_.classes_
        return self

    def _svm(self, x: Any, y: np.ndarray) -> Any:
        from sklearn.svm import LinearSVC

        return LinearSVC(C=self.C, random_state=self.seed).fit(x, y)

    def decision_function(self, texts: Any) -> np.ndarray:
        return np.asarray(self.svm_.decision_function(self.features_.transform(list(texts))))

    def predict(self, texts: Any) -> np.ndarray:
        return np.asarray(self.classes_[self.decision_function(texts).argmax(axis=1)])

    def predict_proba(self, texts: Any) -> np.ndarray:
        scores = self.decision_function(texts)
        n = scores.shape[1]
        right = self.scaler_.predict_proba(margin(scores)[:, None])[:, 1]
        right = np.maximum(right, 1.0 / n + 1e-6)  # the best intent stays the most likely
        proba = np.repeat(((1.0 - right) / (n - 1))[:, None], n, axis=1)
        proba[np.arange(len(scores)), scores.argmax(axis=1)] = right
        return proba


def margin(scores: np.ndarray) -> np.ndarray:
    """The gap between each row's two best scores."""
    top2 = np.sort(scores, axis=1)[:, -2:]
    return np.asarray(top2[:, 1] - top2[:, 0])


def fit(texts: list[str], labels: list[str]) -> Any:
    return TriageClassifier().fit(texts, labels)


def cache_dir() -> Path:
    return Path(os.environ.get("KEEL_ARTIFACTS", Path(".keel") / "artifacts"))


def load_or_train() -> Any:
    """The fitted model, from the artifact cache or trained now (about 15 s)."""
    return _cached_fit(training_data_hash(), *read_labelled(DATA / "train.csv"))


def artifact_path(name: str | None = None) -> Path:
    """Where the model trained on these data (default: the train split) is cached."""
    return cache_dir() / f"support_triage-{MODEL_KIND}-{name or training_data_hash()}.pkl"


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
