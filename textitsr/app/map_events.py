"""What the analyst picked on the map: st_folium's return value -> the query pair (click or rectangle)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from textitsr.app.footprints import Bounds, pair_at_point, pair_in_box, ring_bbox, rings


@dataclass(frozen=True)
class MapPick:
    """The query pair chosen on the map, and how (a click on a tile, or a drawn rectangle)."""

    pair_id: str
    how: str  # "click" | "rectangle"
    point: tuple[float, float] | None = None  # (lon, lat) of the click
    bbox: Bounds | None = None  # drawn rectangle


def _click_point(event: Mapping[str, Any]) -> tuple[float, float] | None:
    for key in ("last_object_clicked", "last_clicked"):
        val = event.get(key)
        if isinstance(val, Mapping) and val.get("lat") is not None and val.get("lng") is not None:
            return (float(val["lng"]), float(val["lat"]))
    return None


def drawn_box(event: Mapping[str, Any]) -> Bounds | None:
    """The rectangle last drawn on the map, or None."""
    drawing = event.get("last_active_drawing")
    if not isinstance(drawing, Mapping):
        return None
    found = rings(drawing.get("geometry") or {})
    return ring_bbox(found[0]) if found and found[0] else None


def new_map_action(event: Mapping[str, Any] | None, previous: Mapping[str, Any] | None = None) -> str | None:
    """"rectangle" or "click" when the map event holds an action not in `previous`, else None."""
    if not event:
        return None
    previous = previous or {}
    box, point = drawn_box(event), _click_point(event)
    if box is not None and box != drawn_box(previous):
        return "rectangle"
    if point is not None and point != _click_point(previous):
        return "click"
    return None


def pick_query_pair(
    event: Mapping[str, Any] | None,
    footprints: Mapping[str, Any],
    previous: Mapping[str, Any] | None = None,
) -> MapPick | None:
    """Which pair the analyst picked with the latest map interaction (st_folium's return value).

    `previous` is the event already handled: the action that changed since then wins (a new
    rectangle, or a new click); without it a drawn rectangle wins over a click. Returns None when
    nothing new happened or the click/rectangle touches no footprint.
    """
    action = new_map_action(event, previous)
    drawing = (event or {}).get("last_active_drawing")
    props = (drawing.get("properties") or {}) if isinstance(drawing, Mapping) else {}
    clicked_id = props.get("pair_id")
    if action == "rectangle" and clicked_id is not None:
        # st_folium reports a click on a footprint as its "active drawing": the feature itself, the
        # one whose tooltip the analyst saw (footprints of one tile at other dates lie under it).
        # Its id may be HTML-escaped for the tooltip: then the click point says which pair it is.
        point = _click_point(event or {})
        known = {str(f.get("properties", {}).get("pair_id")) for f in footprints.get("features", [])}
        pid = str(clicked_id) if str(clicked_id) in known else None
        pid = pid or (pair_at_point(point[0], point[1], footprints) if point else None)
        return MapPick(pid, "click", point=point) if pid else None
    if action == "rectangle":
        box = drawn_box(event or {})
        pid = pair_in_box(box, footprints) if box else None
        return MapPick(pid, "rectangle", bbox=box) if pid else None
    if action == "click":
        point = _click_point(event or {})
        pid = pair_at_point(point[0], point[1], footprints) if point else None
        return MapPick(pid, "click", point=point) if pid else None
    return None


@dataclass(frozen=True)
class LinkedQuery:
    """A map query named in the page's URL: the picked pair, the dates compared, elsewhere only."""

    pair_id: str
    dates: tuple[str, str] | None
    elsewhere: bool


def linked_query(params: Mapping[str, Any], known: Callable[[str], bool]) -> LinkedQuery | None:
    """The query a link names (`?pair=ID&before=DATE&after=DATE&elsewhere=0|1`), or None when it
    names none or a pair `known(id)` does not hold; malformed dates are ignored (the pair's own)."""
    import datetime as dt

    pair_id = str(params.get("pair") or "")[:500]
    if not pair_id or not known(pair_id):
        return None
    dates = None
    try:
        before, after = (dt.date.fromisoformat(str(params.get(k))).isoformat() for k in ("before", "after"))
        dates = (before, after) if before < after else None
    except (TypeError, ValueError):
        dates = None
    return LinkedQuery(pair_id, dates, str(params.get("elsewhere", "1")) != "0")


def query_link(pair_id: str, dates: tuple[str | None, str | None], elsewhere: bool) -> dict[str, str]:
    """URL parameters that reopen this map query (see `linked_query`)."""
    params = {"pair": pair_id, "elsewhere": "1" if elsewhere else "0"}
    if dates[0] and dates[1]:
        params.update(before=str(dates[0]), after=str(dates[1]))
    return params
