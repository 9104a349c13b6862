"""The Streamlit pages, run headless with AppTest on the tiny archive, and the app's pure helpers."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from textitsr.app import (
    archives,
    compare,
    config,
    exports,
    figures,
    inspector,
    map_events,
    maps,
    navigation,
    services,
    uploads,
    widgets,
)
from textitsr.config import REPO_ROOT, DemoPaths
from textitsr.errors import InputError
from textitsr.index.store import FORMAT, FORMAT_VERSION, Store

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest

TIMEOUT = 120


@pytest.fixture(scope="module")
def app_env(tiny_archive):
    """TEXTITSR_* pointing the app at the tiny archive (and its world as the only data root)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(config.ENV_STORE, str(tiny_archive.store))
        mp.setenv(config.ENV_CHECKPOINT, str(tiny_archive.checkpoint))
        mp.setenv(config.ENV_DATA_ROOTS, str(tiny_archive.world))
        mp.setenv(config.ENV_BASEMAP, "none")
        yield tiny_archive


@pytest.fixture(scope="module")
def service(app_env):
    return services.get_service()


def run_page(name: str, **state) -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / name), default_timeout=TIMEOUT)
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def count(at: AppTest, kind: str) -> int:
    found = 0

    def walk(node) -> None:
        nonlocal found
        found += getattr(node, "type", None) == kind
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return found


def result_scores(at: AppTest) -> list[float]:
    """Scores printed on the result cards ('**#1** `id` — score **0.123**')."""
    return [float(m) for md in at.markdown for m in re.findall(r"score \*\*(-?[0-9.]+)\*\*", md.value)]


# ---------------------------------------------------------------------------------- pages
def test_text_search_returns_scored_results(app_env, service):
    at = run_page("pages/1_Text_search.py")
    assert_clean(at)
    assert at.info and "Type a description" in at.info[0].value

    at.text_input(key="query").input("many new buildings were built").run()
    assert_clean(at)
    k = at.slider(key="k").value
    scores = result_scores(at)
    assert len(scores) == min(k, len(service))
    assert scores == sorted(scores, reverse=True)
    assert count(at, "image") == 2 * len(scores)  # before + after thumbnail per result
    assert count(at, "plotly_chart") == 1
    direct = service.search_text("many new buildings were built", k=k)
    assert [f"`{h.pair_id}`" in at.markdown[i].value for i, h in enumerate(direct)] == [True] * len(direct)


def test_example_button_and_k(app_env):
    at = run_page("pages/1_Text_search.py")
    at.slider(key="k").set_value(3).run()
    at.button(key=f"example-{config.EXAMPLE_QUERIES[1]}").click().run()
    assert_clean(at)
    assert at.text_input(key="query").value == config.EXAMPLE_QUERIES[1]
    assert len(result_scores(at)) == 3


def test_area_outside_the_archive_says_no_results(app_env):
    at = run_page("pages/1_Text_search.py", query="a new road was constructed")
    at.radio(key="area_mode").set_value("Coordinates").run()
    for key, value in (("bbox_w", 10.0), ("bbox_s", 10.0), ("bbox_e", 11.0), ("bbox_n", 11.0)):
        at.number_input(key=key).set_value(value)
    at.run()
    assert_clean(at)
    assert result_scores(at) == []
    assert any("No image pairs match" in w.value for w in at.warning)


def test_bad_area_is_a_clear_error_not_a_traceback(app_env):
    at = run_page("pages/1_Text_search.py", query="a new road was constructed")
    at.radio(key="area_mode").set_value("Coordinates").run()
    at.number_input(key="bbox_w").set_value(50.0).run()  # west > east
    assert not at.exception
    assert at.error and "west" in at.error[0].value


