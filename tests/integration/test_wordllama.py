"""WordLlama, the default install's text embedder: loaded from its own wheel, never from the
network, and able to tell banking questions from everything else."""

from __future__ import annotations

import csv
import socket

import numpy as np
import pytest
from tests.conftest import EXAMPLE

from keel.monitor import OutOfDistributionDetector, ProfileBuilder, _embed
from keel.monitor._api import resolve_embedder
from keel.monitor._profile import Profile


def _texts(name: str, every: int) -> list[str]:
    with (EXAMPLE / "data" / name).open(newline="", encoding="utf-8") as fh:
        return [r["text"] for i, r in enumerate(csv.DictReader(fh)) if i % every == 0]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"the embedder reached for the network: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(_embed, "_WORDLLAMA", None)  # load it again, here


def test_wordllama_loads_from_the_package_without_the_network(no_network: None) -> None:
    emb = _embed.make_embedder("wordllama")
    vecs = emb.dense(["Where is my new card?", "When will my card arrive?",
                      "How do I bake sourdough bread?"])
    assert vecs.shape == (3, 256) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]  # two card questions are closer than bread
    assert emb.dense([]).shape == (0, 256)


def test_auto_picks_wordllama_unless_minilm_is_installed() -> None:
    assert resolve_embedder("auto") == ("minilm" if _embed.minilm_available() else "wordllama")


def test_wordllama_profile_tells_banking_from_everything_else(no_network: None) -> None:
    builder = ProfileBuilder(kinds={"text": "text"}, sample_size=2500, seed=0)
    builder.add({"text": _texts("train.csv", 4)})
    profile = builder.build(embedder="wordllama", ood_fpr=0.02)
    ref = profile.text["text"]
    assert ref.embeddings is not None and ref.embeddings.shape == (2500, 256)
    threshold = ref.threshold
    assert threshold is not None
    detector = OutOfDistributionDetector(profile)
    in_domain = detector.score(_texts("test.csv", 4))
    outside = detector.score(_texts("ood.csv", 1))
    assert (in_domain > threshold).mean() <= 0.04
    assert (outside > threshold).mean() >= 0.85
    # the vectors travel with the profile: a loaded profile scores the same without refitting
    again = OutOfDistributionDetector(Profile.from_json(profile.to_json()))
    assert np.allclose(again.score(_texts("ood.csv", 5)), detector.score(_texts("ood.csv", 5)),
                       atol=2e-3)
