"""Registering releases, moving the champion alias, and what was live when."""

from __future__ import annotations

import getpass
import os
import time
from dataclasses import dataclass
from typing import Any

from keel.errors import ReleaseError, RolloutConflict
from keel.models import Model
from keel.releases._bundle import Release, bundle, check_fits, pack, release_id, unpack
from keel.store import Store
from keel.store import gates as gates_sql
from keel.store import releases as sql
from keel.workflow import Policy, Workflow

CHAMPION, CHALLENGER = sql.CHAMPION, sql.CHALLENGER


def actor() -> str:
    """Who is acting: ``$KEEL_ACTOR``, else the login name."""
    try:
        return os.environ.get("KEEL_ACTOR") or getpass.getuser()
    except Exception:
        return "unknown"


def register(wf: Workflow, store: Store, *, model: Model | None = None,
             policy: Policy | None = None, name: str | None = None, note: str | None = None,
             by: str | None = None) -> tuple[Release, bool]:
    """Register the release ``wf`` declares (or ``wf`` with another model or policy), with
    its model as an artifact: (release, whether it is new). Nothing goes live."""
    model = model or wf.model
    spec = bundle(wf, model, policy)
    rid = release_id(spec)
    existing = sql.release_by_id(store, rid)
    if existing is not None:
        if name and existing["name"] != name:
            raise ReleaseError(f"this bundle is already registered as {existing['name']!r}; "
                               f"`keel releases show {existing['name']}`")
        if existing["artifact"] is None:  # keep the model now that it can be kept
            row, _new = sql.save_release(store, existing, pack(model, wf))
            return Release.from_row(row), False
        return Release.from_row(existing), False
    row = {"id": rid, "workflow": wf.name, "name": name or sql.next_name(store, wf.name),
           "spec": spec, "model_version": spec["model_version"], "created_by": by or actor(),
           "note": note}
    saved, new = sql.save_release(store, row, pack(model, wf))
    return Release.from_row(saved), new


def ensure_champion(wf: Workflow, store: Store) -> Release:
    """The champion, registering what the workflow file declares.

    The first run makes the declared release the champion. After that, while the champion
    came from the workflow file (nothing was promoted or rolled out yet), the file *is* the
    release: a changed declaration becomes the champion on the next run, as a prototype
    expects (not in production: there it waits like any other release). Once a champion
    came from a promotion or a rollout, a changed file is registered
    and waits for a rollout or a promotion (:func:`declared_note` says so).
    """
    declared, _new = register(wf, store, note="declared by the workflow file")
    current = sql.aliases(store, wf.name).get(CHAMPION)
    if current == declared.id:
        return declared
    if current is None or (_follows_file(store, wf.name) and not _in_production(wf, store)
                           and sql.active_rollout(store, wf.name) is None):
        reason = ("first run of the workflow" if current is None
                  else "the workflow file declares a new release")
        sql.move_alias(store, wf.name, CHAMPION, declared.id, kind="declared", actor=actor(),
                       reason=reason, evidence={"was": current})
        return declared
    return get(store, wf.name, current)


def _in_production(wf: Workflow, store: Store) -> bool:
    """In production (gated workflows), a changed file waits for a rollout or a promotion."""
    if wf.gates is None:
        return False
    row = gates_sql.stage(store, wf.name)
    return row is not None and row["stage"] == "production"


def _follows_file(store: Store, workflow: str) -> bool:
    """Whether the champion alias has only ever moved because the workflow file changed."""
    return all(ev["kind"] == "declared" for ev in sql.history(store, workflow)
               if ev["alias"] == CHAMPION)


def declared_note(wf: Workflow, store: Store, champion: Release) -> str | None:
    """A line for people when the workflow file declares another release than the champion."""
    spec = bundle(wf)
    rid = release_id(spec)
    if rid == champion.id:
        return None
    row = sql.release_by_id(store, rid)
    name = row["name"] if row else "a new release"
    return (f"{wf.source_path or wf.name} declares {name}, but the champion is "
            f"{champion.name}: the champion decides. Try {name} with `keel rollout start "
            f"--challenger {name}`, or `keel release promote {name}`")


def champion_now(store: Store, workflow: str) -> Release | None:
    """The champion as it stands (None before the first run); registers nothing."""
    return by_alias(store, workflow, CHAMPION)


def get(store: Store, workflow: str, name_or_id: str) -> Release:
    return Release.from_row(sql.release(store, workflow, name_or_id))


def by_alias(store: Store, workflow: str, alias: str) -> Release | None:
    rid = sql.aliases(store, workflow).get(alias)
    if rid is None:
        return None
    row = sql.release_by_id(store, rid)
    return Release.from_row(row) if row else None