def test_map_page_click_on_a_tile_gives_similar_pairs_and_sentences(app_env, service):
    at = run_page("pages/2_Map_query.py")
    assert_clean(at)
    assert count(at, "component_instance") == 1  # the leaflet map
    assert any("Click a tile" in i.value for i in at.info)

    footprints = service.footprints()
    target = footprints["features"][3]
    (w, s), _, (e, n) = target["geometry"]["coordinates"][0][:3]
    event = {"last_clicked": {"lat": (s + n) / 2, "lng": (w + e) / 2}, "last_active_drawing": None}
    pick = map_events.pick_query_pair(event, footprints)
    assert pick is not None and pick.pair_id == target["properties"]["pair_id"] and pick.how == "click"

    at.session_state["map_pick"] = pick
    at.run()
    assert_clean(at)
    assert f"Query pair `{pick.pair_id}`" in [h.value for h in at.subheader]
    sentences = at.table[0].value
    assert len(sentences) == at.slider(key="map_sentences").value
    assert sentences["score"].astype(float).is_monotonic_decreasing
    scores = result_scores(at)
    assert len(scores) == at.slider(key="map_k").value
    assert f"`{pick.pair_id}`" not in " ".join(m.value for m in at.markdown)  # the query is excluded


def test_inspector_shows_one_pair_in_full(app_env, service):
    pair_id = service.footprints()["features"][0]["properties"]["pair_id"]
    at = run_page("pages/3_Inspector.py", **{widgets.INSPECT_KEY: pair_id})
    assert_clean(at)
    assert at.text_input[0].value == pair_id
    assert count(at, "plotly_chart") == 0  # the difference heatmap waits until its tab is opened
    assert count(at, "iframe") == 1  # the swipe/blink viewer (runs in the browser)
    headers = [h.value for h in at.subheader]
    for expected in ("Spectral change statistics", "Captions", "Sentences that describe it best",
                     "Neighbours (most similar pairs)"):
        assert expected in headers
    # this archive's model has no change-type probe: no reading is made up
    assert service.change_reading(pair_id) is None
    assert "What changed, as the model reads it" not in headers
    record = service.pair(pair_id)
    assert all(any(c in m.value for m in at.markdown) for c in record["captions"])
    assert len(result_scores(at)) == min(6, len(service) - 1)
    # each describing sentence carries a confidence against the archive's own captions
    sentences = at.table[-1].value
    assert list(sentences.columns) == ["rank", "score", "confidence", "sentence"]
    assert all(c.split(" ")[0] in ("high", "medium", "low") for c in sentences["confidence"])

    at.session_state[inspector.VIEWS_KEY] = inspector.DIFFERENCE_TAB  # the analyst opens that tab
    at.run()
    assert_clean(at)
    assert count(at, "plotly_chart") == 1 and count(at, "iframe") == 1


def test_inspector_unknown_pair_is_a_message(app_env):
    at = AppTest.from_file(str(REPO_ROOT / "pages/3_Inspector.py"), default_timeout=TIMEOUT)
    at.query_params["pair"] = "no-such-pair"
    at.run()
    assert not at.exception
    assert at.error and "no-such-pair" in at.error[0].value


def test_archive_page_stats_and_path_outside_roots_refused(app_env, service):
    at = run_page("pages/4_Archive.py")
    assert_clean(at)
    assert at.metric[0].value == f"{len(service):,}"
    at.text_area(key="scene_paths").input("/etc/passwd\n../../etc/hostname")
    at.button[0].click().run()
    assert not at.exception
    assert at.error and "outside the configured data roots" in at.error[0].value


def write_scene(path: Path, seed: int, size: int = 256) -> Path:
    """A small 3-band uint8 GeoTIFF in UTM 14N (one tile of the default tiling)."""
    import rasterio
    from rasterio.transform import from_origin

    pixels = np.random.default_rng(seed).integers(0, 255, (3, size, size), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                       crs="EPSG:32614", transform=from_origin(640000.0, 3360000.0, 1.0, 1.0)) as dst:
        dst.write(pixels)
    return path


def test_archive_page_adds_a_scene_pair_from_a_path(app_env, tmp_path, monkeypatch):
    store = tmp_path / "store"
    shutil.copytree(app_env.store, store)
    roots = tmp_path / "roots"
    write_scene(roots / "scenes" / "2019-05-01.tif", seed=1)
    write_scene(roots / "scenes" / "2020-05-01.tif", seed=5)
    write_scene(roots / "scenes" / "2021-05-01.tif", seed=2)
    monkeypatch.setenv(config.ENV_STORE, str(store))
    monkeypatch.setenv(config.ENV_DATA_ROOTS, str(roots))
    n0 = len(services.get_service())
    at = run_page("pages/4_Archive.py")
    scenes = roots / "scenes"  # a series of three dates, the first path relative to the data root
    at.text_area(key="scene_paths").input(
        f"scenes/2019-05-01.tif\n{scenes / '2020-05-01.tif'}\n{scenes / '2021-05-01.tif'}")
    at.button[0].click().run()
    assert_clean(at)
    assert at.success and "Added 32 pairs" in at.success[0].value  # 2 date pairs x 16 tiles of 64 px
    assert len(services.get_service()) == n0 + 32
    assert len(Store.open(app_env.store)) == n0  # the shared tiny store is untouched


