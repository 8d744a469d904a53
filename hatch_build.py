"""Build hook: the web app's front-end packages (Chart.js, Swagger UI) come from the npm
registry at install time, never from this repository.

`pip install -e .` (and building a wheel) reads src/keel/server/ui/package-lock.json, downloads
each package's tarball from the address the lock names, checks it against the lock's sha512
integrity, and unpacks it into src/keel/server/ui/node_modules (what `npm ci` would do, without
needing Node.js). A wheel carries the unpacked packages. Without network the install still
succeeds: the dashboard and /docs then say what is missing and how to fetch it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

UI = Path(__file__).parent / "src" / "keel" / "server" / "ui"


def _wanted(lock: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Top-level packages of the lock: {name: {version, resolved, integrity}}."""
    out = {}
    for where, meta in lock.get("packages", {}).items():
        if where.startswith("node_modules/") and where.count("node_modules/") == 1:
            out[where.removeprefix("node_modules/")] = meta
    return out


def _tarball_url(name: str, meta: dict[str, Any]) -> str:
    """The lock's address, else the registry's standard one (lockfiles may omit it)."""
    if meta.get("resolved"):
        return str(meta["resolved"])
    registry = os.environ.get("npm_config_registry", "https://registry.npmjs.org").rstrip("/")
    return f"{registry}/{name}/-/{name.rsplit('/', 1)[-1]}-{meta['version']}.tgz"


def _installed_version(target: Path) -> str | None:
    try:
        return str(json.loads((target / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def _check_integrity(blob: bytes, integrity: str, name: str) -> None:
    algo, _, digest = integrity.partition("-")
    if algo != "sha512":
        raise ValueError(f"{name}: the lock's integrity uses {algo}; only sha512 is checked")
    if base64.b64encode(hashlib.sha512(blob).digest()).decode() != digest:
        raise ValueError(f"{name}: the downloaded tarball does not match the lock's integrity")


def _unpack(blob: bytes, target: Path) -> None:
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        tar.extractall(tmp, filter="data")
    shutil.rmtree(target, ignore_errors=True)
    (tmp / "package").rename(target)
    shutil.rmtree(tmp, ignore_errors=True)


def fetch_assets(ui: Path = UI, timeout_s: float = 60.0) -> list[str]:
    """Bring node_modules in line with package-lock.json; returns what was fetched."""
    lock = json.loads((ui / "package-lock.json").read_text())
    fetched = []
    for name, meta in _wanted(lock).items():
        target = ui / "node_modules" / name
        if _installed_version(target) == meta["version"]:
            continue
        with urllib.request.urlopen(_tarball_url(name, meta), timeout=timeout_s) as resp:
            blob = resp.read()
        _check_integrity(blob, meta["integrity"], name)
        target.parent.mkdir(parents=True, exist_ok=True)
        _unpack(blob, target)
        fetched.append(f"{name}@{meta['version']}")
    return fetched


class AssetsHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        try:
            fetched = fetch_assets()
        except Exception as exc:  # no network: install anyway, the pages explain
            sys.stderr.write(f"keel: front-end packages not fetched ({exc}); the dashboard's "
                             "charts and /docs need them: run `pip install -e .` again with "
                             "network, or `npm ci --prefix src/keel/server/ui`\n")
            return
        if fetched:
            sys.stderr.write(f"keel: fetched {', '.join(fetched)} from the npm registry\n")
        if version != "editable":
            build_data["force_include"][str(UI / "node_modules")] = "keel/server/ui/node_modules"
