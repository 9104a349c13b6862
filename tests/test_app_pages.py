"""The Streamlit pages, run headless with AppTest on the tiny archive, and the app's pure helpers."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from textitsr import app_support as ui
from textitsr.config import REPO_ROOT, DemoPaths
from textitsr.errors import InputError
from textitsr.index.store import FORMAT, FORMAT_VERSION, Store

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest

TIMEOUT = 120


@pytest.fixture(scope="module")
def app_env(tiny_archive):
    """TEXTITSR_* pointing the app at the tiny archive (and its world as the only data root)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ui.ENV_STORE, str(tiny_archive.store))
        mp.setenv(ui.ENV_CHECKPOINT, str(tiny_archive.checkpoint))
        mp.setenv(ui.ENV_DATA_ROOTS, str(tiny_archive.world))
        mp.setenv(ui.ENV_BASEMAP, "none")
        yield tiny_archive


@pytest.fixture(scope="module")
def service(app_env):
    return ui.get_service()


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
    at.button(key=f"example-{ui.EXAMPLE_QUERIES[1]}").click().run()
    assert_clean(at)
    assert at.text_input(key="query").value == ui.EXAMPLE_QUERIES[1]
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

    footprints = service.catalog.footprints()
    target = footprints["features"][3]
    (w, s), _, (e, n) = target["geometry"]["coordinates"][0][:3]
    event = {"last_clicked": {"lat": (s + n) / 2, "lng": (w + e) / 2}, "last_active_drawing": None}
    pick = ui.pick_query_pair(event, footprints)
    assert pick is not None and pick.pair_id == target["properties"]["pair_id"] and pick.how == "click"

    at.session_state["map_pick"] = pick
    at.run()
    assert_clean(at)
    assert f"Query pair `{pick.pair_id}`" in [h.value for h in at.subheader]
    sentences = at.dataframe[0].value
    assert len(sentences) == at.slider(key="map_sentences").value
    assert sentences["score"].is_monotonic_decreasing
    scores = result_scores(at)
    assert len(scores) == at.slider(key="map_k").value
    assert f"`{pick.pair_id}`" not in " ".join(m.value for m in at.markdown)  # the query is excluded


def test_inspector_shows_one_pair_in_full(app_env, service):
    pair_id = service.catalog.footprints()["features"][0]["properties"]["pair_id"]
    at = run_page("pages/3_Inspector.py", **{ui.INSPECT_KEY: pair_id})
    assert_clean(at)
    assert at.text_input[0].value == pair_id
    assert count(at, "plotly_chart") == 2  # swipe + difference heatmap
    headers = [h.value for h in at.subheader]
    for expected in ("Spectral change statistics", "Captions", "Sentences that describe it best",
                     "Neighbours (most similar pairs)"):
        assert expected in headers
    record = service.catalog.pair(pair_id)
    assert all(any(c in m.value for m in at.markdown) for c in record["captions"])
    assert len(result_scores(at)) == min(6, len(service) - 1)


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
    at.text_input(key="before_path").input("/etc/passwd")
    at.text_input(key="after_path").input("../../etc/hostname")
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
    write_scene(roots / "scenes" / "2021-05-01.tif", seed=2)
    monkeypatch.setenv(ui.ENV_STORE, str(store))
    monkeypatch.setenv(ui.ENV_DATA_ROOTS, str(roots))
    n0 = len(ui.get_service())
    at = run_page("pages/4_Archive.py")
    at.text_input(key="before_path").input("scenes/2019-05-01.tif")
    at.text_input(key="after_path").input(str(roots / "scenes" / "2021-05-01.tif"))
    at.button[0].click().run()
    assert_clean(at)
    assert at.success and "Added" in at.success[0].value
    assert len(ui.get_service()) > n0
    assert len(Store.open(app_env.store)) == n0  # the shared tiny store is untouched


def test_archive_page_tiles_demo_scenes_at_the_archive_tile_size(app_env, service, tmp_path, monkeypatch):
    store = tmp_path / "store"
    shutil.copytree(app_env.store, store)
    monkeypatch.setenv(ui.ENV_STORE, str(store))
    scenes = app_env.world / "scenes" / "val"  # 192 x 192 px: smaller than one 256 px tile
    at = run_page("pages/4_Archive.py")
    assert at.number_input(key="tile_size").value == service.catalog.tile_size() == 64  # the archive's tiles
    at.text_input(key="before_path").input(str(scenes / "before.tif"))
    at.text_input(key="after_path").input(str(scenes / "after.tif"))
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
    assert ui.pick_query_pair({"last_clicked": {"lat": 0.5, "lng": 1.5}}, FP).pair_id == "b"
    assert ui.pick_query_pair({"last_object_clicked": {"lat": 1.5, "lng": 0.2}}, FP).pair_id == "c"
    assert ui.pick_query_pair({"last_clicked": {"lat": 5.0, "lng": 5.0}}, FP) is None
    assert ui.new_map_action({"last_clicked": {"lat": 5.0, "lng": 5.0}}) == "click"
    assert ui.pick_query_pair(None, FP) is None and ui.pick_query_pair({}, FP) is None


