"""The OCR step: Tesseract (Debian's tesseract-ocr, through pytesseract) reads each page; the
step's confidence is the mean of Tesseract's per-word confidences. Documents of a batch are
read in parallel, one Tesseract process per core. Also: what makes a file unreadable before
any OCR is tried (the input checks quarantine those with a reason a person can act on)."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytesseract
from PIL import Image
from pydantic import BaseModel

import keel

#: a scan larger than this is a photo or a mistake, not a page: quarantined before OCR
MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 30_000_000


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@functools.lru_cache(maxsize=4096)
def problem(path: str) -> str | None:
    """What keeps this file from being read, as a short code (None: it can be read)."""
    file = Path(path)
    if not file.is_file():
        return "missing"
    if file.stat().st_size > MAX_BYTES:
        return "too_large"
    if file.suffix.lower() == ".pdf":
        return _pdf_problem(file)
    try:
        with Image.open(file) as img:
            if img.width * img.height > MAX_PIXELS:
                return "too_large"
            img.verify()  # checks the file's structure without decoding it: a cut-off file fails
    except (OSError, SyntaxError, Image.DecompressionBombError, ValueError):
        return "unreadable"
    return None


def _pdf_problem(file: Path) -> str | None:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(file)
        if reader.is_encrypted:
            return "encrypted"
        if not reader.pages:
            return "unreadable"
    except (PdfReadError, OSError, ValueError):
        return "unreadable"
    return None


def pages(path: str) -> list[Image.Image]:
    """The page images of a PNG/JPEG scan or a scanned PDF."""
    if not path.lower().endswith(".pdf"):
        with Image.open(path) as img:
            return [img.convert("L")]
    from pypdf import PdfReader

    out = []
    for page in PdfReader(path).pages:
        for picture in page.images:
            out.append(picture.image.convert("L"))
    return out


class Line(BaseModel):
    text: str  # the line's words, one space apart
    confs: list[float]  # each word's confidence, 0..100


class OcrText(BaseModel):
    pages: int
    words: int
    lines: list[Line]


def read_page(img: Image.Image, timeout_s: float) -> list[tuple[str, list[float]]]:
    """Tesseract's words, grouped by line, with their confidences."""
    data = pytesseract.image_to_data(img, config="--psm 6", output_type=pytesseract.Output.DICT,
                                     timeout=timeout_s)
    lines: dict[tuple[int, int, int], tuple[list[str], list[float]]] = {}
    for n, word in enumerate(data["text"]):
        conf = float(data["conf"][n])
        if not word.strip() or conf < 0:
            continue
        words, confs = lines.setdefault(
            (data["block_num"][n], data["par_num"][n], data["line_num"][n]), ([], []))
        words.append(word)
        confs.append(conf)
    return [(" ".join(w), c) for w, c in lines.values()]


class TesseractOCR(keel.Model):
    """``TesseractOCR()``: reads a :class:`Document`'s pages, at most ``page_timeout_s`` a page.

    Called with ``keel.Resilience(threads=N)``, keel hands each of N threads a share of a
    batch: N Tesseract processes read at once. ``calls_log``: a file that gets one line per
    document read (a test counts OCR calls across runs).
    """

    name = "tesseract"
    kind = "ocr"
    request_size = None

    def __init__(self, page_timeout_s: float = 120.0, calls_log: str | None = None) -> None:
        self.page_timeout_s = page_timeout_s
        self.calls_log = calls_log if calls_log is not None else os.environ.get("INTAKE_OCR_CALLS")
        self._version = f"tesseract-{pytesseract.get_tesseract_version()}-psm6"
        self.calls = 0  # documents read by this process
        self._count = threading.Lock()

    @property
    def version(self) -> str:
        return self._version

    def predict(self, inputs: Sequence[BaseModel]) -> list[keel.Prediction | keel.ModelError]:
        os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # one core per Tesseract process
        return [self.read(doc) for doc in inputs]

    def read(self, doc: Any) -> keel.Prediction | keel.ModelError:
        try:
            images = pages(doc.path)
            found = [line for img in images for line in read_page(img, self.page_timeout_s)]
        except RuntimeError as exc:  # pytesseract's timeout
            return keel.ModelTimeout(f"Tesseract took over {self.page_timeout_s:g} s on a page "
                                     f"of {doc.path}: {exc}")
        except (OSError, ValueError, pytesseract.TesseractError) as exc:
            return keel.NonRetryableModelError(
                f"Tesseract could not read {doc.path}: {exc}; check the file opens, rescan it")
        with self._count:
            self.calls += 1
        if self.calls_log:
            with open(self.calls_log, "a", encoding="utf-8") as fh:
                fh.write(f"{doc.id}\n")
        confs = [c for _text, cs in found for c in cs]
        mean = sum(confs) / len(confs) / 100.0 if confs else 0.0
        # words: the ones Tesseract is fairly sure of (specks on a blank page are not words)
        out = {"pages": len(images), "words": sum(1 for c in confs if c >= 60),
               "lines": [{"text": text, "confs": cs} for text, cs in found]}
        return keel.Prediction(out, confidence=min(1.0, max(0.0, mean)),
                               metadata={"pages": len(images)})
