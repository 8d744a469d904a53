"""Small workflows for tests, as objects and as workflow.py files."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

import keel


class Msg(BaseModel):
    id: str = Field(min_length=1)
    text: str = Field(min_length=1, max_length=5000)
    amount: float | None = None


class Label(BaseModel):
    label: str


def label_of(msg: Any) -> dict[str, str]:
    return {"label": "long" if len(msg.text) > 10 else "short"}


def conf_of(msg: Any) -> float:
    """High confidence unless the text says 'unsure'."""
    return 0.3 if "unsure" in msg.text else 0.95


def make(model: keel.Model | None = None, **kw: Any) -> keel.Workflow:
    kw.setdefault("policy", keel.Policy(threshold=0.8, audit_rate=0.0))
    return keel.Workflow(
        name=kw.pop("name", "tickets"), input=Msg, output=Label, key="id",
        model=model or keel.FakeModel(label_of, confidence=conf_of),
        owners=keel.Owners(business="ops@example.com", support="ml@example.com"), **kw,
    )


WORKFLOW_FILE = textwrap.dedent('''
    from pydantic import BaseModel, Field
    import keel

    class Msg(BaseModel):
        id: str = Field(min_length=1)
        text: str = Field(min_length=1, max_length=5000)

    class Label(BaseModel):
        label: str

    def answer(msg):
        if "boom" in msg.text:
            raise keel.ModelUnavailable("upstream 503")
        return {"label": "long" if len(msg.text) > 10 else "short"}, (0.3 if "unsure" in msg.text else 0.95)

    workflow = keel.Workflow(
        name="tickets", input=Msg, output=Label, key="id",
        model=keel.FunctionModel(answer),
        policy=keel.Policy(threshold=0.8, audit_rate=0.0),
        owners=keel.Owners(business="ops@example.com", support="ml@example.com"),
    )
''')


def write_workflow(folder: Path, text: str = WORKFLOW_FILE) -> Path:
    path = folder / "workflow.py"
    path.write_text(text)
    return path


def write_csv(path: Path, rows: list[tuple[str, ...]], header: str = "id,text") -> Path:
    import csv

    with path.open("w", newline="") as fh:
        fh.write(header + "\n")
        csv.writer(fh).writerows(rows)
    return path