def test_archive_page_tiles_demo_scenes_at_the_archive_tile_size(app_env, service, tmp_path, monkeypatch):
    store = tmp_path / "store"
    shutil.copytree(app_env.store, store)
    monkeypatch.setenv(config.ENV_STORE, str(store))
    monkeypatch.setenv(config.ENV_DATA_ROOTS, str(tmp_path))
    scenes = tmp_path / "scenes"  # 192 x 192 px: smaller than one 256 px tile
    write_scene(scenes / "before.tif", seed=3, size=192)
    write_scene(scenes / "after.tif", seed=4, size=192)
    at = run_page("pages/4_Archive.py")
    assert at.number_input(key="tile_size").value == service.tile_size() == 64  # the archive's tiles
    at.text_area(key="scene_paths").input(f"{scenes / 'before.tif'}\n{scenes / 'after.tif'}")
    at.number_input(key="tile_size").set_value(256)
    at.button[0].click().run()
    assert not at.exception and not at.success
    assert at.error and "192x192 px" in at.error[0].value and "256 px tile" in at.error[0].value
    assert len(Store.open(store)) == len(service)  # refused before anything was written

    at.number_input(key="tile_size").set_value(96)
    at.button[0].click().run()
    assert_clean(at)
    assert at.success and "Added 4 pairs of 96 px" in at.success[0].value  # 2 x 2 tiles
    assert len(Store.open(store)) == len(service) + 4

    at.number_input(key="tile_size").set_value(64)  # the same scenes again, even cut otherwise
    at.button[0].click().run()
    assert not at.exception and not at.success
    assert at.error and "already in the archive" in at.error[0].value
    assert len(Store.open(store)) == len(service) + 4


def test_home_page_links_every_page(app_env):
    at = run_page("app.py")
    assert_clean(at)
    scripts = sorted(p.name for p in (REPO_ROOT / "pages").glob("[0-9]*_*.py"))
    assert count(at, "page_link") == len(scripts)


# -------------------------------------------------------------------------- pure helpers
def _features(*boxes: tuple[str, tuple[float, float, float, float]]) -> dict:
    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"pair_id": pid},
         "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}}
        for pid, (w, s, e, n) in boxes
    ]}


FP = _features(("a", (0.0, 0.0, 1.0, 1.0)), ("b", (1.0, 0.0, 2.0, 1.0)), ("c", (0.0, 1.0, 1.0, 2.0)))


def _rect(w, s, e, n):
    return {"type": "Feature", "geometry": {"type": "Polygon",
                                            "coordinates": [[[w, s], [w, n], [e, n], [e, s], [w, s]]]}}


def test_click_picks_the_tile_under_it_and_misses_outside():
    assert map_events.pick_query_pair({"last_clicked": {"lat": 0.5, "lng": 1.5}}, FP).pair_id == "b"
    assert map_events.pick_query_pair({"last_object_clicked": {"lat": 1.5, "lng": 0.2}}, FP).pair_id == "c"
    assert map_events.pick_query_pair({"last_clicked": {"lat": 5.0, "lng": 5.0}}, FP) is None
    assert map_events.new_map_action({"last_clicked": {"lat": 5.0, "lng": 5.0}}) == "click"
    assert map_events.pick_query_pair(None, FP) is None and map_events.pick_query_pair({}, FP) is None


def test_rectangle_picks_the_most_covered_tile():
    event = {"last_active_drawing": _rect(0.6, 0.1, 1.9, 0.9)}  # mostly over b
    pick = map_events.pick_query_pair(event, FP)
    assert pick == map_events.MapPick("b", "rectangle", bbox=(0.6, 0.1, 1.9, 0.9))
    assert map_events.pick_query_pair({"last_active_drawing": _rect(3, 3, 4, 4)}, FP) is None


