"""Text descriptors (length, character classes, script, out-of-vocabulary rate), computed
column-at-a-time with Arrow's compute kernels, and the reference vocabulary."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: Numeric descriptors of a text field, as ``field#name`` derived columns.
NUMERIC_DESCRIPTORS = ("length", "words", "digits", "upper", "punct", "non_ascii")
#: The dominant writing system of a text, as the categorical ``field#script`` column.
SCRIPTS = {
    "latin": r"\p{Latin}",
    "cyrillic": r"\p{Cyrillic}",
    "greek": r"\p{Greek}",
    "arabic": r"\p{Arabic}",
    "hebrew": r"\p{Hebrew}",
    "cjk": r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]",
    "devanagari": r"\p{Devanagari}",
    "thai": r"\p{Thai}",
}
_WORD = r"[\p{L}\p{N}]+"
_SPLIT = r"[^\p{L}\p{N}']+"
#: Words kept in a reference vocabulary (the most frequent), and the minimum count.
VOCAB_CAP = 50_000
VOCAB_MIN_COUNT = 2


def as_text_array(values: Any) -> pa.Array:
    """A column of texts as an Arrow string array (None stays null; other values become str)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            return values
        return pc.cast(values, pa.string())
    return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def _count(arr: pa.Array, pattern: str) -> np.ndarray:
    counts = pc.count_substring_regex(arr, pattern)
    return np.asarray(counts.to_numpy(zero_copy_only=False), dtype=np.float64)


def descriptors(values: Any) -> dict[str, Any]:
    """Per-text descriptors: ``length`` in characters, ``words``, shares of digits, upper-case
    letters, punctuation/symbols and non-ASCII characters, and the dominant ``script``.

    Missing texts give NaN (and None for the script).
    """
    arr = as_text_array(values)
    length = np.asarray(pc.utf8_length(arr).to_numpy(zero_copy_only=False), dtype=np.float64)
    denom = np.where(length > 0, length, 1.0)
    out: dict[str, Any] = {"length": length, "words": _count(arr, _WORD)}
    for name, pattern in (
        ("digits", r"\p{Nd}"),
        ("upper", r"\p{Lu}"),
        ("punct", r"[\p{P}\p{S}]"),
        ("non_ascii", r"[^\x00-\x7F]"),
    ):
        out[name] = _count(arr, pattern) / denom
    out["script"] = _scripts(arr)
    return out


def _scripts(arr: pa.Array) -> list[str | None]:
    names = list(SCRIPTS)
    counts = np.vstack([_count(arr, SCRIPTS[n]) for n in names])  # scripts x rows
    null = np.isnan(counts[0])
    counts = np.nan_to_num(counts)
    best = counts.argmax(0)
    letters = counts.sum(0)
    return [
        None if null[i] else ("none" if letters[i] == 0 else names[best[i]])
        for i in range(len(arr))
    ]


def tokens(values: Any) -> pa.ListArray:
    """Lower-cased word tokens of each text (a list per text; null for a missing text)."""
    arr = as_text_array(values)
    return pc.split_pattern_regex(pc.utf8_lower(arr), _SPLIT)


def word_counts(values: Any) -> Counter[str]:
    toks = pc.list_flatten(tokens(values))
    toks = toks.filter(pc.not_equal(toks, ""))
    if len(toks) == 0:
        return Counter()
    vc = pc.value_counts(toks)
    return Counter(
        dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True))
    )


def prune(counter: Counter[str], cap: int = VOCAB_CAP) -> Counter[str]:
    """Keep a word counter bounded: the ``cap`` most frequent words survive."""
    if len(counter) <= 2 * cap:
        return counter
    return Counter(dict(counter.most_common(cap)))


def vocabulary(
    counts: Counter[str], min_count: int = VOCAB_MIN_COUNT, cap: int = VOCAB_CAP
) -> dict[str, int]:
    """The reference vocabulary: words seen at least ``min_count`` times, most frequent first."""
    return {w: c for w, c in counts.most_common(cap) if c >= min_count}


def oov_rates(
    values: Any,
    vocab: dict[str, int],
    *,
    leave_one_out: bool = False,
    min_count: int = VOCAB_MIN_COUNT,
) -> np.ndarray:
    """Share of each text's words that are not in the reference vocabulary.

    With ``leave_one_out`` (texts that are themselves part of the reference) a word counts as
    known only if the *other* reference texts use it ``min_count`` times, so the reference's own
    rate is an honest estimate of the rate on new text from the same source.
    """
    toks = tokens(values)
    if not leave_one_out:
        return _oov_vectorised(toks, vocab)
    out = np.full(len(toks), np.nan)
    for i, words in enumerate(toks.to_pylist()):
        if words is None:
            continue
        words = [w for w in words if w]
        if not words:
            out[i] = 0.0
            continue
        own = Counter(words)
        unknown = sum(vocab.get(w, 0) - own[w] < min_count for w in words)
        out[i] = unknown / len(words)
    return out


def _oov_vectorised(toks: pa.ListArray, vocab: dict[str, int]) -> np.ndarray:
    n = len(toks)
    flat = pc.list_flatten(toks)
    parents = np.asarray(pc.list_parent_indices(toks).to_numpy(zero_copy_only=False))
    real = np.asarray(pc.not_equal(flat, "").to_numpy(zero_copy_only=False), dtype=bool)
    known = np.asarray(
        pc.is_in(flat, value_set=pa.array(list(vocab), type=pa.string())).to_numpy(
            zero_copy_only=False
        ),
        dtype=bool,
    )
    words = np.bincount(parents[real], minlength=n).astype(np.float64)
    unknown = np.bincount(parents[real & ~known], minlength=n).astype(np.float64)
    out = np.where(words > 0, unknown / np.where(words > 0, words, 1.0), 0.0)
    out[np.asarray(toks.is_null().to_numpy(zero_copy_only=False), dtype=bool)] = np.nan
    return out


def truncate(texts: Iterable[str | None], limit: int = 1000) -> list[str | None]:
    """Texts kept in a profile's sample are cut to ``limit`` characters."""
    return [None if t is None else t[:limit] for t in texts]


def non_null(texts: Sequence[str | None]) -> list[str]:
    return [t for t in texts if t is not None]
