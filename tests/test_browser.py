"""A real `streamlit run app.py` on 127.0.0.1, driven by headless Debian chromium through Playwright.

Everything outside 127.0.0.1 is blocked, so the map must load Leaflet & co. from the app's own
static/vendor/ (a missing `make assets` fails here). Screenshots land in test-output/.
"""

from __future__ import annotations

import contextlib
import os
import re
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


@pytest.fixture(scope="module")
def app_store(tiny_archive, tmp_path_factory) -> Path:
    """This module's own copy of the tiny store (the Archive test adds scenes to it)."""
    store = tmp_path_factory.mktemp("browser-store") / "store"
    shutil.copytree(tiny_archive.store, store)
    return store


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
def app_url(tiny_archive, app_store, annotations):
    """Base URL of a streamlit server on a copy of the tiny archive (stopped after the module)."""
    with serve(app_store, tiny_archive.checkpoint, [tiny_archive.world], annotations) as url:
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


#: The Inspector's swipe/blink viewer (a components.html iframe; its document holds the slider).
VIEWER = 'iframe[srcdoc*="Swipe position"]'
IMAGES_LOADED = ("n => [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
                 ".filter(i => i.complete && i.naturalWidth > 0).length >= n")


#: The last rerun is over: nothing left over from the previous run, and the app is not running.
SETTLED = ("() => !document.querySelector('[data-stale=\"true\"]')"
           " && !document.querySelector('[data-testid=\"stStatusWidgetRunningIcon\"]')")


def shown_with_images(page, text: str, images: int) -> None:
    """Wait until `text` is on the page and at least `images` of its st.image pictures have loaded."""
    page.get_by_text(text).first.wait_for()
    page.wait_for_function(IMAGES_LOADED, arg=images)


def test_text_query_shows_result_images_and_score_chart(page, app_url):
    open_page(page, app_url, "Text search")
    box = page.get_by_label("Describe the change", exact=True)
    box.fill("many new buildings were built")
    box.press("Enter")
    page.locator(".js-plotly-plot").first.wait_for()
    shown_with_images(page, "— score", 4)
    results = page.locator("text=/— score/").count()
    assert results >= 1
    bars = page.locator(".js-plotly-plot .bars path").count()
    assert bars >= 2
    page.screenshot(path=str(SHOTS / "text_search.png"), full_page=True)


def test_a_search_link_reloads_to_the_same_search_with_its_where_map(page, app_url):
    """A search is kept in its URL: opening the link (or reloading) shows the same query, k and
    where-map; the where-map colours the archive's tiles with the top results numbered on top."""
    from playwright.sync_api import expect

    page.goto(f"{app_url}/Text_search?q=a+new+road+was+built&k=3&where=1")
    page.get_by_text("Where it happens").wait_for()
    shown_with_images(page, "— score", 3)
    assert page.locator("text=/— score/").count() == 3
    where = page.frame_locator('iframe[title*="st_folium"]').first
    where.locator(".textitsr-rank").first.wait_for()
    assert where.locator(".textitsr-rank").count() == 3
    page.reload()
    page.get_by_text("Where it happens").wait_for()
    expect(page.get_by_label("Describe the change", exact=True)).to_have_value("a new road was built")
    assert "q=a+new+road+was+built" in page.url and "k=3" in page.url
    page.screenshot(path=str(SHOTS / "where_map.png"), full_page=True)


def test_map_renders_local_leaflet_with_tiles_and_a_click_gives_results(page, app_url):
    from playwright.sync_api import expect

    open_page(page, app_url, "Map query")
    frame = page.frame_locator('iframe[title*="st_folium"]')
    frame.locator(".leaflet-container").wait_for()
    tiles = frame.locator("path.leaflet-interactive")
    tiles.first.wait_for()
    assert tiles.count() >= 10  # the tiny archive's footprints
    frame.locator("img.leaflet-tile-loaded").first.wait_for()  # scene imagery, as map tiles
    assert any("/app/static/vendor/leaflet/leaflet.js" in u for u in page.requested)
    page.screenshot(path=str(SHOTS / "map_query.png"), full_page=True)

    tiles.nth(5).click()
    page.get_by_text("Query pair", exact=False).first.wait_for()
    page.get_by_text("Most similar pairs").wait_for()
    page.get_by_text("picked by click on the map").wait_for()
    shown_with_images(page, "— score", 6)
    page.mouse.move(5, 5)  # un-hover the clicked tile (hover restyles it)
    frame.locator('path.leaflet-interactive[stroke="#e53e3e"]').first.wait_for()  # query outlined in red
    assert frame.locator('path.leaflet-interactive[stroke="#f6ad55"]').count() >= 1  # similar pairs, orange
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / "map_query_results.png"), full_page=True)

    heading = page.locator("h3", has_text="Query pair").first.inner_text()
    query = re.search(r"Query pair\s+(\w+)", heading).group(1)
    page.get_by_role("button", name="Inspect query pair").click()
    page.wait_for_url(f"**/Inspector?pair={query}")
    page.get_by_text("Neighbours (most similar pairs)").wait_for()
    expect(page.locator('input[aria-label="Pair id"]:visible')).to_have_value(query, timeout=10_000)


