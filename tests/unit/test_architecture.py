"""The import rules of docs/architecture.md, checked on the source (a few lines of ast):

1. No module imports another package's private module: each package's __init__ is its
   public face. (The root's own private modules, keel._json and the like, are keel's base:
   every package may use them.)
2. Dependencies between keel's parts point one way, down the layers below; a part may use
   its own layer and the layers under it, never one above.
3. A keel import inside a function is there for start-up time only, and says so.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

#: Bottom to top. Each part may import its own layer and those before it.
LAYERS: list[set[str]] = [
    {"keel.errors", "keel._json", "keel._log", "keel._prediction", "keel.contracts",
     "keel._record", "keel.redact", "keel._child", "keel._http", "keel._version",
     "keel._money"},
    {"keel.models"},
    {"keel.resilience"},
    {"keel.workflow", "keel.watch"},
    {"keel.store"},
    {"keel.stages", "keel.sources"},
    {"keel.deliver", "keel.telemetry", "keel.monitor", "keel.review", "keel.releases"},
    {"keel.runtime", "keel.gates", "keel.cost"},
    {"keel.server"},
    {"keel.cli", "keel", "keel.__main__"},
]
LAYER_OF = {part: n for n, layer in enumerate(LAYERS) for part in layer}


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted((SRC / "keel").rglob("*.py")):
        if "node_modules" in path.parts or "migrations" in path.parts:
            continue
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def _part(module: str) -> str:
    """The layered unit a module belongs to: keel.<package>, or a top-level module."""
    bits = module.split(".")
    return ".".join(bits[:2]) if len(bits) > 1 else module


class _Imports(ast.NodeVisitor):
    """keel imports: (line, module, inside a function?), skipping `if TYPE_CHECKING:`."""

    def __init__(self) -> None:
        self.found: list[tuple[int, str, bool]] = []
        self.depth = 0

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
                (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name == "keel" or alias.name.startswith("keel."):
                self.found.append((node.lineno, alias.name, self.depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module and (node.module == "keel" or
                                                node.module.startswith("keel.")):
            for alias in node.names:  # from keel import store; from keel.store import _x
                inner = node.module == "keel" or alias.name.startswith("_")
                target = f"{node.module}.{alias.name}" if inner else node.module
                self.found.append((node.lineno, target, self.depth > 0))


def _imports(path: Path) -> list[tuple[int, str, bool]]:
    visitor = _Imports()
    visitor.visit(ast.parse(path.read_text()))
    return visitor.found


ALL = list(_modules())


def test_every_part_has_a_layer() -> None:
    parts = {_part(m) for m, _p in ALL}
    assert parts - set(LAYER_OF) == set(), "give each new package a layer in this test and in docs"


@pytest.mark.parametrize(("module", "path"), ALL, ids=[m for m, _p in ALL])
def test_imports_follow_the_rules(module: str, path: Path) -> None:
    mine = _part(module)
    lines = path.read_text().splitlines()
    problems = []
    for lineno, target, in_function in _imports(path):
        theirs = _part(target)
        bits = target.split(".")
        if theirs != mine and len(bits) > 2 and bits[2].startswith("_") and \
                not bits[2].startswith("__"):
            problems.append(f"line {lineno}: {target} is private to {theirs}; use its public face")
        if theirs in LAYER_OF and mine in LAYER_OF and LAYER_OF[theirs] > LAYER_OF[mine]:
            problems.append(f"line {lineno}: {mine} (layer {LAYER_OF[mine]}) imports {theirs} "
                            f"(layer {LAYER_OF[theirs]}): dependencies point down")
        if in_function and theirs != mine:
            context = " ".join(lines[max(0, lineno - 2):lineno])
            if "start-up" not in context:
                problems.append(f"line {lineno}: {target} imported inside a function without "
                                "a `# start-up: ...` comment saying why")
    assert problems == []


FACES = ["keel", *sorted({_part(m) for m, _p in ALL if _part(m).count(".") == 1 and
                          (SRC / Path(*_part(m).split("."))).is_dir()})]


@pytest.mark.parametrize("face", FACES)
def test_every_name_a_face_promises_is_there(face: str) -> None:
    import importlib

    module = importlib.import_module(face)
    names = getattr(module, "__all__", [])
    assert names, f"{face} names its public face in __all__"
    missing = [n for n in names if getattr(module, n, None) is None]
    assert missing == []
