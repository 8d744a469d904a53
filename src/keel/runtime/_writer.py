"""A writer process for SQLite: a long run's batches are committed on the other core.

In one process, SQLite's work on a batch (binding every row, updating the indexes,
committing, checkpointing the WAL: about a third of a no-op record's cost) holds Python's
interpreter lock for every row, so the thread deciding the next batch waits for it. On
PostgreSQL that work already happens in the server's processes.

:class:`RowWriter` commits a batch's rows (:class:`~keel.store._store.BatchRows`) in-process
until the run has written ``after_records`` records (``KEEL_WRITER_PROCESS``: a number, or
``off``; by default 20,000, and never when the process may use only one core), then starts
a child process (:func:`main`) that opens its own connection and
commits each batch it is sent, answering once it is durable. Until the child says it is
ready, batches are still written in-process; if it cannot start, the run goes on without
it; if it fails a write, the error surfaces like any store error. The child ends when its
input closes (a batch already sent is committed or rolled back whole, never half: a killed
run loses nothing a run in one process would keep).
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from keel._child import recv_frame, send_frame, usable_cores
from keel.errors import ConfigError, StoreError
from keel.store import BatchRows, Store

log = logging.getLogger("keel.store")
#: Records written in-process before a run starts its writer process (0: from the start).
DEFAULT_AFTER_RECORDS = 20_000
_READY, _OK = b"ready", b"ok"


def offload_setting() -> int | None:
    """``KEEL_WRITER_PROCESS``: ``off``, or after how many records to start it."""
    raw = os.environ.get("KEEL_WRITER_PROCESS", "").strip().lower()
    if raw == "off":
        return None
    if raw.isdigit():
        return int(raw)
    if raw:
        raise ConfigError(f"KEEL_WRITER_PROCESS={raw!r}: give a number of records after which "
                          "a run starts its writer process, or 'off'")
    cores = usable_cores()
    if cores < 2:
        # On one core the child only adds work (pickling every batch, switching processes):
        # 25,751 -> 20,437 no-op records/s pinned to one core (docs/benchmarks.md).
        log.debug("no writer process: this process may use %.2g core(s)", cores)
        return None
    return DEFAULT_AFTER_RECORDS


class RowWriter:
    """Commits batches in-process, then (SQLite files, long runs) through a child process."""

    def __init__(self, store: Store, after_records: int | None = None) -> None:
        self.store = store
        self.after = offload_setting() if after_records is None else after_records
        self.written = 0
        self.batches_there = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._ready = False
        url = store.engine.url
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            self.after = None  # PostgreSQL works in its own processes already; memory can't share

    def write(self, rows: BatchRows) -> None:
        if self._proc is None and self.after is not None and self.written >= self.after:
            self._start()
            if self.after == 0:  # asked for from the start: wait for it rather than write here
                self._poll_ready(wait_s=60.0)
        if self._proc is not None and (self._ready or self._poll_ready()):
            self._write_there(rows)
            self.batches_there += 1
        else:
            self.store.write_rows(rows)
        self.written += len(rows.decisions)

    def _start(self) -> None:
        url = self.store.engine.url.render_as_string(hide_password=False)
        here = str(Path(__file__).resolve().parents[2])  # the child runs this same keel
        path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from keel.runtime._writer import main; main()", url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": path})

    def _poll_ready(self, wait_s: float = 0.0) -> bool:
        """Whether the child has opened the store; if it could not, go on without it."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        if not select.select([proc.stdout], [], [], wait_s)[0]:
            return False
        answer = recv_frame(proc.stdout)
        if answer == _READY:
            self._ready = True
            return True
        why = answer.decode("utf-8", "replace") if answer else f"it exited ({proc.wait()})"
        log.warning("keel's writer process could not start (%s); writing in-process", why)
        self.after = None
        self.close()
        return False

    def _write_there(self, rows: BatchRows) -> None:
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        try:
            send_frame(proc.stdin, pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL))
            reply = recv_frame(proc.stdout)
        except (BrokenPipeError, OSError) as exc:
            raise StoreError(f"keel's writer process is gone: {exc}") from exc
        if reply != _OK:
            detail = reply.decode("utf-8", "replace") if reply else "it exited"
            raise StoreError(f"store write failed in keel's writer process: {detail}")

    def close(self) -> None:
        """Let the child finish and exit (its input closes)."""
        proc, self._proc, self._ready = self._proc, None, False
        if proc is None:
            return
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def _serve(url: str, inp: IO[bytes], out: IO[bytes]) -> int:
    try:
        store = Store.open(url, migrate=False)
    except Exception as exc:  # the parent reads the failure as a non-ready answer
        send_frame(out, f"{type(exc).__name__}: {exc}".encode())
        return 1
    send_frame(out, _READY)
    try:
        while (frame := recv_frame(inp)) is not None:
            rows: Any = pickle.loads(frame)
            try:
                store.write_rows(rows)
            except Exception as exc:  # reported to the parent, which fails the run
                send_frame(out, f"{type(exc).__name__}: {exc}".encode())
                continue
            send_frame(out, _OK)
    finally:
        store.close()
    return 0


def main() -> None:
    """The child (``python -c``, argv[1] = the store URL): frames on the original stdout;
    anything printed goes to stderr instead."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.exit(_serve(sys.argv[1], sys.stdin.buffer, out))
