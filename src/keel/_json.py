"""Fast, canonical JSON for the hot path (orjson) with a readable fallback for odd values."""

from __future__ import annotations

from typing import Any

import orjson

_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
#: The same output for dicts whose keys are all strings (nearly every value keel stores),
#: about a quarter quicker; a non-string key makes orjson refuse, and the value is then
#: serialised again with OPT_NON_STR_KEYS.
_STR_KEYS = orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _default(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def dumps(value: Any) -> str:
    """Serialize to a canonical JSON string (sorted keys), never raising on odd values."""
    return dumpb(value).decode()


def dumpb(value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=_default, option=_STR_KEYS)
    except orjson.JSONEncodeError:  # a key that is not a string
        return orjson.dumps(value, default=_default, option=_OPTS)


def loads(text: str | bytes | None) -> Any:
    if text is None:
        return None
    return orjson.loads(text)
