"""The same place at other dates, and "elsewhere": an archive holding a 3-date series of one site."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from textitsr.errors import InputError
from textitsr.index.archive import Archive
from textitsr.index.places import overlapping, same_place
from textitsr.index.search import FilterMasks
from textitsr.service import SearchService

SITE_DATES = ("2016-05-01", "2018-05-01", "2021-06-01")


def write_series(folder: Path, origin: tuple[float, float], size: int = 64) -> list[Path]:
    """Three dated 3-band GeoTIFFs of one UTM place (1 m pixels): a road appears in 2018, houses in 2021."""
    import rasterio
    from rasterio.transform import from_origin

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(int(origin[0]) % 97)
    base = (rng.random((3, size, size)) * 60 + 80).astype(np.uint8)
    road = base.copy()
    road[:, 28:36, :] = 200
    houses = road.copy()
    houses[:, 4:14, 4:14] = 30
    houses[:, 44:56, 40:52] = 30
    paths = []
    for date, data in zip(SITE_DATES, (base, road, houses), strict=True):
        path = folder / f"site{folder.name}_{date}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                           crs="EPSG:32614", transform=from_origin(*origin, 1, 1)) as ds:
            ds.write(data)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def series_service(tiny_archive, tmp_path_factory) -> SearchService:
    root = tmp_path_factory.mktemp("places")
    store = root / "store"
    shutil.copytree(tiny_archive.store, store)
    svc = SearchService.open(store)
    # One site of 2 x 2 tiles at 3 dates (pairs 2016-2018 and 2018-2021), and a second site far away.
    archive = Archive(store, svc.checkpoint)
    archive.add_scenes(write_series(root / "a", (630000, 3370000)), tile_size=32)
    archive.add_scenes(write_series(root / "b", (650000, 3390000)), tile_size=32)
    svc.refresh()  # the tests read `svc.catalog` directly; queries would re-read the store themselves
    return svc


def site_pair(svc: SearchService, dates: tuple[str, str], tile: str = "r0_c0", site: str = "a") -> str:
    """Id of the stored pair of `site`'s `tile` at `dates` (site<a|b>_..._<date>_<date>_r<row>_c<col>)."""
    tail = f"{dates[0]}_{dates[1]}_{tile}".replace("-", "")
    ids = [p for p in svc.catalog.pair_ids() if p.startswith(f"site{site}") and p.endswith(tail)]
    assert len(ids) == 1, [p for p in svc.catalog.pair_ids() if p.startswith("site")]
    return ids[0]


def test_overlap_and_same_place_on_footprints() -> None:
    import pandas as pd

    meta = pd.DataFrame({
        "west": [0.0, 1.0, 0.5, 0.001, np.nan], "south": [0.0, 0.0, 0.0, 0.0, np.nan],
        "east": [1.0, 2.0, 1.5, 1.001, np.nan], "north": [1.0, 1.0, 1.0, 1.0, np.nan],
        "date_before": [None] * 5, "date_after": [None] * 5, "source": ["x"] * 5,
    })
    masks = FilterMasks(meta)
    query = (0.0, 0.0, 1.0, 1.0)
    # itself, an edge neighbour (not overlapping), half overlap, a near-identical tile, no footprint
    assert overlapping(masks, query).tolist() == [True, False, True, True, False]
    assert same_place(masks, query).tolist() == [True, False, False, True, False]


@pytest.mark.slow
def test_place_dates_and_history_in_time_order(series_service: SearchService) -> None:
    svc = series_service
    first = site_pair(svc, SITE_DATES[:2])
    assert svc.place_dates(first) == list(SITE_DATES)
    history = svc.place_history(first, query="a new road is built")
    assert [h.dates for h in history] == [SITE_DATES[:2], SITE_DATES[1:]]
    assert [h.rank for h in history] == [1, 2]
    assert all(np.isfinite(h.score) for h in history)
    # scored against the pair itself by default: its own pair scores 1
    assert svc.place_history(first)[0].score == pytest.approx(1.0, abs=1e-2)


