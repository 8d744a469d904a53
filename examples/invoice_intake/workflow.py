"""invoice_intake: scanned invoices -> OCR -> field extraction -> cross-field checks -> routing.

Run it:  keel demo invoice_intake     (generates the documents, runs this workflow, scores it)
or:      keel run examples/invoice_intake/workflow.py DOCUMENTS.jsonl

Two steps, each checkpointed before the next: ``ocr`` (Tesseract; its confidence is the mean
of its per-word confidences) and ``extract`` (rules by default; an OpenAI-compatible LLM with
the rules as its fallback when ``INVOICE_LLM_URL`` is set). Files that cannot be read are
quarantined before any OCR, with what to do about them.
"""

from __future__ import annotations

import os

from extract import (
    Invoice,
    known_currency,
    line_amounts_add_up,
    lines_sum_to_subtotal,
    llm_extractor,
    not_in_future,
    rules_extract,
    subtotal_plus_tax_is_total,
)
from ocr import OcrText, TesseractOCR, cores, problem
from pydantic import BaseModel, Field

import keel


class Document(BaseModel):
    id: str = Field(min_length=1, max_length=200)
    path: str = Field(min_length=1)


def _file_check(code: str, name: str, message: str) -> keel.Check:
    return keel.check(name, lambda d: problem(d.path) != code, field="path", message=message)


FILE_CHECKS = [
    _file_check("missing", "file exists", "no file at this path; send the document again"),
    _file_check("too_large", "size within limits",
                "the file is over 20 MB or 30 megapixels: a photo or a scan at a needless "
                "resolution; rescan the page at 150-300 dpi"),
    _file_check("encrypted", "not password-protected",
                "the PDF is password-protected; ask the sender for an unprotected copy"),
    _file_check("unreadable", "file opens",
                "the file is not a readable image or PDF (cut off in transfer, or corrupt); "
                "send it again"),
]

CROSS_FIELD = [
    keel.check("line amounts add up", line_amounts_add_up, field="lines",
               message="a line's quantity x unit price is not its amount"),
    keel.check("lines sum to subtotal", lines_sum_to_subtotal, field="subtotal",
               message="the line amounts do not sum to the subtotal"),
    keel.check("subtotal plus tax is total", subtotal_plus_tax_is_total, field="total",
               message="subtotal + tax is not the total (to the cent)"),
    keel.check("date not in the future", not_in_future, field="date",
               message="the invoice date is in the future"),
    keel.check("known currency", known_currency, field="currency",
               message="the currency is not one this team pays in"),
]


def _extractor() -> tuple[keel.Model, list[keel.Model]]:
    rules = keel.FunctionModel(rules_extract, name="rules-extract")
    url = os.environ.get("INVOICE_LLM_URL")
    if not url:
        return rules, []
    llm = llm_extractor(url, os.environ.get("INVOICE_LLM_MODEL", "gpt-4o-mini"),
                        os.environ.get("INVOICE_LLM_API_KEY"))
    return llm, [rules]


extract_model, extract_fallback = _extractor()

workflow = keel.Workflow(
    name="invoice_intake",
    description="Read scanned invoices, extract their fields, check them, route them.",
    input=Document,
    output=Invoice,
    key="id",
    input_checks=FILE_CHECKS,
    steps=[
        # documents read in parallel, one Tesseract process per core (a timeout per page)
        keel.Step("ocr", TesseractOCR(), output=OcrText, threshold=0.80,
                  resilience=keel.Resilience(threads=cores(), timeout_s=None,
                                             retry=keel.RetryPolicy(max_attempts=2)),
                  checks=[keel.check("text found", lambda o: o.words >= 8, field="words",
                                     message="no text found: a blank page or an unreadable "
                                             "scan; rescan the document")]),
        keel.Step("extract", extract_model, fallback=extract_fallback),
    ],
    output_checks=[*CROSS_FIELD,
                   # against every invoice decided in the store (earlier runs, other
                   # workers) and those this run passed; checked once the rules above hold
                   keel.unique("no duplicate invoice number", "vendor", "invoice_number",
                               message="this vendor's invoice number was already decided: "
                                       "a duplicate; check it was not paid twice")],
    # the cross-field checks catch misread amounts; the threshold guards the words no rule
    # checks (vendor, descriptions): the lowest OCR confidence of the words a field came from
    policy=keel.Policy(threshold=0.5, audit_rate=0.0, on_model_failure="review"),
    owners=keel.Owners(business="accounts-payable@example.com", support="ml@example.com"),
)
