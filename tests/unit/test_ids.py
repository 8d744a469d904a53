"""Record, run and task ids: unique however many are made at once, ordered by time."""

from __future__ import annotations

import os
import time

import pytest

from keel import _record
from keel._record import new_id


def test_ids_made_within_one_millisecond_never_collide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_record.time, "time_ns", lambda: 1_795_000_000_000_000_000)
    ids = [new_id() for _ in range(200_000)]  # drawn at random, 32 bits collide here (p ~ 0.99)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)  # and within the millisecond, in the order they were made


def test_ids_sort_by_time() -> None:
    first = new_id()
    time.sleep(0.002)
    assert new_id() > first
    assert len(first) <= 32  # the store's id columns


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_draws_its_own_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report an id and leave at once
        os.write(write, new_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    os.close(read)
    mine = new_id()
    assert child[12:20] != mine[12:20]  # another process tag
