"""Archive: what is indexed (counts, sources, dates, footprints, model card), and adding a scene pair."""

from __future__ import annotations

import plotly.express as px
import streamlit as st
from streamlit_folium import st_folium

from textitsr import app_support as ui
from textitsr.escape import html_text, markdown_code

ui.page_setup("Archive")
st.title("Archive")

service = ui.service_or_stop()
config = ui.load_config()
stats = service.catalog.stats()

ui.archive_metrics(stats)

src_col, split_col = st.columns(2)
with src_col:
    fig = px.bar(x=[html_text(s) for s in stats.sources], y=list(stats.sources.values()),
                 labels={"x": "source", "y": "pairs"}, title="Pairs per source")
    st.plotly_chart(fig, key="sources", width="stretch")
with split_col:
    fig = px.bar(x=[html_text(s) for s in stats.splits], y=list(stats.splits.values()),
                 labels={"x": "split", "y": "pairs"}, title="Pairs per split")
    st.plotly_chart(fig, key="splits", width="stretch")

map_col, card_col = st.columns([3, 2])
with map_col:
    st.subheader("Footprints")
    with ui.show_errors("Drawing the footprint map"):
        footprints = service.catalog.footprints()
        if footprints["features"]:
            clusters = ui.footprint_clusters(footprints)
            fmap = ui.archive_map(footprints, basemap=config.basemap, draw=False, height=420,
                                  clusters=clusters if len(clusters) > 1 else ())
            st_folium(fmap, key="archive_footprints", height=420, use_container_width=True,
                      returned_objects=[])
        else:
            st.caption("No pair has a geographic footprint.")
    if stats.bounds:
        w, s, e, n = stats.bounds
        st.caption(f"Extent: W {w:.4f} S {s:.4f} E {e:.4f} N {n:.4f}")
with card_col:
    st.subheader("Model card")
    card = dict(stats.model)
    summary = {k: card.pop(k) for k in ("checkpoint_id", "embed_dim", "index", "store") if k in card}
    rows = [{"field": k, "value": str(v)} for k, v in summary.items()]
    st.dataframe(rows, hide_index=True, width="stretch")
    st.json(card, expanded=1)

# ---------------------------------------------------------------------------- add scenes
st.subheader("Add a GeoTIFF scene pair")
st.caption(
    "Two GeoTIFF scenes of the same place at two dates are tiled into pairs, embedded with the "
    f"archive's model and appended to the archive. Paths must lie inside: "
    f"{', '.join(markdown_code(r) for r in config.data_roots)}. "
    f"Uploads are limited to {config.max_upload_mb} MB a file."
)
base = ui.get_base_service(config)  # scenes always go into the base archive
if base is not service:
    st.caption("Scenes are added to the base archive; update the model on the Annotate page afterwards "
               "to search them with the fine-tuned model.")
store_tile = base.catalog.tile_size()
tile_size = st.number_input(
    "Tile size (px)", min_value=8, max_value=4096, value=store_tile or ui.DEFAULT_TILE_SIZE, step=16,
    key="tile_size",
    help=(f"The archive's pairs are {store_tile} px tiles. " if store_tile else "")
    + "Each scene is cut into squares of this size; a scene smaller than one tile is refused.",
)


def _add(paths: list) -> None:
    bar = st.progress(0.0, text="Tiling and embedding...")

    def progress(fraction: float, message: str) -> None:
        bar.progress(min(max(float(fraction), 0.0), 1.0), text=message or "Embedding...")

    added = ui.add_scenes(base, paths, progress=progress, tile_size=int(tile_size))
    bar.progress(1.0, text="Done")
    st.cache_data.clear()
    if added:
        st.success(f"Added {added} pairs of {int(tile_size)} px to the archive (now {len(base):,}).")
    else:
        st.info("These scenes are already in the archive; nothing was added.")


path_tab, upload_tab = st.tabs(["From a path", "Upload"])
with path_tab, st.form("add_by_path"):
    before_text = st.text_input("Before scene (GeoTIFF path)", key="before_path")
    after_text = st.text_input("After scene (GeoTIFF path)", key="after_path")
    if st.form_submit_button("Add scene pair"):
        with ui.show_errors("Adding the scenes"):
            paths = [ui.check_scene_path(before_text, config.data_roots),
                     ui.check_scene_path(after_text, config.data_roots)]
            _add(paths)
with upload_tab, st.form("add_by_upload", clear_on_submit=True):
    before_file = st.file_uploader("Before scene", type=["tif", "tiff"], key="before_upload",
                                   max_upload_size=config.max_upload_mb)
    after_file = st.file_uploader("After scene", type=["tif", "tiff"], key="after_upload",
                                  max_upload_size=config.max_upload_mb)
    if st.form_submit_button("Upload and add"):
        with ui.show_errors("Adding the uploaded scenes"):
            if before_file is None or after_file is None:
                raise ui.InputError("upload: choose both a before and an after GeoTIFF scene")
            files = [(f.name, f.getvalue()) for f in (before_file, after_file)]
            for name, data in files:  # everything is checked before anything is written
                ui.validate_upload(name, data, config.max_upload_bytes)
            stamp = ui.upload_stamp()
            paths = [ui.store_upload(f"{when}-{name}", data, config.upload_dir, stamp)
                     for when, (name, data) in zip(("before", "after"), files, strict=True)]
            _add(paths)
