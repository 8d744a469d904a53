"""Child processes keel starts beside a run (a SQLite writer, an OTLP exporter): how many
cores there are to give them, and the one wire format they speak over their pipes (frames of
an 8-byte length, then that many bytes)."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import IO

_LEN = struct.Struct("!Q")


def send_frame(out: IO[bytes], payload: bytes) -> None:
    out.write(_LEN.pack(len(payload)) + payload)
    out.flush()


def recv_frame(inp: IO[bytes]) -> bytes | None:
    """The next frame, or None when the other side closed the pipe."""
    head = inp.read(_LEN.size)
    if len(head) < _LEN.size:
        return None
    (size,) = _LEN.unpack(head)
    return inp.read(size)


def usable_cores() -> float:
    """The CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota
    (a container given one CPU on a larger machine)."""
    try:
        cores = float(len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        cores = float(os.cpu_count() or 1)
    return min(cores, _cgroup_quota())


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float:
    """CPUs a cgroup CPU quota allows (v2 ``cpu.max``, else v1 ``cfs_quota_us``); inf if none."""
    try:
        quota, period = (root / "cpu.max").read_text().split()
        return float("inf") if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return float("inf") if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return float("inf")
