"""Sinks: where decisions go, each record exactly once across crashes.

The file sink keeps a committed byte offset; the webhook sink (``_webhook.py``) sends an
Idempotency-Key so a receiver can drop the copy a crash between sending and recording made.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from keel import _json
from keel.errors import UserError


@dataclass
class Written:
    """What a sink did with a batch: its new offset (file sinks), what could not be sent."""

    offset: int | None = None
    #: record id -> (attempts, last error) for deliveries given up on (dead letters)
    dead: dict[str, tuple[int, str]] = field(default_factory=dict)
    #: record id -> attempts it took, where more than one
    attempts: dict[str, int] = field(default_factory=dict)


class Sink(Protocol):
    name: str

    def open(self, committed_offset: int) -> None: ...

    def write(self, lines: list[dict[str, Any]]) -> Written:
        """Write (and flush) the lines; say what happened."""
        ...

    def close(self) -> None: ...


class FileSink:
    """One line per record, JSONL or CSV by extension.

    The byte offset of the last committed write is kept in the store. On open, anything past
    it (written by a run that died before committing) is cut off, so no line appears twice.
    """

    def __init__(self, path: str | Path, output_fields: list[str]) -> None:
        self.path = Path(path).resolve()
        suffix = self.path.suffix.lower()
        if suffix not in (".jsonl", ".csv"):
            raise UserError(f"--out {path}: use a .jsonl or .csv file name")
        self.fmt = suffix[1:]
        self.name = f"file:{self.path}"
        self.columns = ["key", "record_id", "disposition", "reason", "confidence",
                        "model_version", *[f"output.{f}" for f in output_fields]]
        self._fh: io.BufferedWriter | None = None

    def open(self, committed_offset: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        exists = self.path.exists()
        fh = self.path.open("r+b" if exists else "w+b")
        size = fh.seek(0, os.SEEK_END)
        if size > committed_offset:
            fh.truncate(committed_offset)
        fh.seek(min(size, committed_offset))
        self._fh = fh  # type: ignore[assignment]
        if fh.tell() == 0 and self.fmt == "csv":
            self._raw(self._csv([dict(zip(self.columns, self.columns, strict=True))]))

    def _raw(self, data: bytes) -> None:
        assert self._fh is not None
        self._fh.write(data)

    def _csv(self, rows: list[dict[str, Any]]) -> bytes:
        buf = io.StringIO()
        csv.DictWriter(buf, self.columns, extrasaction="ignore", lineterminator="\n").writerows(rows)
        return buf.getvalue().encode("utf-8", "backslashreplace")

    def write(self, lines: list[dict[str, Any]]) -> Written:
        assert self._fh is not None
        if self.fmt == "jsonl":
            data = b"".join(_json.dumpb(line) + b"\n" for line in lines)
        else:
            flat = []
            for line in lines:
                row = {k: v for k, v in line.items() if k != "output"}
                for k, v in (line.get("output") or {}).items():
                    row[f"output.{k}"] = v if isinstance(v, (str, int, float)) else _json.dumps(v)
                flat.append(row)
            data = self._csv(flat)
        self._raw(data)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        return Written(offset=self._fh.tell())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
