"""A page's state in its URL (`?q=...&k=...`), so a search can be reloaded, bookmarked and shared.

Each page names its fields once (`UrlField`: the session-state key, the URL parameter and how to
read it back). `restore` copies the URL into the session on the session's first run of the page,
before the widgets are drawn; `publish` writes the current values back after they are read. Values
that fail to parse are dropped (a hand-edited link never breaks the page).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Longest URL parameter value read back (a query longer than this is cut).
MAX_PARAM_CHARS = 2_000


def _parse_bool(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError(text)
    return text == "1"


def _parse_list(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


def _parse_dates(text: str) -> tuple[dt.date, dt.date]:
    first, last = (dt.date.fromisoformat(part) for part in text.split("/"))
    if first > last:
        raise ValueError(text)
    return first, last


def _show(value: Any) -> str | None:
    """A session value as URL text (None: leave the parameter out)."""
    if value is None or value == "" or value == [] or value == ():
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], dt.date):
        return "/".join(d.isoformat() for d in value) if len(value) == 2 else None
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class UrlField:
    """One piece of page state: session-state `key`, URL parameter `param`, and its parser."""

    key: str
    param: str
    parse: Callable[[str], Any] = str

    @classmethod
    def text(cls, key: str, param: str) -> UrlField:
        return cls(key, param, lambda t: t[:MAX_PARAM_CHARS])

    @classmethod
    def integer(cls, key: str, param: str) -> UrlField:
        return cls(key, param, int)

    @classmethod
    def flag(cls, key: str, param: str) -> UrlField:
        return cls(key, param, _parse_bool)

    @classmethod
    def names(cls, key: str, param: str) -> UrlField:
        return cls(key, param, _parse_list)

    @classmethod
    def date_range(cls, key: str, param: str) -> UrlField:
        return cls(key, param, _parse_dates)


def restored_values(params: Mapping[str, str], fields: Sequence[UrlField]) -> dict[str, Any]:
    """Session values read from URL parameters (unparseable ones left out)."""
    values = {}
    for field in fields:
        text = params.get(field.param)
        if text is None:
            continue
        try:
            values[field.key] = field.parse(str(text))
        except (ValueError, TypeError):
            continue
    return values


def url_params(session: Mapping[str, Any], fields: Sequence[UrlField]) -> dict[str, str]:
    """URL parameters of the current session values (empty ones left out)."""
    params = {}
    for field in fields:
        shown = _show(session.get(field.key))
        if shown is not None:
            params[field.param] = shown
    return params


def restore(page: str, fields: Sequence[UrlField]) -> None:
    """On this session's first run of `page`, take its state from the URL."""
    import streamlit as st

    marker = f"_url_restored:{page}"
    if st.session_state.get(marker):
        return
    st.session_state[marker] = True
    for key, value in restored_values(st.query_params.to_dict(), fields).items():
        st.session_state[key] = value


def publish(fields: Sequence[UrlField]) -> None:
    """Write the page's current state into the URL (only when it changed: no needless rerun)."""
    import streamlit as st

    wanted = url_params(st.session_state, fields)
    current = st.query_params.to_dict()
    ours = {f.param for f in fields}
    if {k: v for k, v in current.items() if k in ours} != wanted:
        for param in ours - wanted.keys():
            if param in st.query_params:
                del st.query_params[param]
        st.query_params.update(wanted)