@pytest.mark.slow
def test_any_two_dates_of_a_place_can_be_queried(series_service: SearchService) -> None:
    svc = series_service
    first = site_pair(svc, SITE_DATES[:2])
    stored = svc.pair_at_dates(first, *SITE_DATES[:2])
    assert stored.pair_id == first and stored.dates == SITE_DATES[:2]
    before, after = svc.catalog.thumbnails(first)
    np.testing.assert_array_equal(stored.before, before)
    # 2016 -> 2021 is not a stored pair: its images come from the two stored pairs' thumbnails
    spanning = svc.pair_at_dates(first, SITE_DATES[0], SITE_DATES[2])
    later = site_pair(svc, SITE_DATES[1:])
    assert spanning.pair_id is None
    np.testing.assert_array_equal(spanning.before, before)
    np.testing.assert_array_equal(spanning.after, svc.catalog.thumbnails(later)[1])
    hits = svc.search_pair(before=spanning.before, after=spanning.after, k=5, elsewhere=True,
                           query_bounds=spanning.bounds)
    assert hits and not any(set(svc.place_dates(h.pair_id)) == set(SITE_DATES) and
                            same_place(svc.catalog.masks, spanning.bounds)[svc.catalog.row_of(h.pair_id)]
                            for h in hits if h.bounds is not None)
    with pytest.raises(InputError, match="earlier"):
        svc.pair_at_dates(first, SITE_DATES[2], SITE_DATES[0])
    with pytest.raises(InputError, match="no image of this place"):
        svc.pair_at_dates(first, "2017-01-01", SITE_DATES[2])


@pytest.mark.slow
def test_elsewhere_drops_every_pair_sharing_ground_with_the_query(series_service: SearchService) -> None:
    svc = series_service
    query = site_pair(svc, SITE_DATES[:2])
    everywhere = svc.search_pair(query, k=len(svc) - 1)
    here = overlapping(svc.catalog.masks, svc.footprint(query))
    assert any(here[svc.catalog.row_of(h.pair_id)] for h in everywhere)  # same site, other dates/tiles
    elsewhere = svc.search_pair(query, k=len(svc) - 1, elsewhere=True)
    assert elsewhere and not any(here[svc.catalog.row_of(h.pair_id)] for h in elsewhere)
    assert len(elsewhere) == len(svc) - int(here.sum())
    far = {h.pair_id for h in elsewhere if h.source == "geotiff"}
    other_site = {p for p in svc.catalog.pair_ids() if p.startswith("siteb")}
    assert len(other_site) == 8 and other_site <= far  # the other site, all of it
    assert "sitea" in " ".join(far - other_site)  # tiles of the same site touching only at a corner
    with pytest.raises(InputError, match="query_bounds"):
        svc.search_pair(before=np.zeros((32, 32, 3), np.uint8), after=np.zeros((32, 32, 3), np.uint8),
                        elsewhere=True)


@pytest.mark.slow
def test_score_map_scores_every_footprinted_pair(series_service: SearchService) -> None:
    svc = series_service
    heat = svc.score_map("a new road is built")
    has_footprint = ~np.isnan(svc.catalog.masks.west)
    assert len(heat.pair_ids) == int(has_footprint.sum()) == heat.bounds.shape[0] == len(heat.scores)
    assert np.all(np.diff(heat.scores) <= 1e-6)  # best first
    top = svc.search_text("a new road is built", k=3)
    footprinted = [h.pair_id for h in top if h.bounds is not None]
    assert heat.pair_ids[: len(footprinted)] == footprinted
    assert len(svc.score_map("a new road is built", limit=4).pair_ids) == 4


@pytest.fixture
def series_app(series_service, monkeypatch):
    """The app pointed at the series archive (no basemap: offline)."""
    from textitsr.app import config, services

    monkeypatch.setenv(config.ENV_STORE, str(series_service.store.root))
    monkeypatch.setenv(config.ENV_CHECKPOINT, str(series_service.checkpoint))
    monkeypatch.setenv(config.ENV_BASEMAP, "none")
    return services


def run_page(name: str, **state):
    from streamlit.testing.v1 import AppTest

    from textitsr.config import REPO_ROOT

    at = AppTest.from_file(str(REPO_ROOT / name), default_timeout=120)
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