def test_a_clicked_footprint_reported_as_drawing_is_a_click():
    feature = {**FP["features"][2], "properties": {"pair_id": "c", "rank": ""}}
    event = {"last_active_drawing": feature, "last_object_clicked": {"lat": 1.5, "lng": 0.5}}
    assert map_events.pick_query_pair(event, FP) == map_events.MapPick("c", "click", point=(0.5, 1.5))


def test_the_clicked_footprint_wins_over_the_same_tile_at_other_dates():
    """A Landsat tile carries several date pairs on one footprint: the click queries the one whose
    tooltip was shown (the clicked feature), not whichever comes first."""
    same = {"type": "FeatureCollection", "features": [
        {**_rect(0, 0, 1, 1), "properties": {"pair_id": pid}}
        for pid in ("landsat_1985_2020_r1_c2", "landsat_2005_2020_r1_c2", "landsat_1985_1990_r1_c2")
    ]}
    clicked = {**same["features"][1]}
    event = {"last_active_drawing": clicked, "last_object_clicked": {"lat": 0.5, "lng": 0.5}}
    assert map_events.pick_query_pair(event, same).pair_id == "landsat_2005_2020_r1_c2"


def test_only_the_new_interaction_counts():
    clicked = {"last_clicked": {"lat": 0.5, "lng": 0.5}, "last_active_drawing": _rect(1.1, 0.1, 1.9, 0.9)}
    assert map_events.pick_query_pair(clicked, FP).pair_id == "b"  # no history: the rectangle wins
    assert map_events.pick_query_pair(clicked, FP, previous=clicked) is None  # nothing new
    moved = {**clicked, "last_clicked": {"lat": 1.5, "lng": 0.5}}
    assert map_events.pick_query_pair(moved, FP, previous=clicked).pair_id == "c"  # the new click wins


def test_config_from_environment(tmp_path):
    cfg = config.load_config({})
    assert cfg.store == DemoPaths().store and cfg.checkpoint is None
    cfg = config.load_config({config.ENV_STORE: str(tmp_path), config.ENV_DATA_ROOTS: f"{tmp_path}:/srv/x",
                          config.ENV_MAX_UPLOAD_MB: "5"})
    assert cfg.store == tmp_path and cfg.data_roots == (tmp_path, Path("/srv/x"))
    assert cfg.max_upload_bytes == 5 * 2**20
    with pytest.raises(InputError, match="TEXTITSR_MAX_UPLOAD_MB"):
        config.load_config({config.ENV_MAX_UPLOAD_MB: "lots"})


