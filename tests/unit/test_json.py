"""keel's canonical JSON: sorted keys, non-string keys and odd values, whichever path it takes."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from keel import _json

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
keys = st.one_of(st.text(max_size=8), st.integers(-1000, 1000))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)), max_leaves=12)


@given(values)
def test_same_text_as_with_every_option(value: Any) -> None:
    expected = orjson.dumps(value, default=_json._default, option=_json._OPTS).decode()
    assert _json.dumps(value) == expected
    assert _json.loads(_json.dumpb(value)) == orjson.loads(expected)


def test_non_string_keys_and_odd_values() -> None:
    assert _json.dumps({"b": 1, "a": {2: "x"}, "s": {3, 1}, "raw": b"\xff"}) == (
        '{"a":{"2":"x"},"b":1,"raw":"\\\\xff","s":[1,3]}')


def test_unrolled_row_digests_equal_the_reference_for_any_row() -> None:
    """The store digests each row with a function unrolled for its table; it must give the
    reference digest (what `keel audit verify` recomputes) for every shape of row: NULLs in
    the middle and at the end, ints in REAL columns, non-str values in TEXT columns."""
    import random

    from keel.store._audit import digester, row_digest
    from keel.store._ledger import _DECISION_KINDS, _PREDICTION_KINDS, _RECORD_KINDS

    rng = random.Random(7)

    def value(kind: object) -> object:
        if rng.random() < 0.2:
            return None
        name = getattr(kind, "__name__", "")
        if name == "_f":
            return rng.choice([rng.random(), rng.randint(0, 5)])
        if name == "_i":
            return rng.randint(0, 9)
        if name == "_b":
            return rng.choice([True, False, 0, 1])
        return rng.choice(["", "x", "\x00", "ü\u2028", str(rng.random()), 5])

    for kinds in (_DECISION_KINDS, _PREDICTION_KINDS, _RECORD_KINDS):
        fast = digester(kinds)
        for _ in range(3000):
            row = tuple(value(k) for k in kinds)
            assert fast(row) == row_digest(row, kinds), row
