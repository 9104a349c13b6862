"""Text search: describe a change, get the archive's best-matching image pairs with their scores."""

from __future__ import annotations

import time

import streamlit as st
from streamlit_folium import st_folium

from textitsr.app import exports, figures, filters, map_events, map_layers, maps, services, url_state, widgets
from textitsr.app.config import EXAMPLE_QUERIES, load_config
from textitsr.app.footprints import footprint_clusters
from textitsr.escape import markdown_text

widgets.page_setup("Text search")
st.title("Text search")
st.caption("Describe the change you are looking for; the archive's image pairs are ranked by similarity.")

service = services.service_or_stop()
stats = service.stats()
config = load_config()

#: What a link to this page keeps: the query and the filters (a reload or a shared link shows the same).
URL_FIELDS = (
    url_state.UrlField.text("query", "q"), url_state.UrlField.integer("k", "k"),
    url_state.UrlField.names("sources", "sources"), url_state.UrlField.flag("use_dates", "dated"),
    url_state.UrlField.date_range("date_range", "dates"), url_state.UrlField.flag("where_map", "where"),
)
url_state.restore("text-search", URL_FIELDS)
max_k = max(1, min(50, stats.n_pairs))
st.session_state["k"] = min(max(int(st.session_state.get("k", min(10, max_k))), 1), max_k)
st.session_state["sources"] = [s for s in st.session_state.get("sources", []) if s in stats.sources]


def _use_example(text: str) -> None:
    st.session_state["query"] = text


st.text_input(
    "Describe the change",
    key="query",
    placeholder="e.g. many new buildings were built along a new road",
    help="Press Enter to search.",
)
st.caption("Examples:")
widgets.example_buttons(EXAMPLE_QUERIES, _use_example)

# ------------------------------------------------------------------------------ filters
with st.sidebar:
    st.header("Search options")
    k = st.slider("Results (k)", min_value=1, max_value=max_k, key="k")
    area_mode = st.radio("Area", ["Whole archive", "Coordinates", "Draw on map"], key="area_mode")
    first, last = filters.parse_iso_date(stats.date_range[0]), filters.parse_iso_date(stats.date_range[1])
    use_dates = st.checkbox("Limit dates", key="use_dates", disabled=first is None)
    date_range = None
    if use_dates and first and last:
        st.session_state.setdefault("date_range", (first, last))
        date_range = st.date_input("Both dates of a pair within", key="date_range")
    sources = st.multiselect("Sources", sorted(stats.sources), key="sources",
                             help="Empty: all sources.") if len(stats.sources) > 1 else None
    where = st.toggle("Where-map", key="where_map", disabled=stats.bounds is None,
                      help="Colour the archive's tiles by how well they match the description: where "
                           "does this change happen?")
    dates = service.acquisition_dates()
    with st.expander(f"Acquisition dates ({len(dates)})"):
        st.caption(markdown_text(widgets.date_summary(dates, shown=50)) if dates
                   else "The archive records no dates.")

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
        layers = map_layers.map_layers(config)
        footprints = layers.footprints
        fmap = maps.ArchiveMap(basemap=config.basemap, height=360)
        fmap.add_scene_tiles(layers.areas, layers.tiles_url, switch=False)
        fmap.add_footprints(footprints, url=layers.footprints_url)
        fmap.add_areas(layers.areas or footprint_clusters(footprints)).add_rectangle_tool()
        fmap.zoom_to_footprints(footprints).stable_ids()
        event = st_folium(fmap, key="filter_map", height=360, use_container_width=True,
                          returned_objects=["last_active_drawing"])
        drawn = map_events.drawn_box(event or {})
        if drawn is not None:
            st.session_state["filter_bbox"] = drawn
        bbox = st.session_state.get("filter_bbox")
        st.caption(f"Area: {', '.join(f'{v:.4f}' for v in bbox)}" if bbox else "No rectangle drawn yet.")

# ------------------------------------------------------------------------------ results
url_state.publish(URL_FIELDS)
query = st.session_state.get("query", "")
if not query.strip():
    st.info("Type a description of a change (or click an example) to search the archive.")
    st.stop()

with widgets.show_errors("Search"):
    search_filters = filters.make_filters(bbox=bbox, date_range=date_range or None, sources=sources or None)
    started = time.perf_counter()
    hits = service.search_text(query, k=k, filters=search_filters)
    elapsed = time.perf_counter() - started
    if not hits:
        st.warning("No image pairs match these filters. Widen the area or the date range.")
        st.stop()
    found = widgets.plural(len(hits), "pair")
    st.caption(markdown_text(f"{found} for “{widgets.shorten(query)}” in {elapsed * 1000:.0f} ms"))
    # One slot whether or not there is a notice: a notice coming or going must not move the results
    # below it, or Streamlit mounts the chart, the map and every card afresh.
    notice = st.empty()
    if service.is_weak_match(query, hits[0].score):
        notice.warning(
            "Nothing in the archive matches this description well: its best pair stands out from the "
            "rest of the archive less than for nearly every description the archive holds. These are "
            "the closest pairs anyway.",
            icon=":material/help:",
        )
    if where:
        st.subheader("Where it happens")
        st.caption(f"The {widgets.WHERE_MAP_TILES:,} best-matching tiles, hottest in red; the results "
                   "numbered by rank on top.")
        widgets.where_map(service.score_map(query, filters=search_filters, limit=widgets.WHERE_MAP_TILES),
                          map_layers.map_layers(config), top=len(hits), basemap=config.basemap)
    grid, side = st.columns([3, 2])
    # The cards first: their images are then asked for before the results map's tiles (a browser
    # fetches a few files at a time from one server), and the chart and map follow.
    with grid:
        widgets.results_grid(service, hits, key="text")
    with side:
        st.plotly_chart(figures.score_chart(hits), key="score_chart", width="stretch")
        widgets.results_map(hits, map_layers.map_layers(config), basemap=config.basemap)
        # One under the other: side by side, the side column of a laptop-wide page clipped their text.
        st.download_button("Export CSV", exports.hits_csv(hits, query, search_filters),
                           "textitsr-results.csv", "text/csv",
                           key="export-csv", width="stretch", icon=":material/download:")
        st.download_button("Export GeoJSON", exports.hits_geojson(hits, query, search_filters),
                           "textitsr-results.geojson",
                           "application/geo+json", key="export-geojson", width="stretch",
                           icon=":material/download:")
        st.download_button("Export GeoParquet", exports.hits_geoparquet(service, hits, query),
                           "textitsr-results.parquet", "application/vnd.apache.parquet",
                           key="export-geoparquet", width="stretch", icon=":material/download:")
