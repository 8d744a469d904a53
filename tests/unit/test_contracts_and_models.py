"""Contracts and model adapters, without a store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel
from tests._workflows import Msg

import keel
from keel.errors import MalformedOutput, ModelUnavailable, NonRetryableModelError


class Invoice(BaseModel):
    total: float
    lines: list[float]


def test_named_check_reports_field_rule_message() -> None:
    c = keel.Contract(Invoice, [keel.check("total matches lines", lambda i: i.total == sum(i.lines),
                                           field="total", message="total must equal the sum of lines")])
    value, violations = c.validate({"total": 10, "lines": [1, 2]})
    assert value is None
    assert violations == [keel.Violation("total", "total matches lines",
                                         "total must equal the sum of lines")]
    ok, none = c.validate({"total": 3, "lines": [1, 2]})
    assert ok is not None and none == []


def test_a_crashing_check_is_a_violation_not_a_crash() -> None:
    c = keel.Contract(Invoice, [keel.check("divides", lambda i: 1 / 0 > 0)])
    value, (v,) = c.validate({"total": 1, "lines": []})
    assert value is None and "ZeroDivisionError" in v.message


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6))
def test_prediction_confidence_must_be_a_probability(x: float) -> None:
    if 0.0 <= x <= 1.0:
        assert keel.Prediction({"a": 1}, x).confidence == x
    else:
        with pytest.raises(ValueError):
            keel.Prediction({"a": 1}, x)


def test_fake_model_faults_are_seeded_and_repeatable() -> None:
    inputs = [Msg(id=str(i), text="t") for i in range(200)]

    def kinds(seed: int) -> list[str]:
        m = keel.FakeModel(seed=seed, error_rate=0.2, malformed_rate=0.1, rate_limit_rate=0.1)
        return [type(o).__name__ for o in m.predict(inputs)]

    assert kinds(1) == kinds(1)
    assert kinds(1) != kinds(2)
    counts = {k: kinds(1).count(k) for k in set(kinds(1))}
    assert 20 <= counts["ModelUnavailable"] <= 60
    assert 5 <= counts["RateLimited"] <= 40


def test_function_model_sync_async_batched() -> None:
    inputs = [Msg(id="1", text="hello"), Msg(id="2", text="boom")]

    def one(m: Msg) -> tuple[dict[str, str], float]:
        if m.text == "boom":
            raise ModelUnavailable("503")
        return {"label": m.text}, 0.9

    async def aone(m: Msg) -> tuple[dict[str, str], float]:
        return one(m)

    def batch(ms: list[Msg]) -> list[tuple[dict[str, str], float]]:
        return [({"label": m.text}, 0.5) for m in ms]

    for model in (keel.FunctionModel(one), keel.FunctionModel(aone)):
        out = model.predict(inputs) if not model.is_async else asyncio.run(model.apredict(inputs))
        assert isinstance(out[0], keel.Prediction) and out[0].output == {"label": "hello"}
        assert isinstance(out[1], ModelUnavailable)
    assert [p.confidence for p in keel.FunctionModel(batch, batched=True).predict(inputs)] == [0.5, 0.5]
    bad = keel.FunctionModel(lambda m: "not a prediction").predict(inputs[:1])[0]
    assert isinstance(bad, MalformedOutput)
    crash = keel.FunctionModel(lambda m: 1 / 0).predict(inputs[:1])[0]
    assert isinstance(crash, NonRetryableModelError) and "ZeroDivisionError" in crash.message


def test_sklearn_model_confidence_is_top_probability() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipe = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(
        ["card lost", "card stolen", "refund please", "want refund"], ["card", "card", "refund", "refund"])
    loads = []
    model = keel.SklearnModel(lambda: loads.append(1) or pipe, features="text", output="label")
    assert loads == []  # declaring it loads nothing
    (p,) = model.predict([Msg(id="1", text="refund")])
    assert p.output == {"label": "refund"}
    assert p.confidence == pytest.approx(pipe.predict_proba(["refund"]).max())
    assert model.version == keel.SklearnModel(pipe, features="text", output="label").version


def test_sklearn_version_is_the_artifact_files_content_hash(tmp_path: Path) -> None:
    import hashlib
    import pickle

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipe = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(
        ["card lost", "card stolen", "refund please", "want refund"], ["card", "card", "refund", "refund"])
    path = tmp_path / "model.pkl"

    def load() -> object:  # a loader that writes the artifact it is read from
        path.write_bytes(pickle.dumps(pipe, protocol=4))
        return pickle.loads(path.read_bytes())

    model = keel.SklearnModel(load, features="text", output="label", name="m", artifact=lambda: path)
    assert model.version == f"m-{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"
    assert model.describe()["artifact_hash"] == hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    same = keel.SklearnModel(pipe, features="text", output="label", name="m", artifact=path)
    assert same.version == model.version
    path.write_bytes(path.read_bytes() + b"\n")  # another artifact, another version
    assert keel.SklearnModel(pipe, features="text", output="label", name="m",
                             artifact=path).version != model.version