def test_rectangle_picks_the_most_covered_tile():
    event = {"last_active_drawing": _rect(0.6, 0.1, 1.9, 0.9)}  # mostly over b
    pick = ui.pick_query_pair(event, FP)
    assert pick == ui.MapPick("b", "rectangle", bbox=(0.6, 0.1, 1.9, 0.9))
    assert ui.pick_query_pair({"last_active_drawing": _rect(3, 3, 4, 4)}, FP) is None


def test_a_clicked_footprint_reported_as_drawing_is_a_click():
    feature = {**FP["features"][2], "properties": {"pair_id": "c", "rank": ""}}
    event = {"last_active_drawing": feature, "last_object_clicked": {"lat": 1.5, "lng": 0.5}}
    assert ui.pick_query_pair(event, FP) == ui.MapPick("c", "click", point=(0.5, 1.5))


def test_only_the_new_interaction_counts():
    clicked = {"last_clicked": {"lat": 0.5, "lng": 0.5}, "last_active_drawing": _rect(1.1, 0.1, 1.9, 0.9)}
    assert ui.pick_query_pair(clicked, FP).pair_id == "b"  # no history: the rectangle wins
    assert ui.pick_query_pair(clicked, FP, previous=clicked) is None  # nothing new
    moved = {**clicked, "last_clicked": {"lat": 1.5, "lng": 0.5}}
    assert ui.pick_query_pair(moved, FP, previous=clicked).pair_id == "c"  # the new click wins


def test_config_from_environment(tmp_path):
    cfg = ui.load_config({})
    assert cfg.store == DemoPaths().store and cfg.checkpoint is None
    cfg = ui.load_config({ui.ENV_STORE: str(tmp_path), ui.ENV_DATA_ROOTS: f"{tmp_path}:/srv/x",
                          ui.ENV_MAX_UPLOAD_MB: "5"})
    assert cfg.store == tmp_path and cfg.data_roots == (tmp_path, Path("/srv/x"))
    assert cfg.max_upload_bytes == 5 * 2**20
    with pytest.raises(InputError, match="TEXTITSR_MAX_UPLOAD_MB"):
        ui.load_config({ui.ENV_MAX_UPLOAD_MB: "lots"})


