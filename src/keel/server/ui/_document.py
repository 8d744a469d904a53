"""The scanned document behind a record, for the reviewer's page: a workflow whose input names
an image or PDF file (invoice intake) shows it beside the extracted fields. Only a file the
record's own stored input names is shown, only as a picture (decoded and re-encoded as PNG)."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".pdf")
#: the preview's width in pixels (enough to read a page, small enough to send)
WIDTH = 1000
#: "step extract: subtotal: the line amounts do not sum ... [lines sum to subtotal]"
_VIOLATION = re.compile(r"^(?:step [\w-]+: )?([\w.]+): (.*) \[([^\]]+)\]$")


def document_path(raw_input: dict[str, Any]) -> Path | None:
    """The first input value naming an existing image or PDF file (None: no document)."""
    for value in raw_input.values():
        if isinstance(value, str) and value.lower().endswith(SUFFIXES):
            path = Path(value)
            if path.is_file():
                return path
    return None


def preview_png(path: Path) -> bytes | None:
    """The document's first page as a PNG at most :data:`WIDTH` wide (None: not readable, or
    Pillow is not installed)."""
    try:
        from PIL import Image  # start-up: only the invoice example's extra installs Pillow
    except ImportError:
        return None
    try:
        img = _first_page(path, Image)
        if img is None:
            return None
        if img.width > WIDTH:
            img = img.resize((WIDTH, round(img.height * WIDTH / img.width)))
        buf = io.BytesIO()
        img.convert("L").save(buf, "PNG")
    except Exception:  # an unreadable file shows no picture; the page says so
        return None
    return buf.getvalue()


def _first_page(path: Path, image: Any) -> Any:
    if path.suffix.lower() != ".pdf":
        img = image.open(path)
        if img.width * img.height > 60_000_000:  # not decoded: a bomb or a mistake
            return None
        return img
    try:
        from pypdf import PdfReader  # start-up: only the invoice example's extra installs it
    except ImportError:
        return None
    reader = PdfReader(path)
    if reader.is_encrypted or not reader.pages or not reader.pages[0].images:
        return None
    return reader.pages[0].images[0].image


def failed_fields(detail: str | None) -> dict[str, str]:
    """The output fields a review task's detail says broke a rule: field -> rule."""
    if not detail:
        return {}
    found = _VIOLATION.match(detail.strip())
    return {found.group(1).split(".")[0]: found.group(3)} if found else {}
