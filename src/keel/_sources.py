"""Sources: stream rows from CSV, JSONL or Parquet files, never the whole file in memory."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from keel.errors import InputSourceError
from keel.stages.admit import RawRow

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
_MAX_FIELD = 16 * 1024 * 1024
_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


def read_rows(path: str | Path) -> Iterator[RawRow]:
    """Rows of a CSV, JSONL or Parquet file, by extension. Bad rows come back with an error."""
    file = Path(path)
    fmt = _FORMATS.get(file.suffix.lower())
    if fmt is None:
        raise InputSourceError(
            f"{file}: unknown input format {file.suffix!r}; use .csv, .jsonl or .parquet")
    if not file.is_file():
        raise InputSourceError(f"input file {str(file)!r} does not exist; check the path")
    reader = {"csv": _csv_rows, "jsonl": _jsonl_rows, "parquet": _parquet_rows}[fmt]
    return reader(file)


def _csv_rows(file: Path) -> Iterator[RawRow]:
    name = file.name
    with file.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as fh:
        reader = csv.reader(fh, strict=False)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputSourceError(f"{file}: cannot read the CSV header: {exc}") from exc
        header = [h.strip() for h in header]
        width = len(header)
        while True:
            line = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield RawRow(name, line, None, f"malformed CSV row: {exc}")
                continue
            if not row:
                continue  # a blank line is not a record
            if len(row) != width:
                yield RawRow(name, line, None,
                             f"row has {len(row)} fields but the header has {width}; "
                             "check quoting and delimiters",
                             text=",".join(row)[:10_000])
                continue
            if max(map(len, row)) > _MAX_FIELD:
                big = next(h for h, v in zip(header, row, strict=True) if len(v) > _MAX_FIELD)
                yield RawRow(name, line, None, f"field '{big}' is larger than {_MAX_FIELD} bytes")
                continue
            yield RawRow(name, line, dict(zip(header, row, strict=True)))


def _jsonl_rows(file: Path) -> Iterator[RawRow]:
    name = file.name
    with file.open("rb") as fh:
        for line, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield RawRow(name, line, None,
                             f"bytes at offset {exc.start} are not valid UTF-8; re-export as UTF-8",
                             text=raw.decode("utf-8", "backslashreplace")[:10_000])
                continue
            try:
                data: Any = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                yield RawRow(name, line, None, f"invalid JSON: {exc}", text=text[:10_000])
                continue
            if not isinstance(data, dict):
                yield RawRow(name, line, None,
                             f"expected a JSON object per line, got {type(data).__name__}",
                             text=text[:10_000])
                continue
            yield RawRow(name, line, data)


def _parquet_rows(file: Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(file)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise InputSourceError(f"{file}: not a readable Parquet file: {exc}") from exc
    line = 0
    for batch in pf.iter_batches(batch_size=10_000):
        for data in batch.to_pylist():
            line += 1
            yield RawRow(file.name, line, data)
