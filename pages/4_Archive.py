"""Archive: what is indexed (counts, sources, dates, footprints, model card), and adding a scene pair."""

from __future__ import annotations

import plotly.express as px
import streamlit as st
from streamlit_folium import st_folium

from textitsr.app import archive_writes, map_layers, maps, services, uploads, widgets
from textitsr.app.config import DEFAULT_TILE_SIZE, load_config
from textitsr.app.footprints import footprint_clusters
from textitsr.errors import InputError
from textitsr.escape import html_text, markdown_code

widgets.page_setup("Archive")
st.title("Archive")

service = services.service_or_stop()
config = load_config()
stats = service.stats()

widgets.archive_metrics(stats)

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
    with widgets.show_errors("Drawing the footprint map"):
        layers = map_layers.map_layers(config)
        footprints = layers.footprints
        if footprints["features"]:
            fmap = maps.ArchiveMap(basemap=config.basemap, height=420)
            fmap.add_scene_tiles(layers.areas, layers.tiles_url)
            fmap.add_footprints(footprints, url=layers.footprints_url)
            fmap.add_areas(layers.areas or footprint_clusters(footprints)).zoom_to_footprints(footprints)
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
st.subheader("Add GeoTIFF scenes (a pair or a series)")
st.caption(
    "GeoTIFF scenes of one place at two or more dates are tiled and paired (consecutive dates), "
    "embedded with the "
    f"archive's model and appended to the archive. Paths must lie inside: "
    f"{', '.join(markdown_code(r) for r in config.data_roots)}. "
    f"Uploads are limited to {config.max_upload_mb} MB a file."
)
base = services.get_base_service(config)  # scenes always go into the base archive
if base is not service:
    st.caption("Scenes are added to the base archive; update the model on the Annotate page afterwards "
               "to search them with the fine-tuned model.")
store_tile = base.tile_size()
tile_size = st.number_input(
    "Tile size (px)", min_value=8, max_value=4096, value=store_tile or DEFAULT_TILE_SIZE, step=16,
    key="tile_size",
    help=(f"The archive's pairs are {store_tile} px tiles. " if store_tile else "")
    + "Each scene is cut into squares of this size; a scene smaller than one tile is refused.",
)


def _add(paths: list, place: str | None = None) -> None:
    bar = st.progress(0.0, text="Tiling and embedding...")

    def progress(fraction: float, message: str) -> None:
        bar.progress(min(max(float(fraction), 0.0), 1.0), text=message or "Embedding...")

    options = {"place": place} if place else {}
    added = archive_writes.add_scenes(base, paths, progress=progress, tile_size=int(tile_size), **options)
    bar.progress(1.0, text="Done")
    st.cache_data.clear()
    if added:
        st.success(f"Added {widgets.plural(added, 'pair')} of {int(tile_size)} px to the archive "
                   f"(now {len(base):,}).")
    else:
        st.info("These scenes are already in the archive; nothing was added.")


path_tab, upload_tab = st.tabs(["From paths", "Upload"])
with path_tab, st.form("add_by_path"):
    typed = st.text_area("GeoTIFF scenes of one place, one path a line (two or more dates)",
                         key="scene_paths")
    if st.form_submit_button("Add scenes"):
        with widgets.show_errors("Adding the scenes"):
            lines = [line for line in typed.splitlines() if line.strip()]
            if len(lines) < 2:
                raise InputError("scene paths: expected two or more GeoTIFF scenes of one place, one a line")
            _add([uploads.check_scene_path(line, config.data_roots) for line in lines])
with upload_tab, st.form("add_by_upload", clear_on_submit=True):
    chosen = st.file_uploader("GeoTIFF scenes of one place (two or more dates)", type=["tif", "tiff"],
                              key="scene_uploads", accept_multiple_files=True,
                              max_upload_size=config.max_upload_mb)
    if st.form_submit_button("Upload and add"):
        with widgets.show_errors("Adding the uploaded scenes"):
            if len(chosen or []) < 2:
                raise InputError("upload: choose two or more GeoTIFF scenes of one place (a series)")
            files = [(f.name, f.getvalue()) for f in chosen]
            for name, data in files:  # everything is checked before anything is written
                uploads.validate_upload(name, data, config.max_upload_bytes)
            archive_writes.refuse_known_uploads(base, files)
            with uploads.stored_uploads(files, config.upload_dir) as paths:  # removed again on failure
                _add(paths, place=uploads.place_name([name for name, _ in files]))
