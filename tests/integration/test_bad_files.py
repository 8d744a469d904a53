"""Every kind of bad input file a user has handed keel, through `keel run` as they type it:
none prints a traceback; a file keel cannot read at all is a clear error (exit 1) before
anything is decided; every other file is read whole, and rows read == dispositions +
already decided, with the bad rows quarantined (kept for replay) with their reason."""

from __future__ import annotations

import bz2
import codecs
import gzip
import json
import lzma
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests._workflows import write_workflow

from keel.cli import main

CSV = "id,text\na,a first message\nb,a second message\nc,a third message\n"
ROWS = "\n".join(json.dumps({"id": k, "text": f"message {k}"}) for k in "abc") + "\n"


@dataclass
class Case:
    name: str
    make: Callable[[Path], Path]    # writes the file, returns the path to run
    read: int | None = None         # expected rows read (None: a clear error instead)
    quarantined: int = 0
    error: str = ""                 # expected in the error message (exit 1)
    args: tuple[str, ...] = ()
    reason: str = ""                # expected in a quarantined row's violation message


def _bytes(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        (d / name).write_bytes(data)
        return d / name
    return make


def _text(name: str, text: str) -> Callable[[Path], Path]:
    return _bytes(name, text.encode())


def _parquet(d: Path) -> Path:
    pq.write_table(pa.table({"id": ["p1", None, "p3"], "text": ["hello world", "x", ""]}),
                   d / "in.parquet")
    return d / "in.parquet"


def _dir(d: Path) -> Path:
    (d / "folder.csv").mkdir()
    return d / "folder.csv"


def _loop(d: Path) -> Path:
    (d / "loop.csv").symlink_to(d / "loop.csv")
    return d / "loop.csv"


def _dangling(d: Path) -> Path:
    (d / "gone.csv").symlink_to(d / "nowhere.csv")
    return d / "gone.csv"


def _truncated_gzip(d: Path) -> Path:
    body = "id,text\n" + "".join(f"r{i},message number {i} in a long file\n" for i in range(4000))
    data = gzip.compress(body.encode())
    (d / "cut.csv.gz").write_bytes(data[: len(data) // 2])
    return d / "cut.csv.gz"


CASES = [
    Case("extra field", _text("in.csv", 'id,text\na,fine\nb,"two",extra\n'), 2, 1,
         reason="3 fields but the header has 2"),
    Case("missing field", _text("in.csv", "id,text\na,fine message\nb\n"), 2, 1,
         reason="1 fields but the header has 2"),
    Case("unclosed quote at the end", _text("in.csv", 'id,text\na,"hello\nb,world\nc,again\n'),
         3, 1, reason="unclosed or stray quote"),
    Case("unclosed quote in the middle",
         _text("in.csv", 'id,text\na,fine one\nb,"oops\nc,"quoted, fine",x\nd,last one\n'), 4, 2),
    Case("quoted newline is one row", _text("in.csv", 'id,text\na,"two\nlines"\nb,fine one\n'), 2),
    Case("blank lines", _text("in.csv", "id,text\n\na,first one\n\n\nb,second one\n"), 2),
    Case("only blank lines after the header", _text("in.csv", "id,text\n\n\n\n"), 0),
    Case("empty file", _text("in.csv", ""), 0),
    Case("header only", _text("in.csv", "id,text\n"), 0),
    Case("empty key", _text("in.csv", "id,text\n,no key here\nb,fine one\n"), 2, 1),
    Case("empty text", _text("in.csv", "id,text\na,\nb,fine one\n"), 2, 1),
    Case("text over the contract's length", _text("in.csv", f"id,text\na,{'x' * 6000}\nb,fine\n"),
         2, 1),
    Case("same key twice, same content", _text("in.csv", "id,text\na,same one\na,same one\n"), 2),
    Case("same key twice, other content",
         _text("in.csv", "id,text\na,first version\na,second version\n"), 2, 1,
         reason="already belongs to"),
    Case("invalid UTF-8 in the text", _bytes("in.csv", b"id,text\na,caf\xe9 au lait\nb,fine\n"),
         2, 1, reason="not text"),
    Case("invalid UTF-8 in the key", _bytes("in.csv", b"id,text\nk\xff1,some text\nb,fine\n"), 2, 1),
    Case("a NUL inside a field", _bytes("in.csv", b"id,text\na,nul\x00here\nb,fine one here\n"),
         2, 1, reason="not text"),
    Case("CRLF line endings", _bytes("in.csv", CSV.replace("\n", "\r\n").encode()), 3),
    Case("old Mac CR line endings", _bytes("in.csv", CSV.replace("\n", "\r").encode()), 3),
    Case("UTF-8 with a byte-order mark", _bytes("in.csv", codecs.BOM_UTF8 + CSV.encode()), 3),
    Case("UTF-16 LE with a BOM", _bytes("in.csv", CSV.encode("utf-16")), 3),
    Case("UTF-16 BE with a BOM", _bytes("in.csv", codecs.BOM_UTF16_BE + CSV.encode("utf-16-be")), 3),
    Case("UTF-16 without a BOM", _bytes("in.csv", CSV.encode("utf-16-le")), 3),
    Case("UTF-32 with a BOM", _bytes("in.csv", CSV.encode("utf-32")), 3),
    Case("Latin-1 read as UTF-8", _bytes("in.csv", "id,text\na,café crème\nb,fine\n".encode("latin-1")),
         2, 1),
    Case("Latin-1 declared", _bytes("in.csv", "id,text\na,café crème\nb,fine\n".encode("latin-1")),
         2, args=("--encoding", "latin-1")),
    Case("cp1252 smart quotes declared",
         _bytes("in.csv", "id,text\na,\u201cquoted\u201d text\n".encode("cp1252")), 1,
         args=("--encoding", "cp1252")),
    Case("an encoding Python does not know", _text("in.csv", CSV), error="not an encoding",
         args=("--encoding", "klingon")),
    Case("binary file named .csv", _bytes("in.csv", bytes(range(256)) * 40),
         error="looks like a binary file"),
    Case("gzip named .csv.gz", _bytes("in.csv.gz", gzip.compress(CSV.encode())), 3),
    Case("gzip named .csv", _bytes("in.csv", gzip.compress(CSV.encode())), 3),
    Case("bzip2", _bytes("in.csv.bz2", bz2.compress(CSV.encode())), 3),
    Case("xz", _bytes("in.csv.xz", lzma.compress(CSV.encode())), 3),
    Case("zstd", _bytes("in.csv.zst", b"\x28\xb5\x2f\xfd" + b"\x00" * 40), error="zstd -d"),
    Case("gzip cut short", _truncated_gzip, None),  # read count checked separately below
    Case("header that is not text", _bytes("in.csv", b"i\xffd,te\xfext\na,b\n"),
         error="header is not valid text"),
    Case("header without the key column", _text("in.csv", "name,text\nx,hello there\n"), 1, 1),
    Case("semicolon-separated", _text("in.csv", "id;text\na;hello there\n"), 1, 1),
    Case("a directory", _dir, error="is a directory"),
    Case("a symbolic link loop", _loop, error="symbolic link loop"),
    Case("a dangling symbolic link", _dangling, error="to a file that does not exist"),
    Case("no such file", lambda d: d / "missing.csv", error="does not exist"),
    Case("unknown extension", _text("in.xlsx", "x"), error="unknown input format"),
    Case("JSONL invalid line", _text("in.jsonl", ROWS + "{not json\n"), 4, 1, reason="invalid JSON"),
    Case("JSONL array line", _text("in.jsonl", ROWS + "[1, 2]\n"), 4, 1,
         reason="expected a JSON object"),
    Case("JSONL invalid UTF-8", _bytes("in.jsonl", ROWS.encode() + b'{"id": "z", "text": "\xff"}\n'),
         4, 1),
    Case("JSONL UTF-16", _bytes("in.jsonl", ROWS.encode("utf-16")), 3),
    Case("JSONL wrong types", _text("in.jsonl", '{"id": "a", "text": 12}\n{"id": "b"}\n'), 2, 2),
    Case("JSONL gzip", _bytes("in.jsonl.gz", gzip.compress(ROWS.encode())), 3),
    Case("Parquet with a null key and empty text", _parquet, 3, 2),
    Case("corrupt Parquet", _bytes("in.parquet", b"PAR1 not really parquet"),
         error="not a readable Parquet file"),
]


def test_there_are_at_least_forty_kinds() -> None:
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_bad_file(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wf = write_workflow(tmp_path)
    src = case.make(tmp_path)
    db = f"sqlite:///{tmp_path / 'keel.db'}"
    code = main(["run", str(wf), str(src), "--db", db, "--json", *case.args])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    if case.error:
        assert code == 1 and case.error in " ".join(out.err.split()), out.err
        assert not (tmp_path / "keel.db").exists() or _decided(db) == 0  # nothing half-done
        return
    assert code == 0, out.err
    summary = json.loads(out.out)
    assert summary["read"] == sum(summary["dispositions"].values()) + summary["already_decided"]
    if case.read is None:  # a compressed file cut short: what could be read, then one row
        assert summary["read"] > 100 and summary["dispositions"]["quarantined"] == 1
        assert "cut short" in _messages(db)[0]
        return
    assert summary["read"] == case.read, summary
    assert summary["dispositions"]["quarantined"] == case.quarantined, summary
    if case.reason:
        assert any(case.reason in m for m in _messages(db)), _messages(db)


def _decided(db: str) -> int:
    import keel

    return sum(sum(s["dispositions"].values()) for s in keel.status(db=db))


def _messages(db: str) -> list[str]:
    import keel

    return [v["message"] for q in keel.quarantined(db=db) for v in q["violations"]]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file: run as a user to check")
def test_an_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wf = write_workflow(tmp_path)
    src = tmp_path / "secret.csv"
    src.write_text(CSV)
    src.chmod(0)
    assert main(["run", str(wf), str(src), "--db", str(tmp_path / "k.db")]) == 1
    assert "is not readable by this user" in capsys.readouterr().err
