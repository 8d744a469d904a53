"""The extraction step: invoice fields from the OCR'd lines. ``rules_extract`` (regular
expressions over the lines, no network) is the default; its confidence is the lowest OCR
confidence among the words it read a field from. ``llm_extractor`` asks an OpenAI-compatible
server for the same fields as a JSON schema, when one is configured."""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

import keel

KNOWN_CURRENCIES = ("USD", "EUR", "GBP", "CHF", "CAD", "AUD", "JPY")
SYMBOLS = {"$": "USD", "€": "EUR", "£": "GBP", "CHF": "CHF"}


class InvoiceLine(BaseModel):
    description: str
    quantity: int
    unit_price: Decimal
    amount: Decimal


class Invoice(BaseModel):
    vendor: str
    invoice_number: str
    date: date
    currency: str
    lines: list[InvoiceLine]
    subtotal: Decimal
    tax: Decimal
    total: Decimal


AMOUNT = r"(?:[$€£]|CHF ?)?(\d{1,3}(?:,\d{3})*\.\d{2})"
LINE = re.compile(rf"^(.+?)\s+(\S{{1,4}})\s+{AMOUNT}\s+{AMOUNT}$")
NUMBER = re.compile(r"\bINV-\d{5}\b")
DATES = ((re.compile(r"\b(\d{4}-\d{2}-\d{2})\b"), "%Y-%m-%d"),
         (re.compile(r"\b([A-Z][a-z]+ \d{2}, \d{4})\b"), "%B %d, %Y"),
         (re.compile(r"\b(\d{2}[./)]\d{2}[./)]\d{4})\b"), "%d.%m.%Y"))
TOTALS = {"subtotal": re.compile(rf"^Subtotal\s+{AMOUNT}$"),
          "tax": re.compile(rf"^Tax\s+\d{{1,2}}%\s+{AMOUNT}$"),
          "total": re.compile(rf"^Total\s+{AMOUNT}$")}
CURRENCY = re.compile(r"(?:Currency:|Amounts in)\s+([A-Z]{3})\b")
SYMBOL = re.compile(r"([$€£]|CHF) ?\d")


def _money(text: str) -> Decimal:
    return Decimal(text.replace(",", ""))


class Row:
    """One OCR'd line: its text, and the confidence of the words under any span of it."""

    def __init__(self, text: str, confs: list[float]) -> None:
        self.text = text
        self.confs = confs
        self.starts = []
        at = 0
        for word in text.split(" "):
            self.starts.append(at)
            at += len(word) + 1

    def conf(self, start: int, end: int) -> float:
        """The lowest confidence of the words overlapping ``text[start:end]``."""
        words = [c for n, c in enumerate(self.confs[:len(self.starts)])
                 if self.starts[n] < end and (n + 1 == len(self.starts)
                                              or self.starts[n + 1] > start)]
        return min(words) if words else 0.0


class _Found:
    """Fields found so far, and the OCR confidences of the words they came from."""

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.confs: list[float] = []

    def put(self, name: str, value: Any, conf: float) -> None:
        if name not in self.fields:
            self.fields[name] = value
            self.confs.append(conf)


def rules_extract(ocr: Any) -> keel.Prediction:
    """Fields by regular expressions over the OCR'd lines (a field it misses is reported by
    the step's contract); a page with neither an invoice number nor a total is no invoice.
    The confidence is the lowest OCR confidence of the words a field was read from."""
    rows = [Row(line.text.strip(), line.confs) for line in ocr.lines if line.text.strip()]
    found = _Found()
    items: list[dict[str, Any]] = []
    _vendor(rows, found)
    for row in rows:
        _fields(row, found)
        item = _item(row, found)
        if item is not None:
            items.append(item)
    out = dict(found.fields)
    if items:
        out["lines"] = items
    if "invoice_number" not in out and "total" not in out:
        raise keel.NonRetryableModelError(
            "no invoice number and no total on the page: not an invoice (a receipt, a letter?) "
            "or the wrong page; check the document and enter the invoice by hand")
    confs = found.confs
    return keel.Prediction(out, confidence=min(confs) / 100.0 if confs else 0.0,
                           metadata={"extractor": "rules"})


