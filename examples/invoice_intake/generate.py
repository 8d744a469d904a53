"""Scanned-looking invoices for the invoice_intake example, with their ground truth kept apart.

``generate(folder, count, seed)`` writes ``folder/docs/*`` (PNG images, some multi-page PDFs),
``folder/documents.jsonl`` (what keel reads: an id and a path) and ``folder/truth.jsonl``
(what each invoice really says, never shown to keel). Faker makes vendors, dates and line
items; Pillow renders them in one of three layouts and several fonts, then "scans" them:
rotation, blur, noise, lower resolution, a stamp over the text. About one document in ten is
bad: a blank page, a receipt, a cut-off page, a corrupt file, a password-protected PDF or a
huge image. The same seed gives the same documents.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from faker import Faker
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONTS = Path("/usr/share/fonts/truetype")
FACES = ["dejavu/DejaVuSans.ttf", "dejavu/DejaVuSerif.ttf", "liberation/LiberationSans-Regular.ttf",
         "liberation/LiberationSerif-Regular.ttf", "dejavu/DejaVuSansMono.ttf"]
BOLD = {"dejavu/DejaVuSans.ttf": "dejavu/DejaVuSans-Bold.ttf",
        "dejavu/DejaVuSerif.ttf": "dejavu/DejaVuSerif-Bold.ttf",
        "liberation/LiberationSans-Regular.ttf": "liberation/LiberationSans-Bold.ttf",
        "liberation/LiberationSerif-Regular.ttf": "liberation/LiberationSerif-Bold.ttf",
        "dejavu/DejaVuSansMono.ttf": "dejavu/DejaVuSansMono-Bold.ttf"}
CURRENCIES = {"USD": "$", "EUR": "€", "GBP": "£", "CHF": "CHF "}
#: the kinds of bad document, and how often each comes (of all documents)
BAD_KINDS = {"blank": 0.02, "receipt": 0.02, "cut_off": 0.02, "corrupt": 0.015,
             "encrypted_pdf": 0.01, "huge_image": 0.005}
WIDTH, HEIGHT = 1275, 1650  # a letter page at 150 dpi
QTY_X, UNIT_X = int(WIDTH * 0.55), int(WIDTH * 0.73)  # right edges of two columns
TODAY = date(2026, 12, 1)  # documents are dated before this day, so a run is reproducible


def money(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


@dataclass
class Invoice:
    vendor: str
    address: str
    number: str
    issued: date
    currency: str
    lines: list[dict[str, Any]]
    tax_rate: Decimal

    @property
    def subtotal(self) -> Decimal:
        return sum((Decimal(str(x["amount"])) for x in self.lines), Decimal("0"))

    @property
    def tax(self) -> Decimal:
        return money(self.subtotal * self.tax_rate)

    @property
    def total(self) -> Decimal:
        return self.subtotal + self.tax

    def truth(self) -> dict[str, Any]:
        return {"vendor": self.vendor, "invoice_number": self.number,
                "date": self.issued.isoformat(), "currency": self.currency,
                "lines": self.lines, "subtotal": str(self.subtotal), "tax": str(self.tax),
                "total": str(self.total)}


def _vendor(fake: Faker, rng: random.Random) -> str:
    name = fake.company().replace(",", "")
    return " ".join(name.split()[:3])


def make_invoice(fake: Faker, rng: random.Random, vendors: list[str]) -> Invoice:
    lines = []
    for _ in range(rng.randint(1, 6)):
        qty = rng.randint(1, 12)
        unit = money(Decimal(rng.randint(150, 250000)) / 100)
        desc = ""
        for word in fake.bs().split():  # short enough for the column
            if len(desc) + len(word) + 1 > 26:
                break
            desc = f"{desc} {word.capitalize()}".strip()
        lines.append({"description": desc, "quantity": qty, "unit_price": str(unit),
                      "amount": str(money(unit * qty))})
    return Invoice(vendor=rng.choice(vendors), address=fake.address().replace("\n", ", "),
                   number=f"INV-{rng.randint(10000, 99999)}",
                   issued=TODAY - timedelta(days=rng.randint(1, 700)),
                   currency=rng.choice(list(CURRENCIES)), lines=lines,
                   tax_rate=Decimal(rng.choice(["0.05", "0.07", "0.08", "0.10", "0.20"])))


def _fmt(value: Decimal | str, currency: str, style: int) -> str:
    amount = f"{Decimal(str(value)):,.2f}"
    return f"{CURRENCIES[currency]}{amount}" if style == 1 else f"{amount}"


def _date(d: date, style: int) -> str:
    return (d.isoformat(), d.strftime("%B %d, %Y"), d.strftime("%d.%m.%Y"))[style]


class Page:
    """A white page and a pen."""

    def __init__(self, face: str, size: int) -> None:
        self.img = Image.new("L", (WIDTH, HEIGHT), 255)
        self.draw = ImageDraw.Draw(self.img)
        self.font = ImageFont.truetype(str(FONTS / face), size)
        self.bold = ImageFont.truetype(str(FONTS / BOLD[face]), size + 10)
        self.size = size

    def text(self, x: int, y: int, text: str, *, bold: bool = False, right: bool = False) -> None:
        font = self.bold if bold else self.font
        if right:
            x -= int(self.draw.textlength(text, font=font))
        self.draw.text((x, y), text, fill=0, font=font)


def render(inv: Invoice, rng: random.Random) -> Image.Image:
    """One of three layouts, in one of several fonts and sizes."""
    layout = rng.randrange(3)
    page = Page(rng.choice(FACES), rng.choice([24, 26, 28]))
    step = page.size + 14
    y = 90
    if layout == 0:
        page.text(90, y, inv.vendor, bold=True)
        page.text(WIDTH - 90, y, "INVOICE", bold=True, right=True)
        y += step + 20
        page.text(90, y, inv.address[:60])
        y += 2 * step
        page.text(90, y, f"Invoice No: {inv.number}")
        y += step
        page.text(90, y, f"Date: {_date(inv.issued, 0)}")
        y += step
        page.text(90, y, f"Currency: {inv.currency}")
    elif layout == 1:
        page.text(WIDTH // 2 - 120, y, "INVOICE", bold=True)
        y += step + 20
        page.text(90, y, f"From: {inv.vendor}")
        y += step
        page.text(90, y, inv.address[:60])
        y += 2 * step
        page.text(90, y, f"Invoice #: {inv.number}")
        page.text(WIDTH - 90, y, f"Invoice Date: {_date(inv.issued, 1)}", right=True)
        y += step
    else:
        page.text(90, y, inv.vendor, bold=True)
        y += step + 20
        page.text(90, y, f"Number {inv.number}")
        page.text(WIDTH - 90, y, f"Dated {_date(inv.issued, 2)}", right=True)
        y += step
        page.text(90, y, f"Amounts in {inv.currency}")
    style = 1 if layout == 1 else 0
    y += 2 * step
    page.text(90, y, "Description")
    page.text(QTY_X, y, "Qty", right=True)
    page.text(UNIT_X, y, "Unit", right=True)
    page.text(WIDTH - 90, y, "Amount", right=True)
    y += step
    page.draw.line((90, y, WIDTH - 90, y), fill=0, width=2)
    y += 12
    for line in inv.lines:
        page.text(90, y, line["description"])
        page.text(QTY_X, y, str(line["quantity"]), right=True)
        page.text(UNIT_X, y, _fmt(line["unit_price"], inv.currency, style), right=True)
        page.text(WIDTH - 90, y, _fmt(line["amount"], inv.currency, style), right=True)
        y += step
    y += step
    for label, value in (("Subtotal", inv.subtotal), (f"Tax {inv.tax_rate * 100:.0f}%", inv.tax),
                         ("Total", inv.total)):
        page.text(int(WIDTH * 0.55), y, label)
        page.text(WIDTH - 90, y, _fmt(value, inv.currency, style), right=True, bold=label == "Total")
        y += step + (6 if label != "Tax" else 0)
    page.text(90, HEIGHT - 140, "Thank you for your business. Payment due in 30 days.")
    return page.img


def stamp(img: Image.Image, rng: random.Random, text: str = "PAID") -> None:
    """A rubber stamp, half over the text (not over the totals' digits)."""
    layer = Image.new("L", (420, 150), 0)
    d = ImageDraw.Draw(layer)
    d.rectangle((4, 4, 414, 144), outline=255, width=8)
    d.text((60, 25), text, fill=255, font=ImageFont.truetype(str(FONTS / BOLD[FACES[0]]), 90))
    layer = layer.rotate(rng.uniform(-25, 25), expand=True)
    x, y = rng.randint(WIDTH - 520, WIDTH - 420), rng.randint(20, 120)  # over the heading
    gray = Image.new("L", layer.size, 150)
    img.paste(gray, (x, y), layer.point(lambda v: v * 0.55))


def scan(img: Image.Image, rng: random.Random) -> Image.Image:
    """What a cheap scanner does to a page: skew, blur, noise, lower resolution."""
    out = img.rotate(rng.uniform(-1.5, 1.5), resample=Image.Resampling.BILINEAR, fillcolor=255,
                     expand=False)
    if rng.random() < 0.4:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))
    if rng.random() < 0.3:
        scale = rng.uniform(0.8, 0.95)
        small = out.resize((int(WIDTH * scale), int(HEIGHT * scale)), Image.Resampling.BILINEAR)
        out = small
    if rng.random() < 0.6:
        noise = Image.frombytes("L", out.size, rng.randbytes(out.size[0] * out.size[1]))
        out = Image.blend(out, noise, rng.uniform(0.04, 0.1))
    return out


