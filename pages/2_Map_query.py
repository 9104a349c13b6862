"""Map query: click a tile (or draw a rectangle) to find similar changes and the sentences describing it."""

from __future__ import annotations

import streamlit as st
from streamlit_folium import st_folium

from textitsr import app_support as ui
from textitsr.escape import markdown_code
from textitsr.map_assets import missing_vendor_files

PICK_KEY = "map_pick"
EVENT_KEY = "map_last_event"

ui.page_setup("Map query")
st.title("Map query")
st.caption(
    "Click a tile of the archive, or draw a rectangle, to use that image pair as the query: "
    "the most similar pairs (pair → pair) and the sentences that describe it best (pair → text)."
)

service = ui.service_or_stop()
config = ui.load_config()
if missing_vendor_files():
    st.warning("Map assets are not installed (run `make assets`); the map needs internet to load Leaflet.")


@st.cache_data(show_spinner="Drawing the scenes on the map...", max_entries=4)
def overlay_urls(_service: object, archive_key: str, pair_ids: tuple[str, ...], when: str) -> dict[str, str]:
    """pair_id -> inline PNG of its before or after thumbnail (cached per archive and date)."""
    urls = {}
    for pid in pair_ids[: ui.MAX_OVERLAYS]:
        before, after = _service.catalog.thumbnails(pid)  # type: ignore[attr-defined]
        urls[pid] = ui.png_data_url(before if when == "before" else after, max_side=128)
    return urls


with st.sidebar:
    st.header("Map options")
    when = st.radio("Scenes shown", ["before", "after", "outlines only"], key="map_when", horizontal=True)
    k = st.slider("Similar pairs (k)", 1, 30, 8, key="map_k")
    n_sentences = st.slider("Sentences", 1, 15, 5, key="map_sentences")

footprints = service.catalog.footprints()
if not footprints["features"]:
    st.warning("No pair in this archive has a geographic footprint, so there is nothing to show on a map.")
    st.stop()
ids = tuple(f["properties"]["pair_id"] for f in footprints["features"])
clusters = ui.footprint_clusters(footprints)
with st.sidebar:
    areas = [f"Area {i}: {c.n_pairs} pairs" for i, c in enumerate(clusters, start=1)] + ["Whole archive"]
    area = st.selectbox("Go to", areas, key="map_area", help="Groups of neighbouring tiles, largest first.")
whole = area == "Whole archive"
view = None if whole else clusters[areas.index(area)].bounds
archive_key = service.archive_id

pick: ui.MapPick | None = st.session_state.get(PICK_KEY)
hits, sentences = [], []
if pick is not None:
    with ui.show_errors("Querying with the picked pair"):
        hits = service.search_pair(pick.pair_id, k=k)
        sentences = service.describe_pair(pick.pair_id, k=n_sentences)

map_col, list_col = st.columns([3, 2])
with map_col:
    overlays = None if when == "outlines only" else overlay_urls(service, archive_key, ids, when)
    fmap = ui.archive_map(
        footprints, overlays, query_id=pick.pair_id if pick else None,
        hits=[h.pair_id for h in hits], basemap=config.basemap, height=600,
        view=view, clusters=clusters if whole and len(clusters) > 1 else (),
    )
    event = st_folium(
        fmap, key="archive_map", height=600, use_container_width=True,
        returned_objects=["last_object_clicked", "last_clicked", "last_active_drawing"],
    )
    previous = st.session_state.get(EVENT_KEY)
    action = ui.new_map_action(event, previous)
    new_pick = ui.pick_query_pair(event, footprints, previous=previous)
    st.session_state[EVENT_KEY] = event
    if new_pick is not None and new_pick != pick:
        st.session_state[PICK_KEY] = new_pick
        st.rerun()
    elif action is not None and new_pick is None:
        st.info("That " + ("rectangle does not touch" if action == "rectangle" else "spot is outside")
                + " the archive's tiles: click inside a tile outline.")
    st.caption("Red: query pair · orange: similar pairs (hover for rank) · blue: other tiles.")

with list_col:
    if pick is None:
        st.info("Click a tile on the map (or draw a rectangle over one) to pick a query pair.")
        st.stop()
    how = "click on the map" if pick.how == "click" else "rectangle drawn on the map"
    st.subheader(f"Query pair {markdown_code(pick.pair_id)}")
    st.caption(f"picked by {how}")
    with ui.show_errors("Showing the query pair"):
        before, after = service.catalog.thumbnails(pick.pair_id)
        left, right = st.columns(2)
        left.image(before, caption="before", width="stretch")
        right.image(after, caption="after", width="stretch")
        if st.button("Inspect query pair", key="inspect-query"):
            ui.open_inspector(pick.pair_id)
    st.subheader("Sentences that describe it")
    ui.sentence_table(sentences)

st.subheader("Most similar pairs")
if hits:
    st.plotly_chart(ui.score_chart(hits, title="Similarity to the query pair"), key="map_scores",
                    width="stretch")
    ui.results_grid(service, hits, key="map", columns=3)
else:
    st.caption("No other pairs in the archive.")
