"""One front door: keel.__all__ lists exactly the public names."""

from __future__ import annotations

import keel


def test_all_is_complete_and_importable() -> None:
    public = {n for n in vars(keel) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(keel, n)).__name__ == "module"}
    assert set(keel.__all__) - {"__version__"} == public - modules
    for name in keel.__all__:
        assert getattr(keel, name) is not None


def test_errors_have_stable_codes() -> None:
    from keel import errors

    codes = [c.code for c in vars(errors).values()
             if isinstance(c, type) and issubclass(c, errors.KeelError)]
    assert len(codes) == len(set(codes))
    assert all(c.startswith("keel.") for c in codes)
