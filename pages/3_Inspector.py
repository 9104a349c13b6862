"""Inspector: one pair large — before | after, swipe/blink (run in the browser), difference, statistics,
neighbours."""

from __future__ import annotations

import streamlit as st

from textitsr.app import figures, inspector, map_layers, services, thumbnails, widgets
from textitsr.app.config import load_config
from textitsr.errors import TextITSRError
from textitsr.escape import markdown_text

widgets.page_setup("Inspector")
st.title("Inspector")

service = services.service_or_stop()

pair_id = widgets.inspector_pair_box(default=lambda: inspector.first_pair_id(service))
if not pair_id:
    st.info("Pick a result on the Text search or Map query page, or type a pair id.")
    st.stop()

try:
    record = service.pair(pair_id)
    jpegs = thumbnails.thumbnail_jpegs(service, pair_id)
except TextITSRError as err:
    st.error(markdown_text(f"Cannot show this pair: {err}"))
    st.stop()

st.markdown(inspector.facts_line(record))
if stac := inspector.stac_line(record):
    st.caption(stac)
captions = inspector.image_captions(record)
left, right, where = st.columns([2, 2, 1.4])
left.image(jpegs[0], caption=markdown_text(captions[0]), width="stretch")
right.image(jpegs[1], caption=markdown_text(captions[1]), width="stretch")
minimap = where.container()  # filled last: its map loads in the browser after the rest is shown

inspector.pair_views(service, pair_id, jpegs, inspector.date_labels(record))

stats_col, text_col = st.columns(2)
with stats_col:
    st.subheader("Spectral change statistics")
    with widgets.show_errors("Change statistics"):
        stats = service.change_stats(pair_id)
        if stats:
            st.table([{**row, "value": f"{row['value']:.3f}"} for row in figures.stats_frame_rows(stats)],
                     hide_index=True)
        if not stats or "ndvi_delta" not in stats:
            st.caption("Spectral indices not available: this imagery has no near-infrared/short-wave bands.")
    st.subheader("Captions")
    if record.get("captions"):  # one list in one element: fewer messages and nodes for the browser
        st.markdown("\n".join(f"- {markdown_text(caption)}" for caption in record["captions"]))
    else:
        st.caption("This pair has no captions.")
with text_col:
    reading = service.change_reading(pair_id)
    if reading:  # models with a change-type probe, not fine-tuned since
        st.subheader("What changed, as the model reads it")
        st.table(inspector.reading_rows(reading), hide_index=True)
    st.subheader("Sentences that describe it best")
    with widgets.show_errors("Describing the pair"):
        widgets.sentence_table(service.describe_pair(pair_id, k=8))

st.subheader("Neighbours (most similar pairs)")
with widgets.show_errors("Finding neighbours"):
    neighbours = service.search_pair(pair_id, k=6)
    if neighbours:
        widgets.results_grid(service, neighbours, key="neighbours", columns=3)
    else:
        st.caption("No other pairs in the archive.")

with minimap:
    if record.get("bounds"):
        config = load_config()
        widgets.footprint_minimap(record["bounds"], pair_id, map_layers.map_layers(config),
                                  basemap=config.basemap)
    else:
        st.caption("This pair has no geographic footprint.")