def save_pdf(pages: list[Image.Image], path: Path, password: str | None = None) -> None:
    buf = io.BytesIO()
    pages[0].save(buf, "PDF", save_all=True, append_images=pages[1:], resolution=150)
    if password is None:
        path.write_bytes(buf.getvalue())
        return
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(buf))
    writer.encrypt(password, algorithm="RC4-128")
    with path.open("wb") as fh:
        writer.write(fh)


def terms_page(fake: Faker, face: str) -> Image.Image:
    page = Page(face, 22)
    page.text(90, 90, "Terms and conditions", bold=True)
    for n, sentence in enumerate(fake.sentences(12)):
        page.text(90, 170 + n * 40, sentence[:80])
    return page.img


def receipt(fake: Faker, rng: random.Random) -> Image.Image:
    page = Page(rng.choice(FACES), 26)
    page.text(300, 90, fake.company()[:28], bold=True)
    y = 170
    for _ in range(rng.randint(3, 6)):
        page.text(300, y, f"{fake.word().upper():<14} {rng.randint(1, 4000) / 100:>8.2f}")
        y += 40
    page.text(300, y + 40, "CASH  THANK YOU  NO REFUNDS")
    return page.img


def bad_document(kind: str, fake: Faker, rng: random.Random, inv: Invoice,
                 folder: Path, doc_id: str) -> Path:
    if kind == "blank":
        path = folder / f"{doc_id}.png"
        scan(Image.new("L", (WIDTH, HEIGHT), 255), rng).save(path, compress_level=1)
    elif kind == "receipt":
        path = folder / f"{doc_id}.png"
        scan(receipt(fake, rng), rng).save(path, compress_level=1)
    elif kind == "cut_off":
        path = folder / f"{doc_id}.png"
        full = render(inv, rng)
        cut = full.crop((0, 0, WIDTH, int(HEIGHT * 0.3)))  # the totals are lost
        scan(cut, rng).save(path, compress_level=1)
    elif kind == "corrupt":
        path = folder / f"{doc_id}.png"
        buf = io.BytesIO()
        render(inv, rng).save(buf, "PNG")
        data = buf.getvalue()
        path.write_bytes(data[: len(data) // 3])  # a transfer that stopped part-way
    elif kind == "encrypted_pdf":
        path = folder / f"{doc_id}.pdf"
        save_pdf([scan(render(inv, rng), rng).convert("RGB")], path, password="s3cret")
    elif kind == "huge_image":
        path = folder / f"{doc_id}.png"
        side = 4100  # about 50 MB of pixels that do not compress: a photo at full resolution
        noise = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
        noise.save(path, compress_level=1)
    else:
        raise ValueError(kind)
    return path


def _kind(rng: random.Random) -> str:
    draw = rng.random()
    for kind, share in BAD_KINDS.items():
        if draw < share:
            return kind
        draw -= share
    return "invoice"


_fakers: dict[int, Faker] = {}


def _drawn(seed: int, n: int) -> tuple[Faker, random.Random]:
    """Document ``n``'s own random sources: the same whichever process draws it."""
    fake = _fakers.get(0)
    if fake is None:
        fake = _fakers[0] = Faker("en_US")
    fake.seed_instance(seed * 1_000_003 + n)
    return fake, random.Random(seed * 1_000_003 + n)


def _one(job: tuple[int, int, str, int | None, list[str], str]) -> dict[str, Any]:
    """Write document ``n``; return its truth."""
    seed, n, kind, dup_of, vendors, folder = job
    doc_id = f"doc-{n:05d}"
    docs = Path(folder)
    if dup_of is not None:  # the same invoice sent twice: drawn as it was the first time
        inv = make_invoice(*_drawn(seed, dup_of), vendors)
    fake, rng = _drawn(seed, n)
    first = make_invoice(fake, rng, vendors)
    if dup_of is None:
        inv = first
    if kind in ("invoice", "duplicate"):
        path = _good(inv, fake, rng, docs, doc_id)
    else:
        path = bad_document(kind, fake, rng, inv, docs, doc_id)
    return {"doc": {"id": doc_id, "path": str(path.resolve())},
            "truth": {"id": doc_id, "kind": kind,
                      "invoice": inv.truth() if kind in ("invoice", "duplicate") else None}}


def generate(folder: str | Path, count: int = 500, seed: int = 7,
             kinds: list[str] | None = None, workers: int | None = None) -> Path:
    """Write ``count`` documents (``kinds`` forces each document's kind, for tests) on
    ``workers`` processes (default: the cores); returns the path of ``documents.jsonl``.
    Kept apart: ``truth.jsonl``."""
    from concurrent.futures import ProcessPoolExecutor

    root = Path(folder)
    docs = root / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    fake = Faker("en_US")
    fake.seed_instance(seed)
    vendors = [_vendor(fake, rng) for _ in range(max(8, count // 12))]
    jobs = []
    last_good: int | None = None
    for n in range(1, count + 1):
        kind = kinds[n - 1] if kinds else _kind(rng)
        dup_of = None
        if kind == "invoice" and last_good is not None and rng.random() < 0.01:
            kind, dup_of = "duplicate", last_good
        if kind == "invoice":
            last_good = n
        jobs.append((seed, n, kind, dup_of, vendors, str(docs)))
    with ProcessPoolExecutor(max_workers=workers or _cores()) as pool:
        made = list(pool.map(_one, jobs, chunksize=4))
    _write_jsonl(root / "documents.jsonl", [m["doc"] for m in made])
    _write_jsonl(root / "truth.jsonl", [m["truth"] for m in made])
    return root / "documents.jsonl"


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _good(inv: Invoice, fake: Faker, rng: random.Random, docs: Path, doc_id: str) -> Path:
    face = rng.choice(FACES)
    img = render(inv, rng)
    if rng.random() < 0.3:
        stamp(img, rng, rng.choice(["PAID", "RECEIVED", "COPY"]))
    page = scan(img, rng)
    if rng.random() < 0.12:  # a scanned PDF with a second page of terms
        path = docs / f"{doc_id}.pdf"
        save_pdf([page.convert("RGB"), scan(terms_page(fake, face), rng).convert("RGB")], path)
        return path
    path = docs / f"{doc_id}.png"
    page.save(path, compress_level=1)
    return path


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    import sys

    where = generate(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 500)
    print(where)