def test_map_click_and_rectangle_each_send_one_rerun(page, app_url):
    """The map reports a click or a drawn rectangle at once (`InstantEvents`); streamlit-folium's own
    debounced report that follows must find nothing new: still one rerun per pick, and a rectangle
    ending on a tile stays a rectangle."""
    sent: list[float] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda _payload: sent.append(time.monotonic())))
    open_page(page, app_url, "Map query")
    frame = page.frame_locator('iframe[title*="st_folium"]')
    tiles = frame.locator("path.leaflet-interactive")
    tiles.first.wait_for()
    page.wait_for_function(SETTLED)

    def pick(action, caption: str) -> int:
        page.wait_for_timeout(500)
        before = len(sent)
        action()
        page.get_by_text(caption).wait_for()
        page.wait_for_function(SETTLED)
        page.wait_for_timeout(800)  # past streamlit-folium's debounce: a second report would be in
        return len(sent) - before

    assert pick(lambda: tiles.nth(5).click(), "picked by click on the map") == 1

    page.mouse.move(5, 5)
    box = tiles.nth(2).bounding_box()
    frame.locator(".leaflet-draw-draw-rectangle").click()

    def draw() -> None:
        page.mouse.move(box["x"] + 0.2 * box["width"], box["y"] + 0.2 * box["height"])
        page.mouse.down()
        page.mouse.move(box["x"] + 0.8 * box["width"], box["y"] + 0.8 * box["height"], steps=4)
        page.mouse.up()

    assert pick(draw, "picked by rectangle drawn on the map") == 1


def test_inspector_and_archive_render(page, app_url):
    open_page(page, app_url, "Inspector")
    page.get_by_text("Neighbours (most similar pairs)").wait_for()
    page.frame_locator(VIEWER).locator("#viewer img.top").wait_for()
    # each describing sentence shows how well it fits, against the archive's own captions
    page.get_by_text("confidence", exact=True).first.wait_for()
    page.get_by_text(re.compile(r"^(high|medium|low) \(\d+%\)$")).first.wait_for()
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
    shown_with_images(page, "Round 1: 0 of 8 answered", 4)  # before/after of both items
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

    # The latency benchmark's finish condition for Update model is false before the click and
    # true after it (a condition already true timed nothing: "0.1 s" for a minute's work).
    done = _app_latency().UPDATE_DONE
    page.wait_for_function(SETTLED)
    assert page.evaluate(done, 2) is False
    page.get_by_role("button", name="Update model").click()
    page.wait_for_function(done, arg=2)
    assert page.evaluate(done, 3) is False  # the message must name exactly the labels trained on


