"""The MiniLM sentence embedder (the ``embeddings`` extra), loaded from site-packages offline."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from tests.conftest import EXAMPLE

from keel.monitor import OutOfDistributionDetector, ProfileBuilder
from keel.monitor._embed import minilm_available

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not minilm_available(), reason='needs the embeddings extra: pip install "keel[embeddings]"'
    ),
]


def _texts(name: str, every: int) -> list[str]:
    with (EXAMPLE / "data" / name).open(newline="", encoding="utf-8") as fh:
        return [r["text"] for i, r in enumerate(csv.DictReader(fh)) if i % every == 0]


def test_minilm_tells_banking_from_everything_else(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the model must come from the package
    builder = ProfileBuilder(kinds={"text": "text"}, sample_size=800, seed=0)
    builder.add({"text": _texts("train.csv", 5)})
    profile = builder.build(embedder="minilm", ood_fpr=0.02)
    assert profile.text["text"].embeddings is not None
    assert profile.text["text"].embeddings.shape[1] == 384
    detector = OutOfDistributionDetector(profile)
    threshold = profile.text["text"].threshold
    in_domain = detector.score(_texts("test.csv", 15))
    outside = detector.score(_texts("ood.csv", 3))
    assert (in_domain > threshold).mean() <= 0.06
    assert (outside > threshold).mean() >= 0.85
