"""Sources: stream rows from CSV, JSONL or Parquet files, never the whole file in memory.

No file can crash a run or silently shrink it: every physical problem is either a clear error
before anything is read (a directory, a symlink loop, an unreadable or binary file, an
unknown format) or a row of its own that ends quarantined with its line number (a malformed
row, an unclosed quote, bytes that are not text in the file's encoding, a compressed file cut
short). Encodings: a byte-order mark decides (UTF-8, UTF-16, UTF-32), else UTF-16 is
recognised by its zero bytes, else UTF-8; ``encoding=`` (``--encoding``) declares another.
Compressed files (gzip, bzip2, xz) are read as they are; zstd is refused with the fix.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import errno
import gzip
import io
import lzma
import os
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from keel._record import RawRow
from keel.errors import InputSourceError

_MAX_FIELD = 16 * 1024 * 1024
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
#: Readers of compressed files; the stream is closed by whoever reads it (``_guarded``).
_OPENERS: dict[str, Callable[[Path], Any]] = {
    "gzip": lambda p: gzip.open(p, "rb"),  # noqa: SIM115 - closed by _guarded
    "bzip2": lambda p: bz2.open(p, "rb"),  # noqa: SIM115 - closed by _guarded
    "xz": lambda p: lzma.open(p, "rb"),  # noqa: SIM115 - closed by _guarded
}
_SUFFIXES = {".gz": "gzip", ".gzip": "gzip", ".bz2": "bzip2", ".xz": "xz", ".zst": "zstd"}
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"),
          (b"\x28\xb5\x2f\xfd", "zstd"))
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))
#: Errors a compressed stream raises when it is cut short or damaged.
_STREAM_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError)


def read_rows(path: str | Path, *, encoding: str | None = None) -> Iterator[RawRow]:
    """Rows of a CSV, JSONL or Parquet file (by extension, compressed or not). A bad row
    comes back with its error; a file that cannot be read at all raises InputSourceError."""
    file = Path(path)
    compression, fmt = _kind(file)
    _check_readable(file)
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError as exc:
            raise InputSourceError(f"--encoding {encoding!r} is not an encoding Python knows; "
                                   "try utf-8, utf-16, latin-1 or cp1252") from exc
    head = _head(file)
    found = next((name for magic, name in _MAGIC if head.startswith(magic)), None)
    compression = found or compression
    if compression == "zstd":
        raise InputSourceError(f"{file}: is zstd-compressed, which keel does not read; "
                               f"decompress it first (zstd -d {file.name})")
    if fmt == "parquet":
        if compression:
            raise InputSourceError(f"{file}: a Parquet file is compressed inside; do not "
                                   f"{compression}-compress it as well")
        return _parquet_rows(file)
    return _text_rows(file, fmt, compression, encoding)


def _kind(file: Path) -> tuple[str | None, str]:
    """(compression from the suffix, format from the suffix before it)."""
    suffixes = [s.lower() for s in file.suffixes]
    compression = _SUFFIXES.get(suffixes[-1]) if suffixes else None
    base = suffixes[-2] if compression and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    fmt = _FORMATS.get(base)
    if fmt is None:
        shown = "".join(file.suffixes) or "(none)"
        raise InputSourceError(f"{file}: unknown input format {shown!r}; use .csv, .jsonl or "
                               ".parquet (optionally .gz, .bz2 or .xz compressed)")
    return compression, fmt


def _check_readable(file: Path) -> None:
    try:
        st = file.stat()
    except FileNotFoundError as exc:
        dangling = file.is_symlink()
        raise InputSourceError(
            f"input file {str(file)!r} is a symbolic link to a file that does not exist"
            if dangling else f"input file {str(file)!r} does not exist; check the path") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputSourceError(f"input file {str(file)!r} is a symbolic link loop: it points "
                                   "back to itself; link it to the real file") from exc
        raise InputSourceError(f"cannot read input file {str(file)!r}: {exc.strerror}") from exc
    if file.is_dir():
        raise InputSourceError(f"{str(file)!r} is a directory, not a file; pass one file (run "
                               "keel once per file in it)")
    if not os.access(file, os.R_OK):
        raise InputSourceError(f"input file {str(file)!r} is not readable by this user "
                               f"(mode {st.st_mode & 0o777:o}); fix its permissions")


def _head(file: Path, size: int = 8192) -> bytes:
    with file.open("rb") as fh:
        return fh.read(size)


def _encoding(file: Path, head: bytes, declared: str | None) -> str:
    """The file's text encoding: declared, a byte-order mark, UTF-16 by its zero bytes, else
    UTF-8. A binary file (zero bytes that are not UTF-16) is refused."""
    if declared is not None:
        return declared
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name
    zeros = head.count(0)
    if not zeros:
        return "utf-8"
    even, odd = head[0::2].count(0), head[1::2].count(0)
    if len(head) >= 4 and max(even, odd) >= len(head) // 2 * 0.9 and min(even, odd) == 0:
        return "utf-16-le" if odd > even else "utf-16-be"
    controls = sum(head.count(b) for b in (*range(0, 9), *range(14, 32), 127))
    if zeros <= max(2, len(head) // 100) and controls * 20 < len(head):
        return "utf-8"  # a stray NUL in a text file: that row is quarantined
    raise InputSourceError(f"{file}: looks like a binary file, not text ({zeros} zero bytes in "
                           "its first 8 KiB); pass a CSV or JSONL file, or --encoding if it is "
                           "text in an unusual encoding")


def _text_rows(file: Path, fmt: str, compression: str | None,
               declared: str | None) -> Iterator[RawRow]:
    raw: IO[bytes] = _OPENERS[compression](file) if compression else file.open("rb")
    try:
        head = raw.peek(8192)[:8192] if hasattr(raw, "peek") else b""
    except _STREAM_ERRORS as exc:
        raw.close()
        raise InputSourceError(f"{file}: the {compression} data is damaged: {exc}") from exc
    try:
        encoding = _encoding(file, head, declared)
    except InputSourceError:
        raw.close()
        raise
    text = io.TextIOWrapper(raw, encoding=encoding, errors="surrogateescape", newline="")
    reader = _csv_rows if fmt == "csv" else _jsonl_rows
    return _Closing(_guarded(file, reader(file.name, text), text, compression), text)


class _Closing(Iterator[RawRow]):
    """Rows that close their file when done, closed, or dropped unread (a run that failed
    before its first row must not leave the file open)."""

    def __init__(self, rows: Iterator[RawRow], fh: IO[str]) -> None:
        self._rows, self._fh = rows, fh

    def __next__(self) -> RawRow:
        return next(self._rows)

    def close(self) -> None:
        close = getattr(self._rows, "close", None)
        if close is not None:
            close()
        self._fh.close()

    def __del__(self) -> None:
        self.close()


def _guarded(file: Path, rows: Iterator[RawRow], fh: IO[str],
             compression: str | None) -> Iterator[RawRow]:
    """The rows, and if the stream breaks off (a damaged or truncated compressed file) one
    last row saying where: quarantined, so the run's count shows it."""
    last = 0
    try:
        for row in rows:
            last = row.line
            yield row
    except _STREAM_ERRORS as exc:
        what = f"{compression} data" if compression else "file"
        yield RawRow(file.name, last + 1, None,
                     f"the {what} is damaged or cut short after line {last}: {exc}; rows after "
                     "it could not be read (fix the file and run it again)")
    finally:
        fh.close()


