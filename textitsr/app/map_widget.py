"""`show_map`: st_folium for maps that stay the same between reruns, rendered once per process.

streamlit-folium's `st_folium` renders the whole folium map to HTML on every call: every element's
template, then each rendered piece compiled again as a template, the bounds of every footprint.
On the map query page that was most of a click's rerun. `show_map` renders a map once per
`signature` (the strings are cached for the process and shared by sessions: a map holds no
session's data), and on each rerun builds only what changes - the picks layer, and the view
through st_folium's `center`/`zoom`, which move the map without reloading it. The component gets
the arguments `st_folium` would give it (streamlit-folium 0.27.4, pinned in requirements.txt).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import folium
import streamlit as st
from branca.element import MacroElement
from jinja2 import Template

#: The dict st_folium returns before the analyst touched the map (all keys it can return).
_EMPTY_EVENT = {
    "last_clicked": None, "last_object_clicked": None, "last_object_clicked_count": None,
    "last_object_clicked_tooltip": None, "last_object_clicked_popup": None, "all_drawings": None,
    "last_active_drawing": None, "last_circle_radius": None, "last_circle_polygon": None,
    "selected_layers": None, "selected_tags": None, "last_geocoder_result": None,
}


#: The report keys a click or a drawing sets, in the order streamlit-folium 0.27.4 builds its report
#: (it compares reports as JSON text), each with the field of its state that holds it.
INSTANT_KEYS = (
    ("last_clicked", "lat_lng_clicked"), ("last_object_clicked", "last_object_clicked"),
    ("last_object_clicked_count", "last_object_clicked_count"),
    ("last_object_clicked_tooltip", "last_object_clicked_tooltip"),
    ("last_object_clicked_popup", "last_object_clicked_popup"),
    ("all_drawings", "all_drawings"), ("last_active_drawing", "last_active_drawing"),
)


class InstantEvents(MacroElement):
    """Report a click or a drawn shape to Streamlit at once, instead of after the component's fixed
    250 ms debounce (streamlit-folium 0.27.4 debounces every map event, moves included).

    Runs in the component's frame: a few ms after a click or a finished drawing (so that the
    component's own handlers have recorded it, and a click ending a drawing is the same report) it
    sends what the component would send, and stores it as the component's last report, so the
    debounced call that follows finds nothing new and sends nothing: one rerun per click, as before.
    Only maps whose returned objects are all click or drawing keys are sped up; others (bounds,
    zoom...) are left to the component.
    """

    _template = Template("""
        {% macro script(this, kwargs) %}
        (function (map) {
            var KEYS = {{ this.keys_json }};
            var timer = null;
            function report() {
                var state = window.__GLOBAL_DATA__, streamlit = window.Streamlit;
                if (!state || !streamlit || !state.returned_objects || state.wrap_longitude) return;
                var known = KEYS.map(function (k) { return k[0]; });
                if (!state.returned_objects.every(function (k) { return known.indexOf(k) >= 0; })) return;
                var data = {};
                KEYS.forEach(function (k) {
                    if (state.returned_objects.indexOf(k[0]) >= 0) data[k[0]] = state[k[1]];
                });
                if (JSON.stringify(state.previous_data) === JSON.stringify(data)) return;
                state.previous_data = data;
                streamlit.setComponentValue(data);
            }
            function soon() { clearTimeout(timer); timer = setTimeout(report, {{ this.delay_ms }}); }
            map.on("click", soon);
            map.on("draw:created", soon);
        })({{ this._parent.get_name() }});
        {% endmacro %}
    """)

    def __init__(self, delay_ms: int = 30) -> None:
        super().__init__()
        self._name = "InstantEvents"
        self._id = "instant"
        self.delay_ms = int(delay_ms)
        self.keys_json = json.dumps([list(k) for k in INSTANT_KEYS])


@dataclass(frozen=True)
class RenderedMap:
    """What st_folium sends for a map, computed once: HTML, header, Leaflet script, ids, links."""

    html: str
    header: str
    script: str
    map_id: str
    full_id: str
    bounds: dict[str, dict[str, float | None]]
    zoom: Any
    css_links: tuple[str, ...]
    js_links: tuple[str, ...]


def render_map(fmap: folium.Map) -> RenderedMap:
    """Render `fmap` the way st_folium does (same steps, same order: some of them rename ids)."""
    from streamlit_folium import _get_header, _get_html, _get_map_string, get_full_id

    fmap.get_root().render()
    fmap.render()
    html, header = _get_html(fmap), _get_header(fmap)
    script = _get_map_string(fmap)
    try:
        (south, west), (north, east) = fmap.get_bounds()
    except (AttributeError, TypeError, ValueError):
        south = west = north = east = None
    css: list[str] = []
    js: list[str] = []
    for element in _walk(fmap):
        css.extend(href for _, href in getattr(element, "default_css", []))
        js.extend(src for _, src in getattr(element, "default_js", []))
    return RenderedMap(
        html=html, header=header, script=script, map_id=fmap._id, full_id=get_full_id(fmap),
        bounds={"_southWest": {"lat": south, "lng": west}, "_northEast": {"lat": north, "lng": east}},
        zoom=fmap.options.get("zoom"),
        css_links=tuple(dict.fromkeys(css)), js_links=tuple(dict.fromkeys(js)),
    )


def _walk(element: Any) -> Any:
    from folium.elements import JSCSSMixin

    if isinstance(element, JSCSSMixin):
        yield element
    for child in getattr(element, "_children", {}).values():
        yield from _walk(child)


@st.cache_resource(show_spinner=False, max_entries=32)
def _rendered(signature: Hashable, _build: Callable[[], folium.Map]) -> RenderedMap:
    """`signature` keys the cache: everything the built map depends on."""
    return render_map(_build())


def layer_script(layer: folium.FeatureGroup, rendered: RenderedMap) -> str:
    """The Leaflet script that adds `layer` to the shown map (st_folium's `feature_group_to_add`)."""
    from streamlit_folium import _get_feature_group_string

    host = folium.Map(tiles=None)
    host._id = rendered.map_id  # the layer's script then names the rendered map, as st_folium's does
    return _get_feature_group_string(layer, map=host, idx=0)


def show_map(
    signature: Hashable,
    build: Callable[[], folium.Map],
    *,
    key: str,
    height: int,
    returned_objects: Sequence[str] = (),
    picks: folium.FeatureGroup | None = None,
    center: tuple[float, float] | None = None,
    zoom: int | None = None,
    on_change: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Show the map `build()` makes (built and rendered once per `signature`), full width.

    `picks` is drawn on top and `center` (lat, lon) / `zoom` set the view, both without reloading
    the map. Returns what st_folium returns: the `returned_objects` of the last interaction.
    """
    from streamlit_folium import _component_func, generate_js_hash

    rendered = _rendered(signature, build)
    feature_group = layer_script(picks, rendered) if picks is not None else None
    hash_key = generate_js_hash(rendered.script, key, False)
    defaults = {**_EMPTY_EVENT, "bounds": rendered.bounds, "zoom": rendered.zoom}
    defaults = {k: v for k, v in defaults.items() if k in returned_objects}

    def _on_change() -> None:
        st.session_state[key] = st.session_state.get(hash_key, {})
        if on_change is not None:
            on_change()

    return _component_func(
        script=rendered.script, header=rendered.header, html=rendered.html, id=rendered.full_id,
        key=hash_key, height=height, width=None, returned_objects=list(returned_objects),
        default=defaults, zoom=zoom, center=list(center) if center is not None else None,
        feature_group=feature_group, return_on_hover=False, layer_control=None, pixelated=False,
        css_links=list(rendered.css_links), js_links=list(rendered.js_links), on_change=_on_change,
        wrap_longitude=False,
    )