def test_active_archive_is_the_fine_tuned_store_only_when_chosen_and_current(tmp_path):
    import json

    def manifest(folder: Path, n_pairs: int, cid: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        fields = {"format": FORMAT, "version": FORMAT_VERSION, "checkpoint_id": cid, "embed_dim": 8,
                  "dtype": "float16", "shards": [], "n_pairs": n_pairs}
        (folder / "manifest.json").write_text(json.dumps(fields))

    manifest(tmp_path / "store", 40, "base")
    cfg = ui.load_config({ui.ENV_STORE: str(tmp_path / "store")})
    assert cfg.annotations_dir == tmp_path / "annotations"
    assert ui.active_archive(cfg) == ui.Archive(ui.BASE, tmp_path / "store")
    ui.set_archive_choice(cfg, ui.FINE_TUNED)  # chosen, but nothing fine-tuned yet
    active = ui.active_archive(cfg)
    assert active.kind == ui.BASE and "No fine-tuned model" in active.note
    manifest(tmp_path / "annotations" / "store", 40, "tuned-1")
    active = ui.active_archive(cfg)
    assert (active.kind, active.store, active.stamp) == (ui.FINE_TUNED, tmp_path / "annotations" / "store",
                                                         "tuned-1")
    manifest(tmp_path / "store", 52, "base")  # scenes added since the update: the tuned copy is stale
    active = ui.active_archive(cfg)
    assert active.kind == ui.BASE and "52" in active.note and "40" in active.note
    ui.set_archive_choice(cfg, ui.BASE)
    assert ui.active_archive(cfg).note is None
    with pytest.raises(InputError, match="archive choice"):
        ui.set_archive_choice(cfg, "latest")
    (tmp_path / "annotations" / ui.ARCHIVE_CHOICE_FILE).write_text("{not json")
    assert ui.archive_choice(cfg) == ui.BASE
    other = ui.load_config({ui.ENV_STORE: str(tmp_path / "demo"), ui.ENV_ANNOTATIONS: str(tmp_path / "w")})
    assert other.annotations_dir == tmp_path / "w"
    demo = ui.load_config({ui.ENV_STORE: str(tmp_path / "demo")})
    assert demo.annotations_dir == tmp_path / "demo-annotations"


def test_typed_paths_must_stay_inside_the_data_roots(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "secret.tif").write_bytes(b"II*\x00")
    (root / "link.tif").symlink_to(tmp_path / "secret.tif")
    assert ui.resolve_data_path("sub/a.tif", [root]) == (root / "sub" / "a.tif").resolve()
    for bad in ("../secret.tif", str(tmp_path / "secret.tif"), "link.tif", "sub/../../secret.tif"):
        with pytest.raises(InputError, match="outside the configured data roots"):
            ui.resolve_data_path(bad, [root])
    with pytest.raises(InputError, match="empty"):
        ui.resolve_data_path("  ", [root])


def test_uploads_are_validated_in_memory(tiny_archive, tmp_path):
    tif = (tiny_archive.world / "scenes" / "test" / "before.tif").read_bytes()
    facts = ui.validate_upload("before.tif", tif, max_bytes=len(tif))
    assert facts["crs"] and facts["width"] > 0
    with pytest.raises(InputError, match="upload limit"):
        ui.validate_upload("before.tif", tif, max_bytes=len(tif) - 1)
    with pytest.raises(InputError, match="GeoTIFF"):
        ui.validate_upload("notes.txt", b"hello", max_bytes=100)
    with pytest.raises(InputError, match="bad header"):
        ui.validate_upload("fake.tif", b"<html>" * 10, max_bytes=1000)
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, format="TIFF")
    with pytest.raises(InputError, match="not georeferenced"):
        ui.validate_upload("plain.tif", buf.getvalue(), max_bytes=10**6)
    written = ui.store_upload("../../evil name.tif", tif, tmp_path / "uploads", stamp="s1")
    assert written == tmp_path / "uploads" / "s1" / "evil_name.tif" and written.read_bytes() == tif


def test_pages_are_discovered_in_order(tmp_path):
    for name in ("2_Map_query.py", "1_Text_search.py", "5_Annotate.py", "_shared.py", "10_Extra_tools.py"):
        (tmp_path / name).write_text("")
    pages = ui.discover_pages(tmp_path)
    assert [p.title for p in pages] == ["Text search", "Map query", "Annotate", "Extra tools"]
    assert [p.url_path for p in pages] == ["Text_search", "Map_query", "Annotate", "Extra_tools"]


def test_figures_and_swipe():
    before = np.zeros((20, 30, 3), np.uint8)
    after = np.full((20, 30, 3), 255, np.uint8)
    diff = ui.difference_map(before, after)
    assert diff.shape == (20, 30) and float(diff.min()) == 1.0
    frames = ui.swipe_frames(before, after, steps=3)
    assert frames[0].max() == 0 and frames[-1].min() == 255 and frames[1][:, :14].min() == 255
    with pytest.raises(InputError):
        ui.difference_map(before, after[:10])


def test_map_html_uses_only_local_leaflet(service):
    from textitsr.map_assets import missing_vendor_files

    missing = missing_vendor_files()
    assert not missing, f"map assets not installed ({missing[0]}); run `make assets`"
    html = ui.archive_map(service.catalog.footprints(), basemap="none").get_root().render()
    assert "/app/static/vendor/leaflet/leaflet.js" in html
    assert "/app/static/vendor/leaflet-draw/leaflet.draw.js" in html
    external = re.findall(r'(?:src|href)="(https?://[^"]+)"', html)
    assert external == [], external


def test_demo_keeps_valid_artifacts_and_commands_bind_locally(tiny_archive):
    from textitsr.demo import app_environment, prepare_demo, streamlit_command

    lines: list[str] = []
    result = prepare_demo(DemoPaths(tiny_archive.world.parent), echo=lines.append)
    assert result.built == ()  # world, model and store are all current: nothing is rebuilt
    assert sum("(kept)" in line for line in lines) == 3
    cmd = streamlit_command(port=8765)
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1" and cmd[-1] == "8765"
    env = app_environment(tiny_archive.store, None, [tiny_archive.world], base={})
    assert ui.load_config(env).store == tiny_archive.store.resolve()
    assert env["HF_HUB_OFFLINE"] == "1"
