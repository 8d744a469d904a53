"""Columnar reading: a CSV or Parquet file as Arrow record batches, for work done per column
(drift profiles), never one Python dict per row.

Parquet is read as it is typed. CSV is read as text columns (an empty cell is missing), so a
column that is numeric in its first block and not further down cannot break the read; the
caller converts. A CSV row whose fields do not match the header is counted, not lost: it
comes back as ``Columns.bad_rows`` with the batch it was found in. Files the columnar reader
does not take (JSONL, compressed files, UTF-16/32, a read that fails half-way, e.g. bytes that
are not UTF-8) are the row reader's (:func:`keel.sources.read_rows`), which keeps every bad
row with its line number: ``columns_readable`` says which, and :class:`ColumnarReadError`
says that a read must start again on the row reader.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from keel.errors import InputSourceError
from keel.sources._files import _BOMS, _check_readable, _head, _kind

#: Rows per record batch.
BATCH_ROWS = 100_000


class ColumnarReadError(Exception):
    """The file cannot be read column by column after all (found part-way through)."""


@dataclass
class Columns:
    """One record batch of a file, and the rows around it that could not be parsed."""

    batch: pa.RecordBatch
    #: index of the batch's first row in the file (0-based, data rows only)
    offset: int
    #: CSV rows whose field count did not match the header, found while reading this batch
    bad_rows: int = 0


def columns_readable(path: str | Path) -> bool:
    """True when ``path`` is a Parquet file or a plain (uncompressed, UTF-8) CSV file."""
    file = Path(path)
    compression, fmt = _kind(file)
    _check_readable(file)
    if compression or fmt == "jsonl":
        return False
    if fmt == "parquet":
        return True
    head = _head(file)
    utf8_bom = head.startswith(b"\xef\xbb\xbf")
    if any(head.startswith(bom) for bom, _name in _BOMS) and not utf8_bom:
        return False
    return b"\x00" not in head


def read_columns(path: str | Path, batch_rows: int = BATCH_ROWS) -> Iterator[Columns]:
    """Record batches of a file :func:`columns_readable` accepted; the next batch is read in
    a thread while the caller works on this one (Arrow reads without holding the GIL)."""
    file = Path(path)
    _compression, fmt = _kind(file)
    return _ahead(_parquet(file, batch_rows) if fmt == "parquet" else _csv(file, batch_rows))


def _ahead(batches: Iterator[Columns]) -> Iterator[Columns]:
    from concurrent.futures import ThreadPoolExecutor

    done = object()
    with ThreadPoolExecutor(1, thread_name_prefix="keel-read") as pool:
        pending = pool.submit(next, batches, done)
        while True:
            part = pending.result()  # re-raises what the read raised
            if part is done:
                return
            pending = pool.submit(next, batches, done)
            yield part  # type: ignore[misc]


def _parquet(file: Path, batch_rows: int) -> Iterator[Columns]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(file)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise InputSourceError(f"{file}: not a readable Parquet file: {exc}") from exc
    offset = 0
    for batch in pf.iter_batches(batch_size=batch_rows):
        yield Columns(batch, offset)
        offset += batch.num_rows


def _header(file: Path) -> list[str]:
    with file.open(encoding="utf-8-sig", errors="replace", newline="") as fh:
        try:
            return [h.strip() for h in next(csv.reader(fh))]
        except StopIteration:
            return []
        except csv.Error as exc:
            raise InputSourceError(f"{file.name}: cannot read the CSV header: {exc}") from exc


def _csv(file: Path, batch_rows: int) -> Iterator[Columns]:
    from pyarrow import csv as pacsv

    header = _header(file)
    if not header:
        return
    if len(set(header)) != len(header) or "\ufffd" in "".join(header):
        raise ColumnarReadError("header has repeated names or bytes that are not text")
    bad: list[int] = [0]

    def count_bad(_row: object) -> str:
        bad[0] += 1
        return "skip"

    try:
        reader = pacsv.open_csv(
            file,
            read_options=pacsv.ReadOptions(
                column_names=header, skip_rows=1, block_size=1 << 22
            ),
            parse_options=pacsv.ParseOptions(
                newlines_in_values=True, invalid_row_handler=count_bad
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()),
                null_values=[""],
                strings_can_be_null=True,
            ),
        )
        yield from _rebatched(reader, batch_rows, bad)
    except pa.ArrowException as exc:
        raise ColumnarReadError(str(exc)) from exc


def _rebatched(reader: object, batch_rows: int, bad: list[int]) -> Iterator[Columns]:
    """Blocks of the CSV reader gathered into batches of about ``batch_rows`` rows."""
    pending: list[pa.RecordBatch] = []
    size, offset = 0, 0
    for block in reader:  # type: ignore[attr-defined]
        pending.append(block)
        size += block.num_rows
        if size >= batch_rows:
            yield _joined(pending, offset, bad)
            offset += size
            pending, size = [], 0
    if pending or bad[0]:
        yield _joined(pending, offset, bad, schema=getattr(reader, "schema", None))


def _joined(
    blocks: list[pa.RecordBatch], offset: int, bad: list[int], schema: pa.Schema | None = None
) -> Columns:
    if blocks:
        batch = pa.Table.from_batches(blocks).combine_chunks().to_batches()
        joined = batch[0] if batch else blocks[0].slice(0, 0)
    else:
        assert schema is not None
        joined = pa.RecordBatch.from_pylist([], schema=schema)
    found, bad[0] = bad[0], 0
    return Columns(joined, offset, found)
