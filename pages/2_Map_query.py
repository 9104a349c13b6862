"""Map query: click a tile (or draw a rectangle) to find similar changes and the sentences describing it."""

from __future__ import annotations

import streamlit as st

from textitsr.app import archive_writes, figures, map_events, map_layers, map_widget, maps, services, widgets
from textitsr.app.config import load_config
from textitsr.app.footprints import footprint_clusters
from textitsr.app.map_assets import missing_vendor_files
from textitsr.escape import markdown_code

PICK_KEY = "map_pick"
LINK_KEY = "map_link_opened"
EVENT_KEY = "map_last_event"
MAP_KEY = "archive_map"

widgets.page_setup("Map query")
st.title("Map query")
st.caption(
    "Click a tile of the archive, or draw a rectangle, to use that image pair as the query: "
    "the most similar pairs (pair → pair) and the sentences that describe it best (pair → text)."
)

service = services.service_or_stop()
config = load_config()
if missing_vendor_files():
    st.warning("Map assets are not installed (run `make assets`); the map needs internet to load Leaflet.")

# A link to this page (`?pair=ID&before=DATE&after=DATE&elsewhere=0|1`) opens that query once per session.
linked = map_events.linked_query(st.query_params.to_dict(), service.has_pair)
if linked is not None and not st.session_state.get(LINK_KEY):
    st.session_state[PICK_KEY] = map_events.MapPick(linked.pair_id, "link")
    st.session_state["map_elsewhere"] = linked.elsewhere
st.session_state[LINK_KEY] = True

st.session_state.setdefault("map_elsewhere", True)
with st.sidebar:
    st.header("Map options")
    k = st.slider("Similar pairs (k)", 1, 30, 8, key="map_k")
    n_sentences = st.slider("Sentences", 1, 15, 5, key="map_sentences")
    elsewhere = st.toggle("Elsewhere only", key="map_elsewhere",
                          help="Leave out every pair that shares ground with the query: the same place at "
                               "other dates would otherwise fill the results.")

layers = map_layers.map_layers(config)
footprints = layers.footprints
if not footprints["features"]:
    st.warning("No pair in this archive has a geographic footprint, so there is nothing to show on a map.")
    st.stop()
if any(a.before is None or a.after is None for a in layers.areas):
    st.info("Some scenes have no map tiles yet, so only their outlines show.")
    if st.button("Write the missing map tiles", key="write-tiles"):
        bar = st.progress(0.0, text="Writing map tiles...")
        with widgets.show_errors("Writing map tiles"):
            archive_writes.write_tiles(services.get_base_service(config),
                                 lambda f, m: bar.progress(min(max(f, 0.0), 1.0), m))
            map_layers.clear_map_cache()
            st.rerun()
areas = layers.areas or footprint_clusters(footprints)
with st.sidebar:
    names = [f"{getattr(a, 'name', '') or f'Area {i}'} ({widgets.plural(a.n_pairs, 'pair')})"
             for i, a in enumerate(areas, start=1)]
    area = st.selectbox("Go to", [*names, "Whole archive"], key="map_area",
                        help="The archive's scenes, largest first.")
view = None if area == "Whole archive" else areas[names.index(area)].bounds


def _on_map_event() -> None:
    """A click or rectangle on the map: pick the query pair before the page runs (one run per click)."""
    event = st.session_state.get(MAP_KEY) or {}
    previous = st.session_state.get(EVENT_KEY)
    st.session_state[EVENT_KEY] = event
    pick = map_events.pick_query_pair(event, footprints, previous=previous)
    if pick is not None:
        st.session_state[PICK_KEY] = pick
    else:
        action = map_events.new_map_action(event, previous)
        st.session_state["map_missed"] = action