@pytest.mark.slow
def test_map_page_compares_any_two_dates_of_the_clicked_place_elsewhere_only(series_app, series_service):
    from textitsr.app.map_events import MapPick

    svc = series_service
    first = site_pair(svc, SITE_DATES[:2])
    at = run_page("pages/2_Map_query.py", map_pick=MapPick(first, "click"))
    assert not at.exception, [e.message for e in at.exception]
    assert at.selectbox(key=f"map_before:{first}").value == SITE_DATES[0]
    assert at.selectbox(key=f"map_after:{first}").value == SITE_DATES[1]
    assert at.toggle(key="map_elsewhere").value is True
    at.selectbox(key=f"map_after:{first}").set_value(SITE_DATES[2]).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(SITE_DATES[0] in h.value and SITE_DATES[2] in h.value for h in at.subheader)
    cards = " ".join(m.value for m in at.markdown)
    shown = set(re.findall(r"`(site[ab][-_][^`]+)`", cards))
    here = overlapping(svc.catalog.masks, svc.footprint(first))
    assert shown and not any(here[svc.catalog.row_of(p)] for p in shown)
    assert "This place over time" in [h.value for h in at.subheader]
    assert any(f"picked place on {SITE_DATES[0]} (before) and {SITE_DATES[2]} (after)" in c.value
               for c in at.caption)
    imagery = svc.place_imagery(first, SITE_DATES[0], SITE_DATES[2])
    assert imagery.before.path.endswith(f"_{SITE_DATES[0]}.tif") and imagery.after.path.endswith(
        f"_{SITE_DATES[2]}.tif")
    at.toggle(key="map_elsewhere").set_value(False).run()
    shown = set(re.findall(r"`(site[ab][-_][^`]+)`", " ".join(m.value for m in at.markdown)))
    assert any(here[svc.catalog.row_of(p)] for p in shown)  # the same place at other dates is back


@pytest.mark.slow
def test_text_search_where_map_colours_the_archive(series_app, series_service):
    at = run_page("pages/1_Text_search.py", query="a new road is built")
    maps_before = sum(1 for _ in at.get("component_instance"))
    at.toggle(key="where_map").set_value(True).run()
    assert not at.exception and not at.error
    assert "Where it happens" in [h.value for h in at.subheader]
    assert sum(1 for _ in at.get("component_instance")) == maps_before + 1


@pytest.mark.slow
def test_a_map_query_link_opens_the_place_at_its_dates(series_app, series_service):
    """`Map_query?pair=ID&before=D1&after=D2&elsewhere=1` reopens that query; the page keeps its URL
    up to date with the dates chosen, so it can be shared."""
    from streamlit.testing.v1 import AppTest

    from textitsr.config import REPO_ROOT

    first = site_pair(series_service, SITE_DATES[:2])
    at = AppTest.from_file(str(REPO_ROOT / "pages" / "2_Map_query.py"), default_timeout=120)
    at.query_params.update({"pair": first, "before": SITE_DATES[0], "after": SITE_DATES[2], "elsewhere": "1"})
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(SITE_DATES[0] in h.value and SITE_DATES[2] in h.value for h in at.subheader)
    assert at.selectbox(key=f"map_after:{first}").value == SITE_DATES[2]
    assert "picked by link" in " ".join(c.value for c in at.caption)
    at.selectbox(key=f"map_after:{first}").set_value(SITE_DATES[1]).run()
    assert (at.query_params["before"], at.query_params["after"]) == SITE_DATES[:2]
    at.toggle(key="map_elsewhere").set_value(False).run()
    assert at.query_params["elsewhere"] == "0" and at.query_params["pair"] == first


def test_links_naming_unknown_pairs_or_bad_dates_open_nothing_or_the_pair_itself():
    from textitsr.app.map_events import LinkedQuery, linked_query, query_link

    known = {"a_1"}.__contains__
    assert linked_query({"pair": "nope"}, known) is None and linked_query({}, known) is None
    assert linked_query({"pair": "a_1", "before": "2020-13-01", "after": "x"}, known) == LinkedQuery(
        "a_1", None, True)
    assert linked_query({"pair": "a_1", "before": "2021-01-01", "after": "2020-01-01"}, known).dates is None
    link = query_link("a_1", ("2016-05-01", "2021-06-01"), False)
    assert linked_query(link, known) == LinkedQuery("a_1", ("2016-05-01", "2021-06-01"), False)