def listing(store: Store, workflow: str) -> list[dict[str, Any]]:
    """Every release with its aliases and how many records it decided."""
    rows = [Release.from_row(r) for r in sql.releases(store, workflow)]
    alias_of: dict[str, list[str]] = {}
    for alias, rid in sql.aliases(store, workflow).items():
        alias_of.setdefault(rid, []).append(alias)
    counts = sql.release_counts(store, workflow, [r.id for r in rows])
    return [{**r.as_dict(), "aliases": sorted(alias_of.get(r.id, [])),
             "decided": counts.get(r.id, 0)} for r in rows]


def model_for(wf: Workflow, store: Store, release: Release) -> Model:
    """The model that makes ``release`` decide: the workflow's own when the file declares
    it, else the release's stored artifact."""
    check_fits(wf, release)
    if wf.model.version == release.model_version:
        return wf.model
    if release.artifact is None:
        raise ReleaseError(f"release {release.name} has no stored model and the workflow "
                           f"file declares another ({wf.model.version}); it cannot run")
    data = sql.artifact(store, release.artifact)
    if data is None:
        raise ReleaseError(f"release {release.name}: its model artifact is missing from the store")
    return unpack(data, release.artifact, release)


def runnable(wf: Workflow, store: Store, release: Release) -> Model:
    """Like :func:`model_for`, with the model warmed: proof the release can decide."""
    model = model_for(wf, store, release)
    model.warm()
    return model


def promote(wf: Workflow, store: Store, name: str, *, by: str | None = None,
            reason: str | None = None) -> Release:
    """Make ``name`` the champion now. A rollout of that release ends as promoted; a
    rollout of another one must be ended first."""
    release = get(store, wf.name, name)
    runnable(wf, store, release)
    ro = sql.active_rollout(store, wf.name)
    who = by or actor()
    if ro is not None:
        if ro["challenger"] != release.id:
            raise RolloutConflict(f"a rollout of another release is under way ({ro['id']}); "
                                  "`keel rollout abort` it first")
        sql.update_rollout(store, ro["id"], kind="promoted", actor=who,
                           reason=reason or "promoted by hand", status="promoted",
                           champion=release.id)
        return release
    current = sql.aliases(store, wf.name).get(CHAMPION)
    if current == release.id:
        raise ReleaseError(f"release {release.name} is already the champion")
    sql.move_alias(store, wf.name, CHAMPION, release.id, kind="promoted", actor=who,
                   reason=reason or "promoted by hand", evidence={"was": current})
    return release


def rollback(wf: Workflow, store: Store, *, by: str | None = None,
             reason: str | None = None) -> dict[str, Any]:
    """Undo the last change: a rollout under way ends (the champion stays); otherwise the
    champion alias goes back to the release that held it before."""
    who = by or actor()
    ro = sql.active_rollout(store, wf.name)
    if ro is not None:
        sql.update_rollout(store, ro["id"], kind="rolled_back", actor=who,
                           reason=reason or "rolled back by hand", status="rolled_back")
        return {"rolled_back": "rollout", "rollout": ro["id"], "champion": ro["champion"]}
    current = sql.aliases(store, wf.name).get(CHAMPION)
    previous = _previous_champion(store, wf.name, current)
    if previous is None:
        raise ReleaseError(f"{wf.name} has had one champion only; there is nothing to roll "
                           "back to (`keel releases history`)")
    release = Release.from_row(sql.release_by_id(store, previous) or {})
    runnable(wf, store, release)
    sql.move_alias(store, wf.name, CHAMPION, previous, kind="rolled_back", actor=who,
                   reason=reason or "rolled back by hand", evidence={"was": current})
    return {"rolled_back": "champion", "champion": previous, "was": current,
            "name": release.name}


def _previous_champion(store: Store, workflow: str, current: str | None) -> str | None:
    chain = [ev["release_id"] for ev in sql.history(store, workflow)
             if ev["alias"] == CHAMPION and ev["release_id"]]
    while chain and chain[-1] == current:
        chain.pop()
    return chain[-1] if chain else None


@dataclass(frozen=True)
class Moment:
    """What was live at a moment: the aliases then, and the rollout's share."""

    at: float
    aliases: dict[str, str]


def at(store: Store, workflow: str, when: float) -> Moment:
    return Moment(when, sql.aliases_at(store, workflow, when))


def history(store: Store, workflow: str, *, until: float | None = None) -> list[dict[str, Any]]:
    """Release events, oldest first, each with its release's name."""
    names = {r["id"]: r["name"] for r in sql.releases(store, workflow)}
    return [{**ev, "release": names.get(ev["release_id"] or "", ev["release_id"])}
            for ev in sql.history(store, workflow, until=until)]


def parse_when(text: str) -> float:
    """A past moment: an ISO 8601 timestamp (UTC unless it says) or seconds since the epoch."""
    from datetime import UTC, datetime

    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ReleaseError(f"--at {text!r}: give an ISO 8601 time such as "
                           "2026-12-06T14:30:00Z, or seconds since the epoch") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    when = moment.timestamp()
    if when > time.time() + 60:
        raise ReleaseError(f"--at {text!r} is in the future")
    return when