def test_active_archive_is_the_fine_tuned_store_only_when_chosen_and_current(tmp_path):
    import json

    def manifest(folder: Path, n_pairs: int, cid: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        fields = {"format": FORMAT, "version": FORMAT_VERSION, "checkpoint_id": cid, "embed_dim": 8,
                  "dtype": "float16", "shards": [{"name": "s0", "n_pairs": n_pairs, "n_captions": 0}],
                  "n_pairs": n_pairs}
        (folder / "manifest.json").write_text(json.dumps(fields))

    manifest(tmp_path / "store", 40, "base")
    cfg = config.load_config({config.ENV_STORE: str(tmp_path / "store")})
    assert cfg.annotations_dir == tmp_path / "annotations"
    session: dict = {}  # one browser session's state
    assert archives.active_archive(cfg, session) == archives.ArchiveChoice(archives.BASE, tmp_path / "store")
    archives.set_archive_choice(session, archives.FINE_TUNED)  # chosen, but nothing fine-tuned yet
    active = archives.active_archive(cfg, session)
    assert active.kind == archives.BASE and "No fine-tuned model" in active.note
    manifest(tmp_path / "annotations" / "store", 40, "tuned-1")
    active = archives.active_archive(cfg, session)
    tuned = tmp_path / "annotations" / "store"
    assert (active.kind, active.store, active.stamp) == (archives.FINE_TUNED, tuned, "tuned-1")
    assert archives.active_archive(cfg, {}).kind == archives.BASE  # another session did not choose it
    assert archives.active_archive(cfg).kind == archives.BASE
    manifest(tmp_path / "store", 52, "base")  # scenes added since the update: the tuned copy is stale
    active = archives.active_archive(cfg, session)
    assert active.kind == archives.BASE and "52" in active.note and "40" in active.note
    archives.set_archive_choice(session, archives.BASE)
    assert archives.active_archive(cfg, session).note is None
    with pytest.raises(InputError, match="archive choice"):
        archives.set_archive_choice(session, "latest")
    assert archives.archive_choice({archives.CHOICE_KEY: "latest"}) == archives.BASE
    other = config.load_config({config.ENV_STORE: str(tmp_path / "demo"),
                                config.ENV_ANNOTATIONS: str(tmp_path / "w")})
    assert other.annotations_dir == tmp_path / "w"
    demo = config.load_config({config.ENV_STORE: str(tmp_path / "demo")})
    assert demo.annotations_dir == tmp_path / "demo-annotations"


def test_typed_paths_must_stay_inside_the_data_roots(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "secret.tif").write_bytes(b"II*\x00")
    (root / "link.tif").symlink_to(tmp_path / "secret.tif")
    assert uploads.resolve_data_path("sub/a.tif", [root]) == (root / "sub" / "a.tif").resolve()
    for bad in ("../secret.tif", str(tmp_path / "secret.tif"), "link.tif", "sub/../../secret.tif"):
        with pytest.raises(InputError, match="outside the configured data roots"):
            uploads.resolve_data_path(bad, [root])
    with pytest.raises(InputError, match="empty"):
        uploads.resolve_data_path("  ", [root])


def test_uploads_are_validated_in_memory(tiny_archive, tmp_path):
    tif = (tiny_archive.world / "scenes" / "test" / "before.tif").read_bytes()
    facts = uploads.validate_upload("before.tif", tif, max_bytes=len(tif))
    assert facts["crs"] and facts["width"] > 0
    with pytest.raises(InputError, match="upload limit"):
        uploads.validate_upload("before.tif", tif, max_bytes=len(tif) - 1)
    with pytest.raises(InputError, match="GeoTIFF"):
        uploads.validate_upload("notes.txt", b"hello", max_bytes=100)
    with pytest.raises(InputError, match="bad header"):
        uploads.validate_upload("fake.tif", b"<html>" * 10, max_bytes=1000)
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, format="TIFF")
    with pytest.raises(InputError, match="not georeferenced"):
        uploads.validate_upload("plain.tif", buf.getvalue(), max_bytes=10**6)
    written = uploads.store_upload("../../evil name.tif", tif, tmp_path / "uploads", stamp="s1")
    assert written == tmp_path / "uploads" / "s1" / "evil_name.tif" and written.read_bytes() == tif


def test_pages_are_discovered_in_order(tmp_path):
    for name in ("2_Map_query.py", "1_Text_search.py", "5_Annotate.py", "_shared.py", "10_Extra_tools.py"):
        (tmp_path / name).write_text("")
    pages = navigation.discover_pages(tmp_path)
    assert [p.title for p in pages] == ["Text search", "Map query", "Annotate", "Extra tools"]
    assert [p.url_path for p in pages] == ["Text_search", "Map_query", "Annotate", "Extra_tools"]


def test_difference_figures():
    before = np.zeros((20, 30, 3), np.uint8)
    after = np.full((20, 30, 3), 255, np.uint8)
    diff = figures.difference_map(before, after)
    assert diff.shape == (20, 30) and float(diff.min()) == 1.0
    with pytest.raises(InputError):
        figures.difference_map(before, after[:10])
    assert float(figures.difference_map(after, before).max()) == -1.0  # darker after: negative
    fig = figures.difference_heatmap(after, before)
    assert fig.data[0].zmid == 0 and fig.data[0].zmin == -fig.data[0].zmax


def test_swipe_blink_viewer_is_one_escaped_document():
    before = np.zeros((40, 80, 3), np.uint8)
    after = np.full((40, 80, 3), 200, np.uint8)
    images = compare.ViewerImages.from_arrays(before, after, ("before <b>2019</b>", 'after "x" <script>'))
    assert images.aspect == 2.0 and images.before_url.startswith("data:image/jpeg;base64,")
    page = compare.viewer_html(images, start="blink", image_height=300)
    assert "<b>2019" not in page and "&lt;b&gt;2019&lt;/b&gt;" in page
    assert page.count("<script") == 1 and "&lt;script&gt;" in page  # only the viewer's own script
    assert "--max-w:600px" in page and 'data-start="blink"' in page
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from anywhere
    with pytest.raises(InputError):
        compare.ViewerImages.from_arrays(before, after[:20])
    with pytest.raises(InputError):
        compare.viewer_html(images, start="fade")


