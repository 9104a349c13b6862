"""Text search: describe a change, get the archive's best-matching image pairs with their scores."""

from __future__ import annotations

import time

import streamlit as st
from streamlit_folium import st_folium

from textitsr import app_support as ui
from textitsr.escape import markdown_text

ui.page_setup("Text search")
st.title("Text search")
st.caption("Describe the change you are looking for; the archive's image pairs are ranked by similarity.")

service = ui.service_or_stop()
stats = service.catalog.stats()
config = ui.load_config()


def _use_example(text: str) -> None:
    st.session_state["query"] = text


st.text_input(
    "Describe the change",
    key="query",
    placeholder="e.g. many new buildings were built along a new road",
    help="Press Enter to search.",
)
st.caption("Examples:")
example_cols = st.columns(len(ui.EXAMPLE_QUERIES))
for col, example in zip(example_cols, ui.EXAMPLE_QUERIES, strict=True):
    col.button(example, key=f"example-{example}", on_click=_use_example, args=(example,), width="stretch")

# ------------------------------------------------------------------------------ filters
with st.sidebar:
    st.header("Search options")
    k = st.slider("Results (k)", min_value=1, max_value=max(1, min(50, stats.n_pairs)),
                  value=min(10, max(1, stats.n_pairs)), key="k")
    area_mode = st.radio("Area", ["Whole archive", "Coordinates", "Draw on map"], key="area_mode")
    first, last = ui.parse_iso_date(stats.date_range[0]), ui.parse_iso_date(stats.date_range[1])
    use_dates = st.checkbox("Limit dates", key="use_dates", disabled=first is None)
    date_range = None
    if use_dates and first and last:
        date_range = st.date_input("Both dates of a pair within", value=(first, last), key="date_range")
    sources = st.multiselect("Sources", sorted(stats.sources), key="sources",
                             help="Empty: all sources.") if len(stats.sources) > 1 else None

bbox = None
if area_mode == "Coordinates":
    w0, s0, e0, n0 = stats.bounds or (-180.0, -90.0, 180.0, 90.0)
    cols = st.columns(4)
    bbox = (
        cols[0].number_input("West", value=w0, format="%.5f", key="bbox_w"),
        cols[1].number_input("South", value=s0, format="%.5f", key="bbox_s"),
        cols[2].number_input("East", value=e0, format="%.5f", key="bbox_e"),
        cols[3].number_input("North", value=n0, format="%.5f", key="bbox_n"),
    )
elif area_mode == "Draw on map":
    with st.expander("Area filter: draw a rectangle (the last one drawn is used)", expanded=True):
        footprints = service.catalog.footprints()
        clusters = ui.footprint_clusters(footprints)
        fmap = ui.archive_map(footprints, basemap=config.basemap, height=360,
                              clusters=clusters if len(clusters) > 1 else ())
        event = st_folium(fmap, key="filter_map", height=360, use_container_width=True,
                          returned_objects=["last_active_drawing"])
        drawn = ui.drawn_box(event or {})
        if drawn is not None:
            st.session_state["filter_bbox"] = drawn
        bbox = st.session_state.get("filter_bbox")
        st.caption(f"Area: {', '.join(f'{v:.4f}' for v in bbox)}" if bbox else "No rectangle drawn yet.")

# ------------------------------------------------------------------------------ results
query = st.session_state.get("query", "")
if not query.strip():
    st.info("Type a description of a change (or click an example) to search the archive.")
    st.stop()

with ui.show_errors("Search"):
    filters = ui.make_filters(bbox=bbox, date_range=date_range or None, sources=sources or None)
    started = time.perf_counter()
    hits = service.search_text(query, k=k, filters=filters)
    elapsed = time.perf_counter() - started
    if not hits:
        st.warning("No image pairs match these filters. Widen the area or the date range.")
    else:
        st.caption(markdown_text(f"{len(hits)} pairs for “{query.strip()}” in {elapsed * 1000:.0f} ms"))
        grid, chart = st.columns([3, 2])
        with chart:
            st.plotly_chart(ui.score_chart(hits), key="score_chart", width="stretch")
        with grid:
            ui.results_grid(service, hits, key="text")
