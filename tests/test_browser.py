"""A real `streamlit run app.py` on 127.0.0.1, driven by headless Debian chromium through Playwright.

Everything outside 127.0.0.1 is blocked, so the map must load Leaflet & co. from the app's own
static/vendor/ (a missing `make assets` fails here). Screenshots land in test-output/.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from textitsr.config import REPO_ROOT
from textitsr.demo import app_environment, streamlit_command

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = REPO_ROOT / "test-output"
STARTUP_S = 90
#: Playwright waits (ms): the first query loads the model on a busy 2-core machine.
SLOW_MS = 120_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def annotations(tmp_path_factory) -> Path:
    """The ANNEAL workspace of the app under test (its own, so other tests' labels do not leak in)."""
    return tmp_path_factory.mktemp("browser-annotations")


@contextlib.contextmanager
def serve(store: Path, checkpoint: Path, roots: list[Path], annotations: Path) -> Iterator[str]:
    """Base URL of a streamlit server on `store` (stopped when the block ends)."""
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (`make browser` installs Debian's chromium)")
    pytest.importorskip("playwright.sync_api")
    port = _free_port()
    env = app_environment(store, checkpoint, roots)
    env["TEXTITSR_BASEMAP"] = "none"
    env["TEXTITSR_ANNOTATIONS"] = str(annotations)
    log = (SHOTS / f"streamlit-{port}.log")
    SHOTS.mkdir(exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen(streamlit_command("127.0.0.1", port), cwd=REPO_ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start (see {log}):\n{log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def app_url(tiny_archive, annotations):
    """Base URL of a streamlit server on the tiny archive (stopped after the module)."""
    with serve(tiny_archive.store, tiny_archive.checkpoint, [tiny_archive.world], annotations) as url:
        yield url


@pytest.fixture(scope="module")
def browser(app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, app_url):
    """A fresh page that may only talk to the local server; records the URLs it requested."""
    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    requested: list[str] = []

    def only_local(route) -> None:
        if route.request.url.startswith(("http://127.0.0.1", "http://localhost", "data:", "blob:", "about:")):
            requested.append(route.request.url)
            route.continue_()
        else:
            route.abort()

    context.route("**/*", only_local)
    pg = context.new_page()
    pg.requested = requested  # type: ignore[attr-defined]
    pg.set_default_timeout(SLOW_MS)
    yield pg
    context.close()


def open_page(page, app_url: str, title: str) -> None:
    """Land on the home page (as a user does), then follow the sidebar link to `title`."""
    page.goto(app_url)
    page.get_by_text("Image pairs").first.wait_for()
    page.get_by_role("link", name=title).first.click()
    page.get_by_role("heading", name=title).first.wait_for()


def test_text_query_shows_result_images_and_score_chart(page, app_url):
    open_page(page, app_url, "Text search")
    box = page.get_by_label("Describe the change", exact=True)
    box.fill("many new buildings were built")
    box.press("Enter")
    page.get_by_text("score", exact=False).first.wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
        ".filter(i => i.complete && i.naturalWidth > 0).length >= 4"
    )
    results = page.locator("text=/— score/").count()
    assert results >= 1
    bars = page.locator(".js-plotly-plot .bars path").count()
    assert bars >= 2
    page.screenshot(path=str(SHOTS / "text_search.png"), full_page=True)


def test_map_renders_local_leaflet_with_tiles_and_a_click_gives_results(page, app_url):
    open_page(page, app_url, "Map query")
    frame = page.frame_locator('iframe[title*="st_folium"]')
    frame.locator(".leaflet-container").wait_for()
    tiles = frame.locator("path.leaflet-interactive")
    tiles.first.wait_for()
    assert tiles.count() >= 10  # the tiny archive's footprints
    frame.locator("img.leaflet-image-layer").first.wait_for()  # scene overlays
    assert any("/app/static/vendor/leaflet/leaflet.js" in u for u in page.requested)
    page.screenshot(path=str(SHOTS / "map_query.png"), full_page=True)

    tiles.nth(5).click()
    page.get_by_text("Query pair", exact=False).first.wait_for()
    page.get_by_text("Most similar pairs").wait_for()
    page.locator("text=/— score/").first.wait_for()
    page.get_by_text("picked by click on the map").wait_for()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
        ".filter(i => i.complete && i.naturalWidth > 0).length >= 6"
    )
    page.mouse.move(5, 5)  # un-hover the clicked tile (hover restyles it)
    frame.locator('path.leaflet-interactive[stroke="#e53e3e"]').first.wait_for()  # query outlined in red
    assert frame.locator('path.leaflet-interactive[stroke="#f6ad55"]').count() >= 1  # similar pairs, orange
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / "map_query_results.png"), full_page=True)


def test_inspector_and_archive_render(page, app_url):
    open_page(page, app_url, "Inspector")
    page.get_by_text("Neighbours (most similar pairs)").wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    page.screenshot(path=str(SHOTS / "inspector.png"), full_page=True)
    page.get_by_role("link", name="Archive").first.click()
    page.get_by_text("Model card").wait_for()
    archive_map = page.frame_locator('iframe[title*="st_folium"]')
    archive_map.locator(".leaflet-container").wait_for()
    archive_map.locator("path.leaflet-interactive").first.wait_for(state="attached")  # footprints drawn
    page.wait_for_timeout(1000)
    page.screenshot(path=str(SHOTS / "archive.png"), full_page=True)


def test_annotate_round_answers_move_the_progress(page, app_url, annotations):
    from textitsr.active.annotations import AnnotationLog

    open_page(page, app_url, "Annotate")
    page.get_by_text("Start a round to get the first questions").wait_for()
    page.get_by_role("button", name="Start round 1").click()
    page.get_by_text("Round 1: 0 of 8 answered").wait_for()
    page.wait_for_function(  # before/after of both items
        "() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
        ".filter(i => i.complete && i.naturalWidth > 0).length >= 4"
    )
    page.get_by_role("button", name="Similar", exact=True).click()
    page.get_by_text("Round 1: 1 of 8 answered").wait_for()
    page.get_by_role("button", name="Dissimilar", exact=True).click()
    page.get_by_text("Round 1: 2 of 8 answered").wait_for()
    page.get_by_text("6 left in this round").wait_for()
    assert [a.label for a in AnnotationLog(annotations).annotations()] == ["similar", "dissimilar"]
    page.locator(".js-plotly-plot").first.wait_for()
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / "annotate.png"), full_page=True)

    chart = page.locator(".js-plotly-plot").first
    chart.scroll_into_view_if_needed()
    chart.locator(".scatterlayer .trace").first.wait_for()  # the metric over rounds (round 0: base)
    chart.screenshot(path=str(SHOTS / "annotate_history.png"))