def _app_latency():
    """benchmarks/app_latency.py as a module (benchmarks/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("app_latency", REPO_ROOT / "benchmarks" / "app_latency.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module




def sized_page(browser, width: int, **options):
    """(context, page) with a `width` px wide window (the caller closes the context)."""
    context = browser.new_context(viewport={"width": width, "height": 1000}, **options)
    page = context.new_page()
    page.set_default_timeout(SLOW_MS)
    return context, page


def search(page, app_url: str, query: str) -> None:
    """Open Text search, type `query`, press Enter, wait for the result cards."""
    open_page(page, app_url, "Text search")
    box = page.get_by_label("Describe the change", exact=True)
    box.fill(query)
    box.press("Enter")
    page.locator("text=/— score/").first.wait_for()


def test_inspector_opens_the_pair_in_its_url_and_takes_every_pair_id_typed(page, app_url):
    from playwright.sync_api import expect

    page.goto(f"{app_url}/Inspector?pair=test_000003")
    box = page.locator('input[aria-label="Pair id"]:visible')
    page.get_by_text("Neighbours (most similar pairs)").wait_for()
    page.get_by_text("split test", exact=False).first.wait_for()  # that pair's facts
    page.wait_for_function(SETTLED)
    expect(box).to_have_value("test_000003", timeout=10_000)  # the box was left empty when opened by URL
    for pair_id in ("train_000006", "train_000007", "train_000008"):
        box.fill(pair_id)
        box.press("Enter")
        page.wait_for_url(f"**pair={pair_id}")
        page.get_by_text("Neighbours (most similar pairs)").wait_for()
        page.wait_for_timeout(300)
        expect(box).to_have_value(pair_id)  # the old page reverted every second id

    page.wait_for_function(SETTLED)
    neighbour = re.search(r"#1 (\S+)", page.locator("text=/— score/").first.inner_text()).group(1)
    page.get_by_role("button", name="Inspect").first.click()  # a neighbour, from the Inspector itself
    page.wait_for_url(f"**pair={neighbour}")
    page.get_by_text("Neighbours (most similar pairs)").wait_for()
    page.wait_for_function(SETTLED)
    expect(box).to_have_count(1, timeout=10_000)  # the new box replaced the old one
    expect(box).to_have_value(neighbour)


def test_inspect_on_search_results_opens_each_pair_in_the_inspector(page, app_url):
    from playwright.sync_api import expect

    box = page.locator('input[aria-label="Pair id"]:visible')
    for rank in (1, 2):  # the second visit must not keep the first pair in the box
        search(page, app_url, "many new buildings are built")
        shown_with_images(page, "— score", 4)  # loading images shift the cards under the pointer
        page.wait_for_function(SETTLED)
        card = page.locator("text=/— score/").nth(rank - 1)
        pair_id = re.search(rf"#{rank} (\S+)", card.inner_text()).group(1)
        page.get_by_role("button", name="Inspect").nth(rank - 1).click()
        page.wait_for_url(f"**/Inspector?pair={pair_id}")
        page.get_by_text("Neighbours (most similar pairs)").wait_for()
        page.wait_for_function(SETTLED)
        expect(box).to_have_value(pair_id, timeout=10_000)


def test_inspector_images_fit_columns_difference_is_diverging_and_footprint_is_mapped(browser, app_url):
    context, page = sized_page(browser, 820)
    page.goto(f"{app_url}/Inspector?pair=train_000002")
    shown_with_images(page, "Neighbours (most similar pairs)", 2)
    overflow = page.evaluate(
        "() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')].slice(0, 2).map(img => {"
        "  const col = img.closest('[data-testid=\"stColumn\"]').getBoundingClientRect();"
        "  const box = img.getBoundingClientRect(); return box.right - col.right; })"
    )
    assert len(overflow) == 2 and max(overflow) <= 1, overflow  # was 480 px wide whatever the column

    minimap = page.frame_locator('iframe[title*="st_folium"]').first
    minimap.locator('path.leaflet-interactive[stroke="#e53e3e"]').first.wait_for(state="attached")

    page.wait_for_function(SETTLED)
    assert page.locator(".js-plotly-plot").count() == 0  # the heatmap is drawn when asked for, not on open
    page.get_by_role("tab", name="Difference").click()
    heatmap = page.locator(".js-plotly-plot").first
    heatmap.wait_for()
    trace = page.evaluate("el => { const t = el.data[0]; return {zmin: t.zmin, zmid: t.zmid, zmax: t.zmax,"
                          " ticks: t.colorbar.ticktext}; }", heatmap.element_handle())
    assert trace["zmid"] == 0 and trace["zmin"] == -trace["zmax"]  # zero sits in the neutral middle
    assert any("no change" in t for t in trace["ticks"])
    page.get_by_role("cell", name="% of the tile's valid pixels").first.wait_for()  # statistics carry units
    page.screenshot(path=str(SHOTS / "inspector_narrow.png"), full_page=True)
    context.close()



def reveal_at(viewer, *fractions: float) -> list[str]:
    """Which image the viewer shows at each fraction of its width (mid-height): 'top' is after."""
    return viewer.evaluate(
        "(el, fs) => { const b = el.getBoundingClientRect(); return fs.map(f => document"
        ".elementFromPoint(b.left + f * b.width, b.top + b.height / 2).className); }", list(fractions))


def sent_frames(page) -> list[str]:
    """Every websocket message the page sends to Streamlit (a rerun is one), as it happens."""
    sent: list[str] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(str(payload)[:40])))
    return sent


def wait_until_quiet(page, sent: list[str], quiet_ms: int = 1500) -> None:
    """Wait until the page has sent nothing to the server for `quiet_ms` (start-up reruns are over)."""
    while True:
        seen = len(sent)
        page.wait_for_timeout(quiet_ms)
        if len(sent) == seen:
            return


def test_inspector_swipe_and_blink_run_in_the_browser(page, app_url):
    sent = sent_frames(page)
    page.goto(f"{app_url}/Inspector?pair=train_000002")
    page.get_by_text("Neighbours (most similar pairs)").wait_for()
    frame = page.frame_locator(VIEWER)
    viewer = frame.locator("#viewer")
    frame.locator("#viewer img.top").wait_for()
    viewer.evaluate("el => Promise.all([...el.querySelectorAll('img')].map(i => i.decode()))")
    wait_until_quiet(page, sent)
    quiet = len(sent)

    assert reveal_at(viewer, 0.3, 0.7) == ["top", "bottom"]  # after left of the middle, before right
    box = viewer.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + 0.5 * box["width"], y)
    page.mouse.down()
    page.mouse.move(box["x"] + 0.9 * box["width"], y, steps=5)
    page.mouse.up()
    assert reveal_at(viewer, 0.3, 0.7, 0.95) == ["top", "top", "bottom"]  # dragged to 90 %
    frame.get_by_label("Swipe position").press("Home")
    assert reveal_at(viewer, 0.1, 0.9) == ["bottom", "bottom"]  # all before
    page.screenshot(path=str(SHOTS / "inspector_swipe.png"), full_page=True)

    frame.get_by_role("button", name="Blink").click()
    shown = viewer.evaluate(  # what the viewer shows, sampled every 100 ms for 2.5 s
        "el => new Promise(done => { const seen = []; const tick = setInterval(() => seen.push("
        "getComputedStyle(el.querySelector('.top')).visibility + ' ' + el.querySelector('#blink-tag')"
        ".textContent), 100); setTimeout(() => { clearInterval(tick); done(seen); }, 2500); })")
    changes = sum(a != b for a, b in zip(shown, shown[1:], strict=False))
    assert {s.split()[0] for s in shown} == {"visible", "hidden"} and changes >= 2, shown
    assert all(s.startswith("hidden before") or s.startswith("visible after") for s in shown), shown
    frame.get_by_role("button", name="Pause").click()
    page.wait_for_timeout(300)
    assert len(sent) == quiet, sent[quiet:]  # dragging, the slider and blinking sent nothing: no rerun


def test_text_search_flags_weak_matches_and_cuts_long_queries(page, app_url, tiny_archive):
    from textitsr.index.store import Store

    caption = str(Store.open(tiny_archive.store).captions()["text"].iloc[0])
    search(page, app_url, caption)
    page.wait_for_timeout(500)
    assert page.get_by_text("Nothing in the archive matches").count() == 0

    long_query = "zq " * 700 + "🦄🦄🦄"
    box = page.get_by_label("Describe the change", exact=True)
    box.fill(long_query)
    box.press("Enter")
    page.get_by_text("Nothing in the archive matches this description well").wait_for()
    echoed = page.locator("text=/pairs? for “/").first.inner_text()
    assert len(echoed) < 140 and "…" in echoed  # the 2,100-character query is not echoed in full
    page.screenshot(path=str(SHOTS / "text_search_low_confidence.png"), full_page=True)

    # The notice going away leaves the results where they were: the results map is moved, not
    # loaded again (a mark left in its frame survives the next search).
    page.wait_for_function(SETTLED)
    results_map = page.locator('iframe[title*="st_folium"]').first
    results_map.element_handle().content_frame().evaluate("() => { window.textitsrMark = 1; }")
    box.fill(caption)
    box.press("Enter")
    page.get_by_text(f"for “{caption[:20]}", exact=False).first.wait_for()
    page.wait_for_function(SETTLED)
    assert page.get_by_text("Nothing in the archive matches").count() == 0
    assert results_map.element_handle().content_frame().evaluate("() => window.textitsrMark") == 1


def test_text_search_buttons_cards_plurals_dates_exports_and_map(browser, app_url, tmp_path):
    import csv
    import json

    context, page = sized_page(browser, 1100, accept_downloads=True)
    search(page, app_url, "many new buildings were built")
    # Until the icon font is in, an icon is its ligature's name in plain text ("download"), which is
    # wider than the icon: measure with the fonts the page will show.
    # Streamlit's icon font is fetched when an icon is first drawn, so fonts.status can read
    # "loaded" before it even started: load it by name (resolves once it is in).
    page.evaluate("() => document.fonts.load('24px \"Material Symbols Rounded\"', 'download')")
    page.wait_for_function("() => document.fonts.status === 'loaded'")
    cut = page.evaluate(
        "() => [...document.querySelectorAll('button')].filter(b => b.innerText.includes(' '))"
        ".filter(b => [...b.querySelectorAll('p, div, span')].some(e => e.scrollWidth > e.clientWidth + 1))"
        ".map(b => b.innerText)"
    )
    assert cut == [], cut  # example buttons show their whole text

    slider = page.get_by_role("slider").first
    slider.focus()
    slider.press("ArrowLeft")  # k 10 -> 9: an odd number of results on a two-column grid
    shown_with_images(page, "9 pairs for", 18)
    empty = page.evaluate(
        "() => [...document.querySelectorAll("
        "'[data-testid=\"stVerticalBlock\"], [data-testid=\"stColumn\"]')]"
        ".filter(e => getComputedStyle(e).borderTopStyle !== 'none'"
        " && getComputedStyle(e).borderTopWidth !== '0px')"
        ".filter(e => !e.innerText.includes('score')).length"
    )
    assert empty == 0  # no empty bordered card after the last result

    results_map = page.frame_locator('iframe[title*="st_folium"]').first
    results_map.locator(".textitsr-rank").first.wait_for()
    assert results_map.locator(".textitsr-rank").count() == 9  # results numbered on a map

    with page.expect_download() as download:
        page.get_by_role("button", name="Export CSV").click()
    rows = list(csv.DictReader(open(download.value.path(), encoding="utf-8")))
    assert [int(r["rank"]) for r in rows] == list(range(1, 10)) and float(rows[0]["score"]) > 0
    with page.expect_download() as download:
        page.get_by_role("button", name="Export GeoJSON").click()
    collection = json.loads(open(download.value.path(), encoding="utf-8").read())
    assert len(collection["features"]) == 9
    assert collection["features"][0]["geometry"]["type"] == "Polygon"
    assert collection["features"][0]["properties"]["score"] == float(rows[0]["score"])

    page.get_by_text("Acquisition dates").click()
    page.get_by_text(re.compile(r"\d{4}-\d{2}-\d{2} \(\d+ pairs?\)")).first.wait_for()

    slider.focus()
    slider.press("Home")  # k = 1
    page.get_by_text("1 pair for").wait_for()
    assert page.get_by_text("1 pairs").count() == 0
    page.screenshot(path=str(SHOTS / "text_search_one.png"), full_page=True)
    context.close()


def upload_scenes(page, files: list[Path]) -> None:
    """Choose the scenes on the Archive's Upload tab (one multi-file input), wait until the browser has
    sent every file to the server, then submit (a submit while an upload still runs sends no file)."""
    sent: list[str] = []

    def count(response) -> None:
        if "/_stcore/upload_file/" in response.url and response.request.method == "PUT":
            sent.append(response.url)

    page.on("response", count)
    page.locator('input[type="file"]').first.set_input_files([str(p) for p in files])
    deadline = time.monotonic() + SLOW_MS / 1000
    while len(sent) < len(files) and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    page.remove_listener("response", count)
    page.get_by_role("button", name="Upload and add").click()


def test_archive_refuses_the_same_scenes_twice_and_names_pairs_readably(
    page, app_url, app_store, tiny_archive, tmp_path
):
    from textitsr.index.store import Store

    scenes = tiny_archive.world / "scenes" / "val"
    files = [tmp_path / "riverside_2019-05-01.tif", tmp_path / "riverside_2021-05-01.tif"]
    shutil.copyfile(scenes / "before.tif", files[0])
    shutil.copyfile(scenes / "after.tif", files[1])
    n0 = len(Store.open(app_store))
    open_page(page, app_url, "Archive")
    page.get_by_role("tab", name="Upload").click()
    upload_scenes(page, files)
    page.get_by_text("already in the archive").wait_for()  # the val scenes were indexed with the world
    assert len(Store.open(app_store)) == n0

    fresh = [write_scene(tmp_path / "lakeside_2019-05-01.tif", seed=1),
             write_scene(tmp_path / "lakeside_2021-05-01.tif", seed=2)]
    added = page.get_by_text(re.compile(r"^Added 4 pairs of 64 px"))  # 128 px scenes, 64 px tiles
    upload_scenes(page, fresh)
    added.wait_for()
    renamed = [tmp_path / "copy_2019.tif", tmp_path / "copy_2021.tif"]  # same content, other names
    for src, dst in zip(fresh, renamed, strict=True):
        shutil.copyfile(src, dst)
    upload_scenes(page, renamed)
    added.wait_for(state="detached")
    page.get_by_text("already in the archive").wait_for()
    assert len(Store.open(app_store)) == n0 + 4
    before = set(Store.open(tiny_archive.store).metadata()["pair_id"])
    ids = set(Store.open(app_store).metadata()["pair_id"]) - before
    readable = r"lakeside-[0-9a-f]{6}_20190501_20210501_r\d+_c\d+"  # place, content digest, dates, tile
    assert ids and all(re.fullmatch(readable, i) for i in ids), sorted(ids)[:3]
    page.screenshot(path=str(SHOTS / "archive_duplicate.png"), full_page=True)


def write_scene(path: Path, seed: int, size: int = 128) -> Path:
    """A small 3-band uint8 GeoTIFF in UTM 14N, away from the tiny world."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    pixels = np.random.default_rng(seed).integers(0, 255, (3, size, size), dtype=np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                       crs="EPSG:32614", transform=from_origin(640000.0, 3360000.0, 1.0, 1.0)) as dst:
        dst.write(pixels)
    return path


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