def printable(text: str) -> str:
    """Text with undecodable bytes (kept as surrogates) written as \\x escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class _Lines:
    """Physical lines with their numbers, with a way to put lines back (to re-read them)."""

    def __init__(self, fh: IO[str]) -> None:
        self._fh = fh
        self.number = 0          # the last line handed out
        self.taken: list[str] = []
        self._back: list[tuple[int, str]] = []

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self._back:
            self.number, line = self._back.pop()
        else:
            line = self._fh.readline()
            if not line:
                raise StopIteration
            self.number += 1
        self.taken.append(line)
        return line

    def put_back(self, first: int, lines: list[str]) -> None:
        """Re-read ``lines`` (numbered from ``first``) before anything else."""
        self._back.extend(reversed(list(enumerate(lines, first))))
        self.number = first - 1


def _csv_rows(name: str, fh: IO[str]) -> Iterator[RawRow]:
    lines = _Lines(fh)
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise InputSourceError(f"{name}: cannot read the CSV header: {exc}") from exc
    header = [h.strip() for h in header]
    if any("\udc80" <= c <= "\udcff" for h in header for c in h):
        raise InputSourceError(f"{name}: the header is not valid text ({printable(','.join(header))}"
                               "); pass --encoding with the file's encoding")
    width = len(header)
    while True:
        lines.taken = []
        start = lines.number + 1
        try:
            row = next(reader)
            error = None
        except StopIteration:
            return
        except csv.Error as exc:
            row, error = None, str(exc)
        span = list(lines.taken)
        if error is not None or (row is not None and len(span) > 1 and len(row) != width):
            # An unclosed quote swallows the lines after it: keep its first line alone as a
            # bad row, then read the rest again, row by row.
            yield RawRow(name, start, None,
                         f"malformed CSV row ({error or 'its fields do not add up'}): an "
                         "unclosed or stray quote; the row is kept alone and the lines after it "
                         "are read again",
                         text=printable(span[0] if span else "")[:10_000])
            lines.put_back(start + 1, span[1:])
            reader = csv.reader(lines, strict=True)
            continue
        assert row is not None
        if not row:
            continue  # a blank line is not a record
        yield _csv_row(name, start, header, row, width)


def _csv_row(name: str, line: int, header: list[str], row: list[str], width: int) -> RawRow:
    if len(row) != width:
        return RawRow(name, line, None,
                      f"row has {len(row)} fields but the header has {width}; check quoting "
                      "and delimiters", text=printable(",".join(row))[:10_000])
    if max(map(len, row)) > _MAX_FIELD:
        big = next(h for h, v in zip(header, row, strict=True) if len(v) > _MAX_FIELD)
        return RawRow(name, line, None, f"field '{big}' is larger than {_MAX_FIELD} bytes")
    return RawRow(name, line, dict(zip(header, row, strict=True)))


def _jsonl_rows(name: str, fh: IO[str]) -> Iterator[RawRow]:
    for line, text in enumerate(fh, 1):
        if not text.strip():
            continue
        if any("\udc80" <= c <= "\udcff" for c in text):
            bad = next(i for i, c in enumerate(text) if "\udc80" <= c <= "\udcff")
            yield RawRow(name, line, None, f"bytes at character {bad} are not valid text in the "
                         "file's encoding; re-export it as UTF-8 (or pass --encoding)",
                         text=printable(text)[:10_000])
            continue
        try:
            data: Any = orjson.loads(text.lstrip("\ufeff"))
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
