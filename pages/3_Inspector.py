"""Inspector: one pair large — before | after, swipe/blink (run in the browser), difference, statistics,
neighbours."""

from __future__ import annotations

import streamlit as st

from textitsr.app import compare, figures, services, widgets
from textitsr.app.config import load_config
from textitsr.errors import TextITSRError
from textitsr.escape import markdown_text

widgets.page_setup("Inspector")
st.title("Inspector")

service = services.service_or_stop()

first = service.catalog.footprints(limit=1)["features"]
pair_id = widgets.inspector_pair_box(default=first[0]["properties"]["pair_id"] if first else None)
if not pair_id:
    st.info("Pick a result on the Text search or Map query page, or type a pair id.")
    st.stop()

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

left, right, where = st.columns([2, 2, 1.4])
left.image(before, caption=markdown_text(f"before ({dates[0] or 'date unknown'})"), width="stretch")
right.image(after, caption=markdown_text(f"after ({dates[1] or 'date unknown'})"), width="stretch")
with where:
    if record.get("bounds"):
        config = load_config()
        widgets.footprint_minimap(record["bounds"], pair_id, services.map_layers(config),
                                  basemap=config.basemap)
    else:
        st.caption("This pair has no geographic footprint.")

compare_tab, diff_tab = st.tabs(["Swipe / blink", "Difference"])
with compare_tab, widgets.show_errors("Swipe/blink view"):
    compare.before_after_viewer(before, after, (f"before {dates[0] or ''}".strip(),
                                                f"after {dates[1] or ''}".strip()))
with diff_tab, widgets.show_errors("Difference heatmap"):
    st.plotly_chart(figures.difference_heatmap(before, after), key="diff", width="stretch")

stats_col, text_col = st.columns(2)
with stats_col:
    st.subheader("Spectral change statistics")
    with widgets.show_errors("Change statistics"):
        stats = service.catalog.change_stats(pair_id)
        if stats:
            st.table([{**row, "value": f"{row['value']:.3f}"} for row in figures.stats_frame_rows(stats)],
                     hide_index=True)
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
    with widgets.show_errors("Describing the pair"):
        widgets.sentence_table(service.describe_pair(pair_id, k=8))

st.subheader("Neighbours (most similar pairs)")
with widgets.show_errors("Finding neighbours"):
    neighbours = service.search_pair(pair_id, k=6)
    if neighbours:
        widgets.results_grid(service, neighbours, key="neighbours", columns=3)
    else:
        st.caption("No other pairs in the archive.")