pick: map_events.MapPick | None = st.session_state.get(PICK_KEY)
hits, sentences, query, history = [], [], None, []
if pick is not None:
    with widgets.show_errors("Querying with the picked pair"):
        query = service.pair_query(pick.pair_id)
        place_dates = service.place_dates(pick.pair_id)
        wanted = (linked.dates if linked is not None and linked.pair_id == pick.pair_id and linked.dates
                  else query.dates)
        if len(place_dates) > 2:
            with st.sidebar:
                st.header("Query dates")
                st.caption("The dates the archive holds at the picked place: compare any two of them.")
                before_date = st.selectbox("Before", place_dates[:-1], key=f"map_before:{pick.pair_id}",
                                           index=widgets.index_of(place_dates[:-1], wanted[0]))
                later = [d for d in place_dates if d > before_date]
                after_date = st.selectbox("After", later, key=f"map_after:{pick.pair_id}",
                                          index=widgets.index_of(later, wanted[1], len(later) - 1))
            query = service.pair_at_dates(pick.pair_id, before_date, after_date)
        st.query_params.update(map_events.query_link(pick.pair_id, query.dates, elsewhere))
        if query.pair_id is not None:
            hits = service.search_pair(query.pair_id, k=k, elsewhere=elsewhere)
            sentences = service.describe_pair(query.pair_id, k=n_sentences)
        else:
            hits = service.search_pair(before=query.before, after=query.after, k=k, elsewhere=elsewhere,
                                       query_bounds=query.bounds)
            sentences = service.describe_pair(before=query.before, after=query.after, k=n_sentences)
        history = (service.place_history(query.pair_id) if query.pair_id else
                   service.place_history(pick.pair_id, before=query.before, after=query.after))

# Dates chosen other than the picked pair's: the map shows that place's imagery at those dates.
imagery = None
if query is not None and pick is not None and query.pair_id != pick.pair_id and query.dates[0]:
    place = service.place_imagery(pick.pair_id, *query.dates)
    if place is not None:
        imagery, view = [place], maps.padded(place.bounds, 1.0)
map_col, list_col = st.columns([3, 2])
with map_col:
    map_widget.show_map(
        ("map-query", layers.signature, view, config.basemap,
         tuple((a.before.key if a.before else "", a.after.key if a.after else "") for a in imagery or ())),
        lambda: maps.archive_map(layers, areas if view is None else (), view, basemap=config.basemap,
                                 height=600, imagery=imagery),
        key=MAP_KEY, height=600, on_change=_on_map_event,
        picks=maps.picks_layer(layers.boxes, pick.pair_id if pick else None, [h.pair_id for h in hits]),
        returned_objects=["last_object_clicked", "last_clicked", "last_active_drawing"],
    )
    missed = st.session_state.pop("map_missed", None)
    if missed is not None:
        st.info("That " + ("rectangle does not touch" if missed == "rectangle" else "spot is outside")
                + " the archive's tiles: click inside a tile outline.")
    st.caption("Red: query pair · orange, numbered: similar pairs by rank · blue: other tiles. "
               "Switch before/after imagery at the top right of the map."
               + (f" The imagery is the picked place on {query.dates[0]} (before) and "
                  f"{query.dates[1]} (after)." if imagery else ""))

with list_col:
    if pick is None:
        st.info("Click a tile on the map (or draw a rectangle over one) to pick a query pair.")
        st.stop()
    how = {"click": "click on the map", "rectangle": "rectangle drawn on the map"}.get(pick.how, "link")
    if query is None:
        st.stop()
    shown = query.pair_id or pick.pair_id
    st.subheader(f"Query pair {markdown_code(shown)}" if query.pair_id else
                 f"Query: {markdown_code(pick.pair_id)}'s place, {query.dates[0]} → {query.dates[1]}")
    captions = (query.dates[0] or "before", query.dates[1] or "after")
    st.caption(f"picked by {how}" + ("" if query.pair_id else
               " · the archive does not pair these two dates: their images are compared directly"))
    with widgets.show_errors("Showing the query pair"):
        if query.pair_id:
            widgets.before_after(service, query.pair_id, captions=captions)
        else:
            widgets.before_after_images(query.before, query.after, captions)
        st.button("Inspect query pair", key="inspect-query", on_click=widgets.request_inspector,
                  args=(shown,))
    st.subheader("Sentences that describe it")
    widgets.sentence_table(sentences)

if len(history) > 1:
    st.subheader("This place over time")
    st.caption("Every pair of the picked place in date order, scored against the query: the highest "
               "says when this change happened.")
    st.plotly_chart(figures.place_timeline(history), key="map_timeline", width="stretch")

st.subheader("Most similar pairs" + (" elsewhere" if elsewhere else ""))
if hits:
    st.plotly_chart(figures.score_chart(hits, title="Similarity to the query pair"), key="map_scores",
                    width="stretch")
    widgets.results_grid(service, hits, key="map", columns=3)
else:
    st.caption("No other pairs in the archive.")
