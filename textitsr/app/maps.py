"""`ArchiveMap`: the Leaflet map of an archive (leafmap's folium backend), built from small add_* steps.

One bbox convention: (west, south, east, north) in degrees, as `zoom_to_bounds` takes it. What
changes with every query (the query pair and its similar pairs) is a separate `picks_layer`, handed
to st_folium as `feature_group_to_add`, so the map itself stays the same between reruns.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import folium
import leafmap.foliumap as leafmap
from folium import plugins

from textitsr.app.footprints import Bounds, Cluster, feature_bounds, footprints_bounds
from textitsr.map_assets import use_local_map_assets

#: Most scene overlays drawn on one map (each is an inline PNG; beyond this only outlines).
MAX_OVERLAYS = 400

FOOTPRINT_STYLE = {"color": "#2b6cb0", "weight": 1.5, "fillOpacity": 0.0}
QUERY_STYLE = {"color": "#e53e3e", "weight": 4, "fillOpacity": 0.0}
HIT_STYLE = {"color": "#f6ad55", "weight": 3, "fillOpacity": 0.0}
RANK_CSS = (".textitsr-rank{background:#f6ad55;color:#1a202c;border:1px solid #744210;border-radius:11px;"
            "width:22px;height:22px;line-height:20px;text-align:center;font:bold 12px sans-serif}")


def _labelled(footprints: Mapping[str, Any]) -> dict[str, Any]:
    """Footprints with a readable `dates` property for tooltips."""
    feats = []
    for feat in footprints.get("features", []):
        props = dict(feat.get("properties") or {})
        dates = props.get("dates") or (props.get("date_before"), props.get("date_after"))
        props["dates"] = " → ".join(str(d) for d in dates if d) or "?"
        feats.append({**feat, "properties": props})
    return {"type": "FeatureCollection", "features": feats}


class ArchiveMap(leafmap.Map):
    """An archive's map: basemap (or none, offline), then whichever add_* layers a page wants."""

    def __init__(self, *, basemap: str = "osm", height: int = 560) -> None:
        use_local_map_assets()
        super().__init__(
            location=[0.0, 0.0],
            zoom_start=12,
            tiles="OpenStreetMap" if basemap == "osm" else None,
            draw_control=False,
            fullscreen_control=False,
            layers_control=False,
            height=height,
        )
        plugins.Fullscreen().add_to(self)
        self.get_root().header.add_child(folium.Element(f"<style>{RANK_CSS}</style>"))

    def add_footprints(self, footprints: Mapping[str, Any], *, name: str = "footprints") -> ArchiveMap:
        """Every pair's outline, with its id and dates on hover."""
        folium.GeoJson(
            _labelled(footprints),
            name=name,
            style_function=lambda _f: FOOTPRINT_STYLE,
            highlight_function=lambda _f: {"weight": 4, "color": "#805ad5"},
            tooltip=folium.GeoJsonTooltip(fields=["pair_id", "dates"], aliases=["pair", "dates"]),
        ).add_to(self)
        return self

    def add_overlays(self, overlays: Mapping[str, str], footprints: Mapping[str, Any]) -> ArchiveMap:
        """Images (URLs) drawn in their pair's footprint: pair_id -> URL, at most MAX_OVERLAYS."""
        boxes = feature_bounds(footprints)
        scenes = folium.FeatureGroup(name="scenes", show=True)
        for pid, url in list(overlays.items())[:MAX_OVERLAYS]:
            if pid in boxes:
                w, s, e, n = boxes[pid]
                folium.raster_layers.ImageOverlay(
                    url, bounds=[[s, w], [n, e]], opacity=1.0, interactive=False, zindex=1
                ).add_to(scenes)
        scenes.add_to(self)
        return self

    def add_areas(self, clusters: Sequence[Cluster]) -> ArchiveMap:
        """A labelled dot per area, so areas stay visible when zoomed out (none for a single area)."""
        if len(clusters) < 2:
            return self
        for i, cluster in enumerate(clusters, start=1):
            folium.CircleMarker(
                location=list(cluster.center), radius=7, color="#2b6cb0", fill=True, fill_opacity=0.25,
                weight=1, tooltip=f"Area {i}: {cluster.n_pairs} pairs", interactive=True,
            ).add_to(self)
        return self

    def add_rectangle_tool(self) -> ArchiveMap:
        """Leaflet-draw with only the rectangle tool."""
        plugins.Draw(
            export=False,
            draw_options={
                "polyline": False, "polygon": False, "circle": False,
                "marker": False, "circlemarker": False, "rectangle": True,
            },
            edit_options={"edit": False, "remove": True},
        ).add_to(self)
        return self

    def zoom_to_footprints(self, footprints: Mapping[str, Any], view: Bounds | None = None) -> ArchiveMap:
        """Open on `view`, else on all footprints."""
        self.zoom_to_bounds(view or footprints_bounds(footprints) or (-1.0, -1.0, 1.0, 1.0))
        return self


def picks_layer(
    footprints: Mapping[str, Any], query_id: str | None, hits: Sequence[str]
) -> folium.FeatureGroup:
    """The query pair outlined red and its similar pairs orange, numbered by rank (one layer)."""
    boxes = feature_bounds(footprints)
    layer = folium.FeatureGroup(name="query")
    for rank, pid in enumerate(hits, start=1):
        if pid in boxes:
            label = html.escape(f"#{rank} {pid}")
            _outline(boxes[pid], HIT_STYLE, label).add_to(layer)
            w, s, e, n = boxes[pid]
            folium.Marker(
                [(s + n) / 2, (w + e) / 2],
                icon=folium.DivIcon(html=f'<div class="textitsr-rank">{rank}</div>', icon_size=(22, 22),
                                    icon_anchor=(11, 11)),
                tooltip=label,
            ).add_to(layer)
    if query_id is not None and query_id in boxes:
        _outline(boxes[query_id], QUERY_STYLE, html.escape(f"query {query_id}")).add_to(layer)
    return layer


def _outline(box: Bounds, style: Mapping[str, Any], tooltip: str) -> folium.Rectangle:
    w, s, e, n = box
    return folium.Rectangle([[s, w], [n, e]], color=style["color"], weight=style["weight"], fill=False,
                            tooltip=tooltip, interactive=False)