XSS_ID = "p<img src=x onerror=alert(1)>A.tif"
XSS_CAPTION = "see [click](javascript:alert(2)) ![pic](x) <b>bold</b> :red[red] $x^2$"


@pytest.fixture(scope="module")
def hostile_archive(tiny_archive, tmp_path_factory) -> Path:
    """A copy of the tiny store whose pair ids hold HTML and whose captions hold Markdown/HTML.

    Loaders sanitise ids taken from file names, but a store written elsewhere (or by an older
    version) can still carry them: the app must show them as text.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    store = tmp_path_factory.mktemp("hostile") / "store"
    shutil.copytree(tiny_archive.store, store)
    n = 0
    for shard in sorted((store / "shards").iterdir()):
        meta = pq.read_table(shard / "metadata.parquet")
        old = meta.column("pair_id").to_pylist()
        new = {pid: XSS_ID.replace("A.tif", f"{n + i}.tif") for i, pid in enumerate(old)}
        n += len(old)
        captions = [[XSS_CAPTION, *caps] for caps in meta.column("captions").to_pylist()]
        meta = meta.set_column(meta.schema.get_field_index("pair_id"), "pair_id",
                               pa.array([new[p] for p in old], pa.string()))
        meta = meta.set_column(meta.schema.get_field_index("captions"), "captions",
                               pa.array(captions, meta.schema.field("captions").type))
        pq.write_table(meta, shard / "metadata.parquet")
        for name in ("thumbnails.parquet", "captions.parquet"):
            table = pq.read_table(shard / name)
            ids = pa.array([new[p] for p in table.column("pair_id").to_pylist()], pa.string())
            pq.write_table(table.set_column(table.schema.get_field_index("pair_id"), "pair_id", ids),
                           shard / name)
    return store


def test_html_in_pair_ids_and_captions_renders_as_text(browser, tiny_archive, hostile_archive, annotations):
    """Stored XSS: `p<img src=x onerror=alert(1)>A.tif` shows as those characters; no alert fires."""
    with serve(hostile_archive, tiny_archive.checkpoint, [tiny_archive.world], annotations) as url:
        context = browser.new_context(viewport={"width": 1500, "height": 1100})
        pg = context.new_page()
        pg.set_default_timeout(SLOW_MS)
        dialogs: list[str] = []
        pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        try:
            open_page(pg, url, "Text search")
            box = pg.get_by_label("Describe the change", exact=True)
            box.fill("many new buildings were built")
            box.press("Enter")
            pg.locator("text=/— score/").first.wait_for()
            pg.get_by_text("onerror=alert(1)>", exact=False).first.wait_for()  # the id, as text
            assert pg.locator('img[src="x"]').count() == 0

            pg.get_by_role("link", name="Map query").first.click()
            frame = pg.frame_locator('iframe[title*="st_folium"]')
            frame.locator("path.leaflet-interactive").first.wait_for()
            frame.locator("path.leaflet-interactive").nth(3).hover()
            tip = frame.locator(".leaflet-tooltip")
            tip.wait_for()
            assert "<img src=x onerror=alert(1)>" in tip.inner_text()
            assert frame.locator('img[src="x"]').count() == 0

            pg.get_by_role("link", name="Inspector").first.click()
            pg.get_by_text("Neighbours (most similar pairs)").wait_for()
            pg.get_by_text("[click](javascript:alert(2))", exact=False).first.wait_for()
            assert pg.locator('a[href^="javascript"]').count() == 0
            assert pg.locator("b", has_text="bold").count() == 0
            pg.wait_for_timeout(500)
            pg.screenshot(path=str(SHOTS / "xss_inspector.png"), full_page=True)
        finally:
            context.close()
    assert dialogs == []