def test_swipe_blink_viewer_takes_the_cached_jpegs_as_they_are():
    before, after = (figures.jpeg_bytes(np.full((40, 80, 3), v, np.uint8)) for v in (0, 200))
    images = compare.ViewerImages.from_jpegs(before, after, ("before", "after"))
    assert images.aspect == 2.0 and images.before_url == figures.data_url(before)  # not encoded again
    with pytest.raises(InputError, match="same size"):
        compare.ViewerImages.from_jpegs(before, figures.jpeg_bytes(np.zeros((40, 40, 3), np.uint8)))
    with pytest.raises(InputError, match="expected a JPEG"):
        compare.ViewerImages.from_jpegs(b"not an image", after)


def test_change_reading_rows_rank_the_shares_and_drop_the_noise():
    reading = {"none": 0.02, "buildings_built": 0.61, "road_built": 0.3, "water_expanded": 0.07}
    rows = inspector.reading_rows(reading)
    assert rows == [{"change": "buildings built", "share": "61%"}, {"change": "road built", "share": "30%"},
                    {"change": "water expanded", "share": "7%"}]


def test_statistics_carry_units():
    rows = {r["statistic"].split(":")[0].split(",")[0]: r for r in figures.stats_frame_rows(
        {"ndvi_before": 0.41, "ndvi_delta": -0.2, "vegetation_loss": 0.125, "built_gain": 0.215,
         "brightness_before": 0.31, "brightness_delta": 0.1})}
    assert rows["mean NDVI"]["unit"] == "index, −1 to 1" and rows["mean NDVI"]["value"] == 0.41
    assert "difference" in rows["mean NDVI change (after − before)"]["unit"]
    assert rows["vegetation loss"]["value"] == 12.5 and rows["vegetation loss"]["unit"].startswith("%")
    # only pixel counts are a share of the tile; brightness is a pixel value, not "% of pixels"
    assert rows["mean brightness of the visible bands"]["value"] == 0.31
    assert "%" not in rows["mean brightness of the visible bands"]["unit"]
    assert "%" not in rows["mean brightness change (after − before)"]["unit"]
    # an NDBI rise (bare soil as much as roofs: a forest clearing) is not called "built gain"
    assert rows["bare/built-up index increase"]["value"] == 21.5
    assert not any("built gain" in r["statistic"] for r in rows.values())
    # the pixel change every pair has, and the same against the pairs indexed with it
    change, relative, size = figures.stats_frame_rows(
        {"pixel_change": 0.052, "relative_pixel_change": 2.4, "archive_pairs": 37}
    )
    assert change["value"] == 0.052 and "pixel value" in change["unit"]
    assert relative["value"] == 2.4 and "deviations" in relative["unit"]
    assert size["value"] == 37 and size["unit"] == "pairs" and "archive" in size["statistic"]


def test_result_exports_and_wording(service):
    import csv
    import json

    hits = service.search_text("many new buildings were built", k=3)
    rows = list(csv.DictReader(io.StringIO(exports.hits_csv(hits))))
    assert [r["pair_id"] for r in rows] == [h.pair_id for h in hits]
    assert float(rows[0]["west"]) == hits[0].bounds[0]
    assert "query" not in rows[0]
    from textitsr.service import SearchFilters

    chosen = SearchFilters(sources=("synthetic",), date_from="2015-01-01")
    rows = list(csv.DictReader(io.StringIO(exports.hits_csv(hits, "many new buildings", chosen))))
    assert {r["query"] for r in rows} == {"many new buildings"}
    assert json.loads(rows[0]["filters"]) == {"sources": ["synthetic"], "date_from": "2015-01-01"}
    geo = json.loads(exports.hits_geojson(hits, "q", chosen))
    assert geo["query"] == "q" and [f["properties"]["rank"] for f in geo["features"]] == [1, 2, 3]
    assert geo["filters"]["sources"] == ["synthetic"]
    assert geo["features"][0]["geometry"]["coordinates"][0][0] == [hits[0].bounds[0], hits[0].bounds[1]]
    import geopandas as gpd

    table = gpd.read_parquet(io.BytesIO(exports.hits_geoparquet(service, hits, "q")))
    assert list(table["pair_id"]) == [h.pair_id for h in hits] and list(table["rank"]) == [1, 2, 3]
    assert table.geometry.iloc[0].bounds == pytest.approx(hits[0].bounds)
    assert list(table["score"]) == pytest.approx([h.score for h in hits], abs=1e-6)
    assert widgets.plural(1, "pair") == "1 pair" and widgets.plural(1200, "pair") == "1,200 pairs"
    assert widgets.shorten("x" * 500, 80).endswith("…") and len(widgets.shorten("x" * 500, 80)) == 80
    assert uploads.place_name(["m_3807_20180601.tif", "m_3807_20200601.tif"]) == "m_3807"
    assert uploads.upload_names(["a.tif", "a.tif", "b.tif"]) == ["1-a.tif", "2-a.tif", "3-b.tif"]


