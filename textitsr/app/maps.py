"""`ArchiveMap`: the Leaflet map of an archive (folium), built from small add_* steps.

One bbox convention: (west, south, east, north) in degrees, as `zoom_to_bounds` takes it. What
changes with every query (the query pair and its similar pairs) is a separate `picks_layer`, handed
to st_folium as `feature_group_to_add`, so the map itself stays the same between reruns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import folium
import leafmap.foliumap as leafmap
import numpy as np
import xyzservices
from folium import plugins

from textitsr.app.footprints import Bounds, Cluster, feature_bounds, footprints_bounds, union
from textitsr.app.map_assets import use_local_map_assets
from textitsr.escape import html_text

if TYPE_CHECKING:  # pragma: no cover - typing only
    from textitsr.index.tiles import SceneArea
    from textitsr.service import PairHit, ScoreMap

#: Most scene overlays drawn on one map (each is an inline PNG; beyond this only outlines).
MAX_OVERLAYS = 400

#: Deepest zoom the maps allow (imagery past a scene's native zoom is shown enlarged).
MAX_MAP_ZOOM = 22
#: Scene tiles are drawn down to this many zoom levels below their coarsest (each level halves
#: them). Further out Leaflet would cover the whole view with the scene's native-zoom grid: a
#: continent-wide view of a 1 km scene is a billion tile slots, and the page freezes.
SCENE_ZOOM_OUT_LEVELS = 3
FOOTPRINT_STYLE = {"color": "#2b6cb0", "weight": 1.5, "fillOpacity": 0.0}
QUERY_STYLE = {"color": "#e53e3e", "weight": 4, "fillOpacity": 0.0}
HIT_STYLE = {"color": "#f6ad55", "weight": 3, "fillOpacity": 0.0}
RANK_CSS = (".textitsr-rank{background:#f6ad55;color:#1a202c;border:1px solid #744210;border-radius:11px;"
            "width:22px;height:22px;line-height:20px;text-align:center;font:bold 12px sans-serif}")


SCENE_ATTRIBUTION = "textitsr scenes"


@dataclass(frozen=True)
class MapLayers:
    """What the maps draw for the base archive: its areas, and where the browser fetches imagery
    tiles and footprints (Streamlit static serving)."""

    areas: list[SceneArea]
    tiles_url: str
    footprints_url: str
    #: Every pair's footprint (GeoJSON FeatureCollection, as `Catalog.footprints()` returns it) and
    #: pair_id -> (W, S, E, N): built once per archive state, not on every rerun (shared: read only).
    footprints: dict[str, Any]
    boxes: dict[str, Bounds]

    @property
    def signature(self) -> tuple:
        """What maps drawn from these layers depend on (keys maps rendered once, `map_widget`)."""
        tiles = tuple((a.name, a.bounds, a.before.key if a.before else "", a.after.key if a.after else "")
                      for a in self.areas)
        return (self.tiles_url, self.footprints_url, tiles)


def _tile_provider(name: str, url: str) -> xyzservices.TileProvider:
    """Our tiles as an xyzservices provider: folium then uses the URL as given, instead of
    first matching a plain string against every provider it knows (a few ms each, per layer)."""
    return xyzservices.TileProvider(name=name, url=url, attribution=SCENE_ATTRIBUTION)


def labelled_footprints(footprints: Mapping[str, Any]) -> dict[str, Any]:
    """Footprints as the map draws them: id, readable dates (escaped: tooltips are HTML) and style."""
    feats = []
    for feat in footprints.get("features", []):
        props = feat.get("properties") or {}
        dates = props.get("dates") or (props.get("date_before"), props.get("date_after"))
        feats.append({"type": "Feature", "geometry": feat.get("geometry"), "properties": {
            "pair_id": html_text(str(props.get("pair_id"))),
            "dates": html_text(" → ".join(str(d) for d in dates if d) or "?"),
            "style": FOOTPRINT_STYLE,
        }})
    return {"type": "FeatureCollection", "features": feats}


class ArchiveMap(leafmap.Map):
    """An archive's map: leafmap's folium map (basemap or none, offline), then whichever add_*
    layers a page wants.

    leafmap's own controls that would load scripts from the internet (search, measure, locate,
    minimap) stay off; its fullscreen control, layer control and draw tools use the Leaflet plugins
    the app serves itself (`map_assets`).
    """

    def __init__(self, *, basemap: str = "osm", height: int = 560) -> None:
        use_local_map_assets()
        super().__init__(location=[0.0, 0.0], zoom_start=12, tiles=None, height=height, max_zoom=MAX_MAP_ZOOM,
                         scale_control=False, draw_control=False, fullscreen_control=True,
                         layers_control=False)
        # leafmap passes its control switches on to Leaflet's map options too, where the fullscreen
        # plugin reads `fullscreenControl` and adds a second button: they are leafmap's, not Leaflet's.
        for name in ("scale_control", "draw_control", "fullscreen_control", "layers_control", "draw_export",
                     "layersControl"):
            self.options.pop(name, None)
        # Leaflet otherwise takes the map's lowest zoom from its layers' minZoom (the scene tiles',
        # see SCENE_ZOOM_OUT_LEVELS), and the map could not zoom out to show every area.
        self.options["minZoom"] = 0
        if basemap == "osm":  # always under the imagery, not one of the before/after choices
            folium.TileLayer("OpenStreetMap", overlay=True, control=False, max_zoom=MAX_MAP_ZOOM,
                             max_native_zoom=19).add_to(self)
        self.get_root().header.add_child(folium.Element(f"<style>{RANK_CSS}</style>"))

    def add_scene_tiles(
        self, areas: Sequence[SceneArea], tiles_url: str, *, show: str = "after", switch: bool = True
    ) -> ArchiveMap:
        """Each area's before and after imagery as XYZ tile layers, switched in the map (no rerun).

        "before" and "after" are the map's two base layers (a radio in the layer control; without
        `switch` only `show` is drawn): the browser fetches only the tiles on screen, and imagery
        shows at every closer zoom (tiles are enlarged past their native zoom) and a few levels further
        out (reduced below their coarsest, see SCENE_ZOOM_OUT_LEVELS; further out only outlines).
        """
        groups = {}
        for when in ("before", "after") if switch else (show,):
            groups[when] = folium.FeatureGroup(name=f"{when} imagery", overlay=False, show=when == show)
            for area in areas:
                tiles = getattr(area, when)
                if tiles is None:
                    continue
                w, s, e, n = tiles.bounds
                folium.TileLayer(
                    tiles=_tile_provider(area.name, tiles.url(tiles_url)), attr=SCENE_ATTRIBUTION,
                    name=html_text(area.name),
                    overlay=True, control=False, bounds=[[s, w], [n, e]],
                    min_zoom=max(0, tiles.minzoom - SCENE_ZOOM_OUT_LEVELS), max_zoom=MAX_MAP_ZOOM,
                    min_native_zoom=tiles.minzoom, max_native_zoom=tiles.maxzoom, tile_size=256,
                    keep_buffer=1,
                ).add_to(groups[when])
            groups[when].add_to(self)
        if switch:
            folium.LayerControl(position="topright", collapsed=False).add_to(self)
        return self

    def add_footprints(self, footprints: Mapping[str, Any], *, url: str | None = None) -> ArchiveMap:
        """Every pair's outline, with its id and dates on hover.

        With `url` (where `labelled_footprints(footprints)` is served) the browser fetches them, so
        the map itself stays small; otherwise they are written into the map.
        """
        layer = folium.GeoJson(
            labelled_footprints(footprints),
            name="footprints",
            control=False,
            tooltip=folium.GeoJsonTooltip(fields=["pair_id", "dates"], aliases=["pair", "dates"]),
        )
        if url is not None:
            layer.embed, layer.embed_link = False, url
        layer.add_to(self)
        return self

    def stable_ids(self) -> ArchiveMap:
        """Number every element in order instead of random ids: the same map renders the same text,
        so Streamlit can send a reference instead of the map on a rerun."""
        counter = iter(range(1, 1 << 30))

        def walk(element: Any) -> None:
            element._id = f"{next(counter):08x}"
            for child in list(element._children.values()):
                walk(child)

        walk(self)
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

    def add_areas(self, areas: Sequence[Cluster | SceneArea]) -> ArchiveMap:
        """A labelled dot per area, so areas stay visible when zoomed out (none for a single area)."""
        if len(areas) < 2:
            return self
        for i, area in enumerate(areas, start=1):
            w, s, e, n = area.bounds
            name = getattr(area, "name", "") or f"Area {i}"
            pairs = f"{area.n_pairs:,} pair" + ("" if area.n_pairs == 1 else "s")
            folium.CircleMarker(
                location=[(s + n) / 2, (w + e) / 2], radius=7, color="#2b6cb0", fill=True, fill_opacity=0.25,
                weight=1, tooltip=html_text(f"{name}: {pairs}"), interactive=False,
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

    def report_clicks_at_once(self) -> ArchiveMap:
        """Clicks and drawn rectangles reach the app without streamlit-folium's debounce."""
        from textitsr.app.map_widget import InstantEvents

        self.add_child(InstantEvents())
        return self

    def zoom_to_bounds(self, bounds: Bounds) -> ArchiveMap:
        """Open on (west, south, east, north) in degrees (folium's fit_bounds takes [[s, w], [n, e]])."""
        w, s, e, n = bounds
        self.fit_bounds([[s, w], [n, e]])
        return self

    def zoom_to_footprints(self, footprints: Mapping[str, Any], view: Bounds | None = None) -> ArchiveMap:
        """Open on `view`, else on all footprints."""
        self.zoom_to_bounds(view or footprints_bounds(footprints) or (-1.0, -1.0, 1.0, 1.0))
        return self