def _item(row: Row, found: _Found) -> dict[str, Any] | None:
    """A line item: description, quantity, unit price, amount. A quantity Tesseract could not
    read (a lone "1" read as "a") is the amount over the unit price when that is whole."""
    m = LINE.match(row.text)
    if not m or row.text.startswith(("Subtotal", "Tax", "Total", "Description")):
        return None
    unit, amount = _money(m.group(3)), _money(m.group(4))
    conf = min(row.conf(*m.span(3)), row.conf(*m.span(4)), row.conf(*m.span(1)))
    digits = re.fullmatch(r"(\d{1,3})[),.;:]?", m.group(2))  # "12)": a speck beside it
    if digits:
        qty = int(digits.group(1))
        conf = min(conf, row.conf(*m.span(2)))
    elif unit and (amount / unit) == (amount / unit).to_integral_value():
        qty = int(amount / unit)
    else:
        return None
    found.confs.append(conf)
    return {"description": m.group(1), "quantity": qty, "unit_price": str(unit),
            "amount": str(amount)}


def _vendor(rows: list[Row], found: _Found) -> None:
    for row in rows[:4]:
        if row.text.startswith("From:"):
            found.put("vendor", row.text.removeprefix("From:").strip(), row.conf(6, len(row.text)))
            return
    if rows and rows[0].text != "INVOICE":
        vendor = re.sub(r"\s+INVOICE$", "", rows[0].text).strip()
        if vendor and vendor != "INVOICE":
            found.put("vendor", vendor, rows[0].conf(0, len(vendor)))


def _fields(row: Row, found: _Found) -> None:
    text = row.text
    m = NUMBER.search(text)
    if m and ("Invoice" in text or text.startswith("Number")):
        found.put("invoice_number", m.group(0), row.conf(*m.span()))
    for pattern, fmt in DATES:
        d = pattern.search(text)
        if d and ("Date" in text or "Dated" in text):
            conf = row.conf(*d.span(1))
            try:
                text_date = re.sub(r"[/)]", ".", d.group(1)) if "%d.%m" in fmt else d.group(1)
                found.put("date", datetime.strptime(text_date, fmt).date().isoformat(), conf)
            except ValueError:
                found.put("date", d.group(1), conf)  # not a real date: the contract says so
    cur = CURRENCY.search(text)
    if cur:
        found.put("currency", cur.group(1), row.conf(*cur.span(1)))
    for name, pattern in TOTALS.items():
        t = pattern.match(text)
        if t:
            found.put(name, str(_money(t.group(1))), row.conf(*t.span(1)))
            sym = SYMBOL.search(text)
            if sym:
                found.put("currency", SYMBOLS[sym.group(1)], row.conf(*sym.span(1)))


# -- the output contract's cross-field checks ---------------------------------------------------
def lines_sum_to_subtotal(inv: Invoice) -> bool:
    return sum((x.amount for x in inv.lines), Decimal("0")) == inv.subtotal


def line_amounts_add_up(inv: Invoice) -> bool:
    return all(x.quantity * x.unit_price == x.amount for x in inv.lines)


def subtotal_plus_tax_is_total(inv: Invoice) -> bool:
    return inv.subtotal + inv.tax == inv.total


def not_in_future(inv: Invoice) -> bool:
    return inv.date <= date.today()


def known_currency(inv: Invoice) -> bool:
    return inv.currency in KNOWN_CURRENCIES


PROMPT = """Extract the invoice's fields from this OCR text. Amounts as decimal strings with two
decimals, the date as YYYY-MM-DD, the currency as an ISO 4217 code.

{text}"""


def llm_extractor(base_url: str, model: str, api_key: str | None = None) -> keel.Model:
    """The extraction step's primary when an OpenAI-compatible server is configured: the
    fields as the Invoice JSON schema, confidence from the tokens' log-probabilities."""
    return keel.OpenAIModel(
        model, prompt=lambda ocr: PROMPT.format(text="\n".join(x.text for x in ocr.lines)),
        system="You read scanned invoices and return their fields exactly as printed.",
        base_url=base_url, api_key=api_key or "sk-none", output=Invoice, name="llm-extract",
        temperature=0.0,
        resilience=keel.Resilience(retry=keel.RetryPolicy(max_attempts=3, deadline_s=60),
                                   timeout_s=30, breaker=keel.BreakerPolicy(reset_timeout_s=30)))
