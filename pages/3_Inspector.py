"""Inspector: one pair large — before | after, swipe and blink views, difference, statistics, neighbours."""

from __future__ import annotations

import streamlit as st

from textitsr import app_support as ui
from textitsr.errors import TextITSRError
from textitsr.escape import markdown_text

ui.page_setup("Inspector")
st.title("Inspector")

service = ui.service_or_stop()

requested = st.session_state.get(ui.INSPECT_KEY) or st.query_params.get("pair")
if requested is None:
    features = service.catalog.footprints(limit=1)["features"]
    requested = features[0]["properties"]["pair_id"] if features else None
pair_id = st.text_input("Pair id", value=requested or "", key=f"inspector-id-{requested}",
                        help="Results on the search pages open here; or paste any pair id.").strip()
if not pair_id:
    st.info("Pick a result on the Text search or Map query page, or type a pair id.")
    st.stop()
if pair_id != requested:
    st.session_state[ui.INSPECT_KEY] = pair_id
st.query_params["pair"] = pair_id

try:
    record = service.catalog.pair(pair_id)
    before, after = service.catalog.thumbnails(pair_id)
except TextITSRError as err:
    st.error(markdown_text(f"Cannot show this pair: {err}"))
    st.stop()

dates = record.get("dates") or (None, None)
facts = [
    f"source **{markdown_text(record.get('source') or '?')}**",
    f"split **{markdown_text(record.get('split') or '—')}**",
    f"dates **{markdown_text(dates[0] or '?')} → {markdown_text(dates[1] or '?')}**",
]
if record.get("change_type"):
    facts.append(f"change type **{markdown_text(record['change_type'])}**")
if record.get("bounds"):
    w, s, e, n = record["bounds"]
    facts.append(f"footprint W {w:.4f} S {s:.4f} E {e:.4f} N {n:.4f}")
st.markdown(" · ".join(facts))

left, right = st.columns(2)
left.image(before, caption=markdown_text(f"before ({dates[0] or 'date unknown'})"), width=480)
right.image(after, caption=markdown_text(f"after ({dates[1] or 'date unknown'})"), width=480)

swipe_tab, blink_tab, diff_tab = st.tabs(["Swipe", "Blink", "Difference"])
with swipe_tab, ui.show_errors("Swipe view"):
    st.plotly_chart(ui.swipe_figure(before, after), key="swipe", width="stretch")
with blink_tab:
    shown = st.segmented_control("Show", ["before", "after"], default="before", key="blink")
    st.image(after if shown == "after" else before, caption=shown or "before", width=512)
with diff_tab, ui.show_errors("Difference heatmap"):
    st.plotly_chart(ui.difference_heatmap(before, after), key="diff", width="stretch")

stats_col, text_col = st.columns(2)
with stats_col:
    st.subheader("Spectral change statistics")
    with ui.show_errors("Change statistics"):
        stats = service.catalog.change_stats(pair_id)
        if stats:
            st.dataframe(ui.stats_frame_rows(stats), hide_index=True, width="stretch")
        else:
            st.caption("Not available: this imagery has no near-infrared/short-wave bands.")
    st.subheader("Captions")
    if record.get("captions"):
        for caption in record["captions"]:
            st.markdown(f"- {markdown_text(caption)}")
    else:
        st.caption("This pair has no captions.")
with text_col:
    st.subheader("Sentences that describe it best")
    with ui.show_errors("Describing the pair"):
        ui.sentence_table(service.describe_pair(pair_id, k=8))

st.subheader("Neighbours (most similar pairs)")
with ui.show_errors("Finding neighbours"):
    neighbours = service.search_pair(pair_id, k=6)
    if neighbours:
        ui.results_grid(service, neighbours, key="neighbours", columns=3)
    else:
        st.caption("No other pairs in the archive.")