def picks_layer(
    boxes: Mapping[str, Bounds], query_id: str | None, hits: Sequence[str],
    layer: folium.FeatureGroup | None = None,
) -> folium.FeatureGroup:
    """The query pair outlined red and its similar pairs orange, numbered by rank (one layer, or
    added to `layer`).

    `boxes`: pair_id -> (W, S, E, N), e.g. `MapLayers.boxes` (computed once per archive).
    """
    layer = layer if layer is not None else folium.FeatureGroup(name="query")
    # Worst rank first, and each better rank raised above the one before: where the markers of one
    # tile's pairs pile up, rank 1 is the one on top.
    ranked = [(rank, pid) for rank, pid in enumerate(hits, start=1) if pid in boxes]
    for rank, pid in reversed(ranked):
        label = html_text(f"#{rank} {pid}")
        _outline(boxes[pid], HIT_STYLE, label).add_to(layer)
        w, s, e, n = boxes[pid]
        folium.Marker(
            [(s + n) / 2, (w + e) / 2],
            icon=folium.DivIcon(html=f'<div class="textitsr-rank">{rank}</div>', icon_size=(22, 22),
                                icon_anchor=(11, 11)),
            tooltip=label, z_index_offset=1000 * (len(ranked) - rank + 1),
        ).add_to(layer)
    if query_id is not None and query_id in boxes:
        _outline(boxes[query_id], QUERY_STYLE, html_text(f"query {query_id}")).add_to(layer)
    return layer


