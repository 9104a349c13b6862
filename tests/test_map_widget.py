"""`show_map` hands the st_folium component what st_folium would, from a map rendered only once."""

from __future__ import annotations

import math
import re

import pytest
import streamlit_folium

from textitsr.app import map_widget, maps
from textitsr.app.footprints import feature_bounds

pytest.importorskip("streamlit.testing.v1")


@pytest.fixture(scope="module")
def service(tiny_archive):
    from textitsr.service import SearchService

    return SearchService.open(tiny_archive.store, tiny_archive.checkpoint)


@pytest.fixture()
def sent(monkeypatch):
    """The arguments each call hands the st_folium component (captured instead of sent)."""
    calls: list[dict] = []

    def component(**kwargs):
        calls.append(kwargs)
        return kwargs["default"]

    monkeypatch.setattr(streamlit_folium, "_component_func", component)
    return calls


def _archive_map(service) -> maps.ArchiveMap:
    footprints = service.catalog.footprints()
    areas = service.catalog.scene_areas()
    fmap = maps.ArchiveMap(basemap="none", height=600).add_scene_tiles(areas, "/app/static/tiles/x")
    fmap.add_footprints(footprints, url="/app/static/tiles/x/footprints.json").add_rectangle_tool()
    return fmap.zoom_to_footprints(footprints).stable_ids()


def test_show_map_sends_what_st_folium_sends_and_renders_the_map_once(service, sent):
    footprints = service.catalog.footprints()
    boxes = feature_bounds(footprints)
    first, second = list(boxes)[:2]
    returned = ["last_object_clicked", "last_clicked", "last_active_drawing"]

    streamlit_folium.st_folium(_archive_map(service), key="m", height=600, use_container_width=True,
                               returned_objects=returned,
                               feature_group_to_add=maps.picks_layer(boxes, first, [second]))
    builds: list[int] = []

    def build() -> maps.ArchiveMap:
        builds.append(1)
        return _archive_map(service)

    map_widget._rendered.clear()
    for _ in range(2):
        value = map_widget.show_map(("test", service.store.root), build, key="m", height=600,
                                    returned_objects=returned, picks=maps.picks_layer(boxes, first, [second]))
    assert len(builds) == 1  # the second rerun reused the rendered map
    expected, ours, again = sent
    assert ours.keys() == expected.keys()
    for name in expected:
        if name != "on_change":
            assert ours[name] == expected[name], name
    assert again["script"] == ours["script"] and again["feature_group"] == expected["feature_group"]
    assert set(value) == set(returned)
    assert first in ours["feature_group"] and "#1 " + second in ours["feature_group"]


def test_view_of_fits_the_box_like_leaflet():
    # 1 degree of longitude at the equator: 2^z * 256 / 360 px, so 256 px hold it up to zoom 8.
    center, zoom = maps.view_of((10.0, -0.5, 11.0, 0.5), 256, 256)
    assert center == (0.0, 10.5) and zoom == 8
    # A tall box is limited by its latitude span (mercator), a tiny one by the deepest zoom.
    assert maps.view_of((0.0, 40.0, 0.01, 41.0), 256, 256)[1] == 8
    assert maps.view_of((0.0, 0.0, 1e-9, 1e-9), 256, 256)[1] == maps.MAX_MAP_ZOOM
    w, s, e, n = maps.padded((0.0, 0.0, 1.0, 2.0), 0.1)
    assert (w, s, e, n) == pytest.approx((-0.2, -0.2, 1.2, 2.2))
    assert math.isclose(maps.view_of((-180.0, -85.0, 180.0, 85.0), 256, 256)[1], 0)


def test_instant_events_report_the_keys_streamlit_folium_reports_in_its_order(service):
    """The click reporter's keys must come in the order of streamlit-folium's own report, or its
    debounced report would differ as JSON text and start a second rerun after every click."""
    from pathlib import Path

    bundle = next((Path(streamlit_folium.__file__).parent / "frontend" / "build" / "static" / "js")
                  .glob("main.*.js")).read_text(encoding="utf-8")
    body = bundle[bundle.index("function updateComponentValue"):]
    report = body[body.index("{last_clicked:"): body.index("};", body.index("{last_clicked:"))]
    order = re.findall(r"(\w+):", report)
    fields = dict(re.findall(r"(\w+):\w*\(?e\.(\w+)", report))
    ours = [key for key, _ in map_widget.INSTANT_KEYS]
    assert ours == [key for key in order if key in ours]
    assert all(fields[key] == field for key, field in map_widget.INSTANT_KEYS)

    plain = map_widget.render_map(_archive_map(service)).script
    instant = map_widget.render_map(_archive_map(service).report_clicks_at_once()).script
    assert "setComponentValue" not in plain
    assert "setComponentValue" in instant and "})(map_div);" in instant  # on the component's map
