"""The stages a record passes through. Each is a callable class with one job."""

from keel._record import RawRow
from keel.stages.admit import Admitter
from keel.stages.check import OutputChecker
from keel.stages.predict import Predictor
from keel.stages.route import ConfidenceRouter
from keel.stages.screen import Screener
from keel.stages.scrub import StorageRedactor
from keel.stages.validate import InputValidator

__all__ = [
    "Admitter",
    "ConfidenceRouter",
    "InputValidator",
    "OutputChecker",
    "Predictor",
    "RawRow",
    "Screener",
    "StorageRedactor",
]
