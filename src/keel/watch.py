"""A monitor-only declaration: watch an existing system's data for drift, with no model.

A team whose model runs elsewhere declares what a row of its data holds (the inputs, and the
outputs its system gave) and points ``keel drift`` at files of that data::

    watch = keel.Watch(name="loans", input=Application, output=Decision, key="id")

``keel drift reference watch.py --from last_quarter.parquet`` profiles it and ``keel drift
report watch.py --from this_week.parquet`` compares; nothing is decided, routed or stored
but the reference profile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from keel.contracts import Check, Contract
from keel.errors import WorkflowLoadError
from keel.workflow import Workflow, content_hash, import_declarations


@dataclass
class Watch:
    """Inputs (and optionally outputs) of an existing system, watched for drift.

    ``input`` and ``output`` are pydantic models naming the columns of the watched files; an
    ``output`` field is read from the column of the same name. ``key`` names the column that
    identifies a row (examples in reports show it); without it rows are named by file and
    line. ``input_checks`` are counted as quarantine rules, as a workflow's are.
    """

    name: str
    input: type[BaseModel]
    output: type[BaseModel] | None = None
    key: str | None = None
    input_checks: Sequence[Check] = ()
    description: str = ""
    source_path: str | None = None
    _source_hash: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"watch name {self.name!r}: use letters, digits, '-' and '_'")
        if self.key is not None and self.key not in self.input.model_fields:
            raise ValueError(
                f"key field {self.key!r} is not a field of {self.input.__name__}; "
                f"fields are {sorted(self.input.model_fields)}"
            )
        both = set(self.input.model_fields) & set(self.output_fields())
        if both:
            raise ValueError(
                f"{sorted(both)} are fields of both the input and the output: a file has one "
                "column per name; rename one of them"
            )
        self.input_contract = Contract(self.input, self.input_checks)

    def output_fields(self) -> dict[str, Any]:
        return dict(self.output.model_fields) if self.output is not None else {}

    @property
    def version(self) -> str:
        """Content hash of the declaration's source file (or of the declaration itself)."""
        if self._source_hash is None:
            out = self.output
            self._source_hash = content_hash(
                self.source_path,
                lambda: (self.name, self.key, self.input.model_json_schema(),
                         out.model_json_schema() if out else None),
            )
        return self._source_hash


def load_watched(path: str | Path) -> Workflow | Watch:
    """The :class:`Workflow` or :class:`Watch` a file declares (``keel drift`` takes either)."""
    file = Path(path)
    module, mod_name = import_declarations(file)
    found = {k: v for k, v in vars(module).items() if isinstance(v, (Workflow, Watch))}
    if not found:
        raise WorkflowLoadError(
            f"{file} declares no keel.Workflow or keel.Watch; assign one at module level, "
            'e.g. watch = keel.Watch(name="loans", input=Application)'
        )
    if len(found) > 1 and "workflow" not in found and "watch" not in found:
        raise WorkflowLoadError(
            f"{file} declares {len(found)} workflows or watches ({', '.join(sorted(found))}); "
            "name the one to use 'watch' or 'workflow'"
        )
    decl = found.get("workflow") or found.get("watch") or next(iter(found.values()))
    if isinstance(decl, Workflow):
        decl.module_name = mod_name  # as load_workflow sets it
    decl.source_path = str(file.resolve())
    decl._source_hash = None
    return decl