def test_map_html_uses_only_local_leaflet(service):
    from textitsr.app.map_assets import missing_vendor_files

    missing = missing_vendor_files()
    assert not missing, f"map assets not installed ({missing[0]}); run `make assets`"
    footprints = service.footprints()
    areas = service.scene_areas()
    fmap = maps.ArchiveMap(basemap="none").add_scene_tiles(areas, "/app/static/tiles/x")
    fmap.add_footprints(footprints, url="/app/static/tiles/x/footprints.json").add_rectangle_tool()
    html = fmap.zoom_to_footprints(footprints).stable_ids().get_root().render()
    assert "/app/static/vendor/leaflet/leaflet.js" in html
    assert "/app/static/vendor/leaflet-draw/leaflet.draw.js" in html
    external = re.findall(r'(?:src|href)="(https?://[^"]+)"', html)
    assert external == [], external
    for area in areas:  # imagery comes as tiles, footprints by URL: the map itself stays small
        assert f"/app/static/tiles/x/{area.before.key}/{{z}}/{{x}}/{{y}}.webp" in html
        assert f"/app/static/tiles/x/{area.after.key}/{{z}}/{{x}}/{{y}}.webp" in html
    assert "data:image" not in html and footprints["features"][0]["properties"]["pair_id"] not in html
    assert html.count("L.control.fullscreen") == 1 and "fullscreenControl" not in html  # one button
    assert len(html) < 40_000
    again = maps.ArchiveMap(basemap="none").add_scene_tiles(areas, "/app/static/tiles/x")
    again.add_footprints(footprints, url="/app/static/tiles/x/footprints.json").add_rectangle_tool()
    assert again.zoom_to_footprints(footprints).stable_ids().get_root().render() == html  # same text


def test_demo_keeps_valid_artifacts_and_commands_bind_locally(tiny_archive):
    from textitsr.demo import app_environment, prepare_demo, streamlit_command

    lines: list[str] = []
    result = prepare_demo(DemoPaths(tiny_archive.world.parent), real_scenes=False, echo=lines.append)
    assert result.built == ()  # world, model and store are all current: nothing is rebuilt
    assert sum("(kept)" in line for line in lines) == 4  # world, model, store, map tiles
    cmd = streamlit_command(port=8765)
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1" and cmd[-1] == "8765"
    env = app_environment(tiny_archive.store, None, [tiny_archive.world], base={})
    assert config.load_config(env).store == tiny_archive.store.resolve()
    assert env["HF_HUB_OFFLINE"] == "1"


def test_scene_tiles_stop_a_few_levels_below_their_coarsest_zoom(service):
    """Zoomed far out, Leaflet would fill the view with a scene's native-zoom tile grid (billions of
    slots for a small scene on a continent-wide results map) and freeze the page: each scene layer's
    minZoom stays within SCENE_ZOOM_OUT_LEVELS of its minNativeZoom."""
    areas = service.scene_areas()
    html = maps.ArchiveMap(basemap="none").add_scene_tiles(areas, "/app/static/tiles/x").get_root().render()
    assert re.search(r'L\.map\(.*?"minZoom": 0,', html, re.S)  # ... while the map itself still zooms out
    layers = re.findall(r'L\.tileLayer\((.*?)\);', html, re.S)
    assert len(layers) == 2 * len(areas) > 0
    for options in layers:
        zoom, native = (int(re.search(rf'"{name}": (\d+)', options).group(1))
                        for name in ("minZoom", "minNativeZoom"))
        assert native - maps.SCENE_ZOOM_OUT_LEVELS <= zoom <= native, options
