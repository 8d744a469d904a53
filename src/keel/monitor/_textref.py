"""The reference for one text field: vocabulary, embedder, and the calibrated
out-of-distribution threshold.

The field's sampled texts (in priority order) are split: every fourth text calibrates, the
rest are the neighbours a new text is compared with. Calibration texts took no part in
fitting anything, so they stand for new in-distribution text: the threshold is the conformal
(1 - fpr) quantile of their scores, and the drift classifier compares current text with them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from keel.monitor import _text
from keel.monitor._columns import RowSample, pack, unpack
from keel.monitor._embed import Embedder, conformal_threshold, knn_scores, make_embedder

#: Fewest sampled texts for which an out-of-distribution threshold is calibrated.
MIN_TEXTS = 40
CAL_EVERY = 4
#: Embedders whose vectors the profile keeps (float16), so that a run loads them instead of
#: embedding the reference texts again; TF-IDF is refitted from the texts instead.
STORED = frozenset({"minilm", "wordllama"})


@dataclass
class TextRuntime:
    """A fitted embedder with its neighbour index, ready to score new texts."""

    embedder: Embedder
    index: Any
    threshold: float
    k: int
    cal_texts: list[str] = dc_field(default_factory=list)
    cal_vectors: NDArray[np.float32] | None = None

    @property
    def cal_dense(self) -> NDArray[np.float32]:
        """Dense vectors of the calibration texts (for the drift report; built on first use,
        so that scoring records never pays for them)."""
        if self.cal_vectors is None:
            self.cal_vectors = self.embedder.dense(self.cal_texts)
        return self.cal_vectors

    def scores(self, texts: Sequence[str]) -> NDArray[np.float64]:
        if not texts:
            return np.zeros(0)
        return knn_scores(self.index, self.embedder.vectors(texts), self.k)

    def dense(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return self.embedder.dense(texts)


@dataclass
class TextReference:
    field: str
    embedder: str
    vocab: dict[str, int]
    fpr: float
    k: int
    threshold: float | None
    n_index: int
    n_cal: int
    embeddings: NDArray[np.float16] | None = None
    sample_oov: NDArray[np.float64] = dc_field(default_factory=lambda: np.zeros(0))
    _runtime: TextRuntime | None = dc_field(default=None, repr=False)

    def texts(self, sample: RowSample) -> list[str]:
        return _text.non_null(sample.columns.get(self.field, []))

    def runtime(self, sample: RowSample) -> TextRuntime | None:
        """The fitted embedder and neighbour index (built once, then cached)."""
        if self.threshold is None:
            return None
        if self._runtime is None:
            texts = self.texts(sample)
            cal, idx = _split(len(texts))
            emb = make_embedder(self.embedder)
            if self.embeddings is not None:
                vecs = self.embeddings.astype(np.float32)
                self._runtime = TextRuntime(emb, vecs[idx], self.threshold, self.k,
                                            cal_vectors=vecs[cal])
            else:
                neighbours = [texts[i] for i in idx]
                emb.fit(neighbours)
                fitted = getattr(emb, "fitted_vectors", None)
                index = fitted() if fitted is not None else emb.vectors(neighbours)
                self._runtime = TextRuntime(emb, index,
                                            self.threshold, self.k,
                                            cal_texts=[texts[i] for i in cal])
        return self._runtime

    def describe(self) -> dict[str, Any]:
        return {
            "embedder": self.embedder,
            "vocabulary": len(self.vocab),
            "ood_threshold": self.threshold,
            "ood_fpr": self.fpr,
            "calibration_texts": self.n_cal,
            "neighbour_texts": self.n_index,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "embedder": self.embedder,
            "vocab": self.vocab,
            "fpr": self.fpr,
            "k": self.k,
            "threshold": self.threshold,
            "n_index": self.n_index,
            "n_cal": self.n_cal,
            "embeddings": pack(self.embeddings, "<f2") if self.embeddings is not None else None,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TextReference:
        emb = unpack(d["embeddings"]) if d.get("embeddings") else None
        return cls(
            d["field"],
            d["embedder"],
            d["vocab"],
            d["fpr"],
            d["k"],
            d["threshold"],
            d["n_index"],
            d["n_cal"],
            emb,
        )


def _split(n: int) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    pos = np.arange(n)
    return pos[pos % CAL_EVERY == 0], pos[pos % CAL_EVERY != 0]


def build_text_reference(
    name: str, sample: RowSample, words: Counter[str], *, embedder: str, fpr: float, k: int
) -> TextReference:
    """Vocabulary from all rows' word counts; embedder, neighbours and threshold from the sample."""
    vocab = _text.vocabulary(words)
    raw = sample.columns.get(name, [])
    sample_oov = _text.oov_rates(raw, vocab, leave_one_out=True)
    texts = _text.non_null(raw)
    ref = TextReference(name, embedder, vocab, fpr, k, None, 0, 0, sample_oov=sample_oov)
    if len(texts) < MIN_TEXTS:
        return ref
    cal, idx = _split(len(texts))
    emb = make_embedder(embedder)
    if embedder in STORED:
        ref.embeddings = emb.dense(texts).astype(np.float16)
        vecs = ref.embeddings.astype(np.float32)  # score exactly what a loaded profile will
        index, cal_vecs = vecs[idx], vecs[cal]
    else:
        emb.fit([texts[i] for i in idx])
        index = emb.vectors([texts[i] for i in idx])
        cal_vecs = emb.vectors([texts[i] for i in cal])
    scores = knn_scores(index, cal_vecs, k)
    threshold = conformal_threshold(scores, fpr)
    ref.threshold = threshold if np.isfinite(threshold) else None
    ref.n_index, ref.n_cal = int(idx.size), int(cal.size)
    return ref
