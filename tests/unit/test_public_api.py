"""One front door: keel.__all__ lists exactly the public names, and importing keel is light."""

from __future__ import annotations

import subprocess
import sys

import keel


def test_all_is_complete_and_importable() -> None:
    lazy = set(keel._WHERE)
    assert set(keel.__all__) - {"__version__"} == lazy
    for name in keel.__all__:
        assert getattr(keel, name) is not None
    public = {n for n in vars(keel) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(keel, n)).__name__ == "module"}
    assert public - modules <= set(keel.__all__), "a public name outside __all__"


def test_unknown_names_are_an_attribute_error() -> None:
    try:
        keel.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("keel.NoSuchThing should not exist")


def test_import_keel_and_its_cli_pull_in_no_heavy_library() -> None:
    code = ("import sys, keel, keel.cli; "
            "print(sorted(m for m in ('sqlalchemy', 'numpy', 'scipy', 'sklearn', 'pyarrow', "
            "'fastapi', 'opentelemetry', 'alembic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_errors_have_stable_codes() -> None:
    from keel import errors

    codes = [c.code for c in vars(errors).values()
             if isinstance(c, type) and issubclass(c, errors.KeelError)]
    assert len(codes) == len(set(codes))
    assert all(c.startswith("keel.") for c in codes)
