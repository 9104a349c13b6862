"""The Inspector page's parts: the pair's facts line and its views (swipe/blink, difference on demand).

What the page draws when it opens is only what an analyst looks at first; the difference heatmap
(a plotly chart of every pixel) is computed when its tab is opened, and that tab switch reruns the
views alone (`st.fragment`), not the neighbours or the minimap.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from textitsr.escape import markdown_text

if TYPE_CHECKING:  # pragma: no cover - typing only
    from textitsr.service import SearchService

#: The views' tabs; the widget key keeps the analyst's choice from pair to pair.
SWIPE_TAB = "Swipe / blink"
DIFFERENCE_TAB = "Difference"
VIEWS_KEY = "inspector-view"


def first_pair_id(service: SearchService) -> str | None:
    """The pair the Inspector shows when it was given none (the archive's first with a footprint)."""
    first = service.footprints(limit=1)["features"]
    return first[0]["properties"]["pair_id"] if first else None


def shown_dates(record: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The pair's dates as known: "1985" for a date known only to the year (stored as 1985-01-01)."""
    dates = record.get("dates") or (None, None)
    precision = record.get("date_precision") or (None, None)
    return tuple(  # type: ignore[return-value]
        d[:4] if d and p == "year" else d for d, p in zip(dates, precision, strict=True)
    )


def year_only(record: Mapping[str, Any]) -> bool:
    """Whether a date of the pair is known only to the year (the page then says the day is unknown)."""
    return "year" in (record.get("date_precision") or ())


def date_labels(record: Mapping[str, Any]) -> tuple[str, str]:
    """('before 2019-03-01', 'after 2020-05-02'): the viewer's and captions' labels (no date: none)."""
    dates = shown_dates(record)
    return (f"before {dates[0] or ''}".strip(), f"after {dates[1] or ''}".strip())


def image_captions(record: Mapping[str, Any]) -> tuple[str, str]:
    """('before (2019-03-01)', 'after (date unknown)'): the captions under the two large images."""
    dates = shown_dates(record)
    return (f"before ({dates[0] or 'date unknown'})", f"after ({dates[1] or 'date unknown'})")


def facts_line(record: Mapping[str, Any]) -> str:
    """One markdown line of the pair's source, split, dates, change type and footprint (escaped)."""
    dates = shown_dates(record)
    note = " (year only: the source gives no day)" if year_only(record) else ""
    facts = [
        f"source **{markdown_text(record.get('source') or '?')}**",
        f"split **{markdown_text(record.get('split') or '—')}**",
        f"dates **{markdown_text(dates[0] or '?')} → {markdown_text(dates[1] or '?')}**{note}",
    ]
    if record.get("change_type"):
        facts.append(f"change type **{markdown_text(record['change_type'])}**")
    if record.get("bounds"):
        w, s, e, n = record["bounds"]
        facts.append(f"footprint W {w:.4f} S {s:.4f} E {e:.4f} N {n:.4f}")
    return " · ".join(facts)


def stac_line(record: Mapping[str, Any]) -> str | None:
    """One markdown line of the STAC items a pair was read from (ids, collection, cloud cover, GSD,
    item links; escaped), or None for a pair that came from no catalog."""
    stac = (record.get("location") or {}).get("stac")
    if not isinstance(stac, Mapping):
        return None
    before, after = (stac.get(k) if isinstance(stac.get(k), Mapping) else {} for k in ("before", "after"))
    ids = [markdown_text(c.get("id") or "?") for c in (before, after)]
    facts = [f"STAC items **{ids[0]}** → **{ids[1]}**"]
    if before.get("collection"):
        facts.append(f"collection **{markdown_text(before['collection'])}**")
    clouds = [c.get("cloud_cover") for c in (before, after)]
    if any(isinstance(c, int | float) for c in clouds):
        shown = [f"{c:g}%" if isinstance(c, int | float) else "?" for c in clouds]
        facts.append("cloud cover " + " → ".join(shown))
    if isinstance(before.get("gsd"), int | float):
        facts.append(f"GSD {before['gsd']:g} m")
    links = [markdown_text(c["href"]) for c in (before, after) if c.get("href")]
    if links:
        facts.append("items " + ", ".join(links))
    return " · ".join(facts)


def pair_views(service: SearchService, pair_id: str, jpegs: tuple[bytes, bytes], labels: tuple[str, str]
               ) -> None:
    """Swipe/blink and the difference heatmap in tabs; the heatmap only while its tab is open."""
    import streamlit as st

    from textitsr.app import compare, figures, widgets

    @st.fragment
    def views() -> None:
        swipe_tab, diff_tab = st.tabs([SWIPE_TAB, DIFFERENCE_TAB], key=VIEWS_KEY, on_change="rerun")
        with swipe_tab, widgets.show_errors("Swipe/blink view"):
            compare.before_after_viewer(*jpegs, labels)
        if diff_tab.open:
            with diff_tab, widgets.show_errors("Difference heatmap"):
                before, after = service.thumbnails(pair_id)
                st.plotly_chart(figures.difference_heatmap(before, after), key="diff", width="stretch")

    views()


#: A change type below this share is left out of the model's reading (noise, not a reading).
READING_FLOOR = 0.05


def reading_rows(reading: Mapping[str, float]) -> list[dict[str, str]]:
    """The model's change-type reading as table rows, largest share first, shares below
    READING_FLOOR left out; type names in words ("buildings_built" -> "buildings built")."""
    ranked = sorted(reading.items(), key=lambda item: -item[1])
    return [{"change": t.replace("_", " "), "share": f"{share:.0%}"} for t, share in ranked
            if share >= READING_FLOOR]