#: Colours of the where-map, from the archive's weakest shown score to its best.
HEAT_COLOURS = ("#ffffb2", "#fecc5c", "#fd8d3c", "#f03b20", "#bd0026")


def heat_layer(score_map: ScoreMap, top: int = 0) -> folium.FeatureGroup:
    """A text query's score on every footprint it was computed for: a heat map of where the described
    change happens, hottest drawn last (on top); the `top` best are outlined and numbered by rank."""
    import branca.colormap

    layer = folium.FeatureGroup(name="where")
    scores = np.asarray(score_map.scores, np.float64)
    if not len(scores):
        return layer
    lo, hi = float(scores.min()), float(scores.max())
    colours = branca.colormap.LinearColormap(HEAT_COLOURS, vmin=lo, vmax=hi if hi > lo else lo + 1e-6)
    for i in reversed(range(len(scores))):  # best first in the map: draw it last
        w, s, e, n = (float(v) for v in score_map.bounds[i])
        colour = colours(float(scores[i]))
        folium.Rectangle([[s, w], [n, e]], color=colour, weight=0, fill=True, fill_color=colour,
                         fill_opacity=0.55, interactive=False).add_to(layer)
    if top:
        boxes = {pid: tuple(float(v) for v in b) for pid, b in
                 zip(score_map.pair_ids[:top], score_map.bounds[:top], strict=True)}
        picks_layer(boxes, None, score_map.pair_ids[:top], layer)
    return layer


