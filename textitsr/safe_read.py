"""JSON read from files the tool did not necessarily write: bounded in nesting depth and size.

Python's parser recurses once per nesting level, so a few kilobytes of `[[[[...` end in a
RecursionError (or worse) rather than a message. Depth is counted first, outside strings, in one pass.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: Nesting any file of ours needs is far below this.
DEFAULT_MAX_DEPTH = 64

_STRING_OR_BRACKET = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


class JsonDepthError(ValueError):
    """The document nests deeper than allowed."""


def nesting_depth(raw: bytes) -> int:
    """Deepest bracket nesting of a JSON document, brackets inside strings ignored."""
    depth = deepest = 0
    for match in _STRING_OR_BRACKET.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def loads_bounded(
    raw: bytes | str, *, max_depth: int = DEFAULT_MAX_DEPTH, max_bytes: int | None = None
) -> Any:
    """json.loads that refuses documents nested deeper than `max_depth` or longer than `max_bytes`.

    Raises ValueError (JsonDepthError for depth, json.JSONDecodeError for syntax, ValueError for size).
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if max_bytes is not None and len(data) > max_bytes:
        raise ValueError(f"{len(data)} bytes of JSON, expected at most {max_bytes}")
    depth = nesting_depth(data)
    if depth > max_depth:
        raise JsonDepthError(f"JSON nested {depth} levels deep, expected at most {max_depth}")
    return json.loads(data)
