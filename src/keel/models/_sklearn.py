"""A scikit-learn estimator with ``predict_proba``: confidence is the top class probability."""

from __future__ import annotations

import hashlib
import pickle
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from keel._prediction import Prediction
from keel.errors import NonRetryableModelError
from keel.models._base import Model, Outcome


class SklearnModel(Model):
    """Adapter for any estimator (or pipeline) with ``predict_proba`` and ``classes_``.

    ``estimator`` is the fitted estimator or a zero-argument loader that returns one; a loader
    runs on first use, so importing a workflow never trains or loads anything.
    ``features`` names the input field fed to the estimator (or is a function of the input);
    ``output`` names the output field that receives the predicted class (or is a function of
    the class label). ``training_data_hash`` and ``metrics`` are recorded with the version.

    The version is ``NAME-`` plus the first 12 hex digits of a SHA-256: of ``artifact`` (the
    file the estimator was loaded from, or a function returning its path, read once the
    estimator is loaded) when given, so the version is the artifact's content hash; else of
    the pickled estimator.
    """

    kind = "sklearn"

    def __init__(
        self,
        estimator: Any,
        *,
        features: str | Callable[[Any], Any],
        output: str | Callable[[Any], Any],
        name: str = "sklearn",
        training_data_hash: str | None = None,
        metrics: dict[str, float] | None = None,
        artifact: str | Path | Callable[[], str | Path] | None = None,
    ) -> None:
        is_loader = callable(estimator) and not hasattr(estimator, "predict_proba")
        self._estimator = None if is_loader else estimator
        self._loader = estimator if self._estimator is None else None
        self._features = features
        self._output = output
        self.name = name
        self.training_data_hash = training_data_hash
        self.metrics = metrics or {}
        self._artifact = artifact
        self._version: str | None = None
        self._lock = threading.Lock()

    @property
    def estimator(self) -> Any:
        if self._estimator is None:
            with self._lock:
                if self._estimator is None:
                    assert self._loader is not None
                    self._estimator = self._loader()
        return self._estimator

    @property
    def version(self) -> str:
        if self._version is None:
            est = self.estimator  # a loader may write the artifact first
            where = self._artifact() if callable(self._artifact) else self._artifact
            if where is not None:
                digest = hashlib.sha256()
                with Path(where).open("rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(chunk)
            else:
                digest = hashlib.sha256(pickle.dumps(est, protocol=5))
            self._version = f"{self.name}-{digest.hexdigest()[:12]}"
        return self._version

    def warm(self) -> None:
        _ = self.version

    def __getstate__(self) -> dict[str, Any]:
        """Pickled as the fitted estimator and its version (a release's artifact): no loader,
        no artifact path, so it loads where the workflow's files are not."""
        _ = self.version
        state = dict(self.__dict__)
        state.update(_loader=None, _artifact=None, _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["artifact_hash"] = self.version.rsplit("-", 1)[-1]
        info["training_data_hash"] = self.training_data_hash
        info["metrics"] = self.metrics
        return info

    def _x(self, inputs: Sequence[BaseModel]) -> list[Any]:
        if isinstance(self._features, str):
            name = self._features
            return [getattr(item, name) for item in inputs]
        return [self._features(item) for item in inputs]

    def _y(self, label: Any) -> Any:
        label = label.item() if isinstance(label, np.generic) else label
        if isinstance(self._output, str):
            return {self._output: label}
        return self._output(label)

    def predict(self, inputs: Sequence[BaseModel]) -> list[Outcome]:
        if not inputs:
            return []
        est = self.estimator
        try:
            proba = np.asarray(est.predict_proba(self._x(inputs)))
        except Exception as exc:  # map at the boundary: the batch failed, keep the cause
            err = NonRetryableModelError(f"{self.name}.predict_proba raised {type(exc).__name__}: {exc}")
            err.__cause__ = exc
            return [err] * len(inputs)
        best = proba.argmax(axis=1)
        conf = proba[np.arange(len(best)), best]
        classes = est.classes_
        return [
            Prediction(output=self._y(classes[i]), confidence=float(c))
            for i, c in zip(best.tolist(), conf.tolist(), strict=True)
        ]