def _outline(box: Bounds, style: Mapping[str, Any], tooltip: str) -> folium.Rectangle:
    w, s, e, n = box
    return folium.Rectangle([[s, w], [n, e]], color=style["color"], weight=style["weight"], fill=False,
                            tooltip=tooltip, interactive=False)


def view_of(
    bounds: Bounds, width: int, height: int, max_zoom: int = MAX_MAP_ZOOM
) -> tuple[tuple[float, float], int]:
    """((lat, lon) centre, zoom) showing `bounds` (W, S, E, N) whole on a `width` x `height` px
    web-mercator map: what Leaflet's fitBounds picks, computed here so a shown map can be moved
    (st_folium's `center`/`zoom`) instead of rebuilt."""
    w, s, e, n = bounds

    def merc(lat: float) -> float:
        lat = max(min(lat, 85.0), -85.0)
        return math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))

    fits = [max(width, 1) * 360.0 / (256.0 * max(e - w, 1e-9)),
            max(height, 1) * 2 * math.pi / (256.0 * max(merc(n) - merc(s), 1e-9))]
    zoom = int(max(0, min(max_zoom, math.floor(math.log2(min(fits))))))
    return ((s + n) / 2, (w + e) / 2), zoom


def padded(bounds: Bounds, fraction: float, minimum: float = 1e-4) -> Bounds:
    """`bounds` grown by `fraction` of its larger side (at least `minimum` degrees) on every side."""
    w, s, e, n = bounds
    pad = fraction * max(e - w, n - s, minimum)
    return (w - pad, s - pad, e + pad, n + pad)


def results_view(hits: Sequence[PairHit]) -> tuple[dict[str, Bounds], Bounds] | None:
    """(pair_id -> footprint, the view showing them all) of the results; None when none has a footprint."""
    boxes = {h.pair_id: h.bounds for h in hits if h.bounds is not None}
    if not boxes:
        return None
    return boxes, padded(union(list(boxes.values())), 0.1)


def archive_map(
    layers: MapLayers, areas: Sequence[Cluster | SceneArea], view: Bounds | None = None, *,
    basemap: str = "osm", height: int = 600, imagery: Sequence[SceneArea] | None = None,
) -> ArchiveMap:
    """The map query page's map: before/after imagery (of `imagery`, e.g. one place at two chosen
    dates, else of every area), every footprint, `areas` dotted, the rectangle tool; opened on
    `view` (else on every footprint)."""
    fmap = ArchiveMap(basemap=basemap, height=height)
    fmap.add_scene_tiles(layers.areas if imagery is None else imagery, layers.tiles_url)
    fmap.add_footprints(layers.footprints, url=layers.footprints_url)
    fmap.add_areas(areas).add_rectangle_tool().report_clicks_at_once()
    return fmap.zoom_to_footprints(layers.footprints, view).stable_ids()


def imagery_map(
    areas: Sequence[SceneArea], tiles_url: str, footprints: Mapping[str, Any], *, basemap: str = "osm",
    height: int = 320,
) -> ArchiveMap:
    """The archive's after imagery, opened on all its footprints: the base of the small maps (results,
    Inspector), which move to their own view and draw their own picks on top."""
    fmap = ArchiveMap(basemap=basemap, height=height)
    if areas:
        fmap.add_scene_tiles(areas, tiles_url, switch=False)
    return fmap.zoom_to_footprints(footprints).stable_ids()
