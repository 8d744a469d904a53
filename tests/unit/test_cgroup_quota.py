"""How many CPUs a container's cgroup quota allows (keel starts no writer process below 2)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from keel._child import _cgroup_quota


def _v2(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cpu.max").write_text(text)
    return root


def _v1(root: Path, quota: str, period: str) -> Path:
    (root / "cpu").mkdir(parents=True)
    (root / "cpu" / "cpu.cfs_quota_us").write_text(quota)
    (root / "cpu" / "cpu.cfs_period_us").write_text(period)
    return root


@pytest.mark.parametrize(("text", "cpus"), [("50000 100000\n", 0.5), ("150000 100000", 1.5),
                                             ("max 100000\n", math.inf)])
def test_cgroup_v2(tmp_path: Path, text: str, cpus: float) -> None:
    assert _cgroup_quota(_v2(tmp_path / "cg", text)) == cpus


@pytest.mark.parametrize(("quota", "cpus"), [("100000\n", 1.0), ("250000", 2.5), ("-1\n", math.inf)])
def test_cgroup_v1(tmp_path: Path, quota: str, cpus: float) -> None:
    assert _cgroup_quota(_v1(tmp_path / "cg", quota, "100000\n")) == cpus


def test_no_cgroup_files_means_no_quota(tmp_path: Path) -> None:
    assert _cgroup_quota(tmp_path / "none") == math.inf
    assert _cgroup_quota(_v2(tmp_path / "bad", "garbage")) == math.inf