@pytest.fixture(scope="module")
def series_store(tiny_archive, tmp_path_factory) -> tuple[Path, str]:
    """A copy of the tiny store plus a 3-date GeoTIFF series of one site; (store, a pair of the site)."""
    from test_places import SITE_DATES, write_series

    from textitsr.index.archive import Archive
    from textitsr.index.store import Store

    root = tmp_path_factory.mktemp("series-browser")
    store = root / "store"
    shutil.copytree(tiny_archive.store, store)
    scenes = write_series(root / "a", (630000, 3370000))
    Archive(store, tiny_archive.checkpoint).add_scenes(scenes, tile_size=32)
    tail = f"{SITE_DATES[0]}_{SITE_DATES[1]}_r0_c0".replace("-", "")
    ids = Store.open(store).metadata()["pair_id"]
    first = next(p for p in ids if p.startswith("sitea") and p.endswith(tail))
    return store, first


def test_a_map_query_link_compares_two_dates_of_a_place_elsewhere_only(browser, tiny_archive, series_store,
                                                                        annotations):
    """The map query of a time series, as a person opens a shared link: the place at two dates the
    archive does not pair, the map showing those dates, results only from elsewhere, and the place's
    timeline."""
    from test_places import SITE_DATES

    store, first = series_store
    with serve(store, tiny_archive.checkpoint, [tiny_archive.world], annotations) as url:
        context = browser.new_context(viewport={"width": 1500, "height": 1100})
        page = context.new_page()
        page.set_default_timeout(SLOW_MS)
        page.goto(f"{url}/Map_query?pair={first}&before={SITE_DATES[0]}&after={SITE_DATES[2]}&elsewhere=1")
        page.get_by_text("Most similar pairs elsewhere").wait_for()
        heading = page.locator("h3", has_text="Query:").first.inner_text()
        assert SITE_DATES[0] in heading and SITE_DATES[2] in heading
        page.get_by_text("This place over time").wait_for()
        page.locator(".js-plotly-plot").first.wait_for()
        page.get_by_text(f"picked place on {SITE_DATES[0]} (before) and {SITE_DATES[2]} (after)").wait_for()
        shown_with_images(page, "— score", 4)
        cards = page.locator("text=/— score/").all_inner_texts()
        assert cards and not any(re.search(r"sitea\S*_r0_c0", c) for c in cards)  # the place itself: never
        frame = page.frame_locator('iframe[title*="st_folium"]').first
        frame.locator("img.leaflet-tile-loaded").first.wait_for()  # the chosen dates' imagery
        page.screenshot(path=str(SHOTS / "map_query_dates.png"), full_page=True)
        context.close()
