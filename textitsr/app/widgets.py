"""Streamlit building blocks the pages share: page set-up, error boxes, metrics, result cards."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from textitsr.app.config import APP_ICON, APP_TITLE
from textitsr.app.footprints import Bounds
from textitsr.errors import TextITSRError
from textitsr.escape import markdown_code, markdown_text

if TYPE_CHECKING:  # pragma: no cover - typing only
    import folium
    import numpy as np

    from textitsr.app.maps import MapLayers
    from textitsr.service import ArchiveStats, CaptionHit, PairHit, ScoreMap, SearchService

log = logging.getLogger(__name__)

#: One-shot request from another page: the pair the Inspector should show next.
INSPECT_KEY = "inspect_pair"
#: A pair whose Inspect button was pressed; the next run switches pages before drawing anything.
INSPECT_REQUEST_KEY = "inspect-request"
#: The Inspector's Pair id box (a stable key, so every id typed in it counts; its generation
#: changes only when another page or button sends a pair).
INSPECT_BOX_KEY = "inspector-id"
INSPECT_BOX_GENERATION = "inspector-id-generation"
#: The pair the Inspector showed last (survives visits to other pages, unlike the box's state).
LAST_INSPECTED_KEY = "inspector-last"
INSPECTOR_PAGE = "pages/3_Inspector.py"


def page_setup(title: str | None = None) -> None:
    """Page config every page sets itself: a page opened directly by URL before the home page
    has run (Streamlit then runs pages/ scripts without app.py) looks the same."""
    import streamlit as st

    requested = st.session_state.pop(INSPECT_REQUEST_KEY, None)
    if requested:  # switch before even the page config: each message makes the browser redraw this page
        open_inspector(requested)
    st.set_page_config(page_title=f"{title} · textitsr" if title else APP_TITLE, page_icon=APP_ICON,
                       layout="wide")


def archive_metrics(stats: ArchiveStats) -> None:
    """The archive's headline numbers in one row (home page and Archive page show the same)."""
    import streamlit as st

    cols = st.columns(5)
    cols[0].metric("Image pairs", f"{stats.n_pairs:,}")
    cols[1].metric("Captions", f"{stats.n_captions:,}")
    cols[2].metric("Sources", len(stats.sources))
    cols[3].metric("First date", stats.date_range[0] or "?")
    cols[4].metric("Last date", stats.date_range[1] or "?")


@contextlib.contextmanager
def show_errors(what: str) -> Iterator[None]:
    """Run a block; a library error becomes one st.error line, anything else a short message."""
    import streamlit as st

    try:
        yield
    except TextITSRError as err:
        st.error(markdown_text(f"{what}: {err}"))
    except Exception as err:  # noqa: BLE001 - never show a traceback to the analyst
        log.exception("%s failed", what)
        st.error(markdown_text(f"{what} failed unexpectedly ({type(err).__name__}: {err})."))


def open_inspector(pair_id: str) -> None:
    """Go to the inspector page showing `pair_id` (session state + query param survive reloads)."""
    import streamlit as st

    st.session_state[INSPECT_KEY] = pair_id
    try:
        st.switch_page(INSPECTOR_PAGE, query_params={"pair": pair_id})
    except st.errors.StreamlitAPIException:
        st.info(f"Open the Inspector page to see {markdown_code(pair_id)}.")


def request_inspector(pair_id: str) -> None:
    """Inspect buttons' callback: the rerun it starts switches to the Inspector in `page_setup`, so
    the page with the button is not drawn again first (a whole results page: ~0.8 s)."""
    import streamlit as st

    st.session_state[INSPECT_REQUEST_KEY] = pair_id


def inspector_pair_box(default: Callable[[], str | None] | None = None) -> str:
    """The Inspector's Pair id box; returns the id to show ('' when none).

    The box starts from a pair sent by another page (`open_inspector`), else the URL's ?pair=, the
    pair shown last, or `default()` (asked only then), always as the widget's *default* value:
    Streamlit sends that with every run, whereas a value set through session state is sent once,
    and when that run was superseded (opening ?pair= directly, Inspect on the Inspector itself)
    the browser kept an empty or old box while the server showed the new pair. A sent pair
    therefore starts a new box (a new key generation) instead of overwriting the old one. Typing
    keeps the key: a key that followed the shown pair made Streamlit drop every second id typed into it.
    """
    import streamlit as st

    sent = st.session_state.pop(INSPECT_KEY, None)
    if sent:
        st.session_state[INSPECT_BOX_GENERATION] = st.session_state.get(INSPECT_BOX_GENERATION, 0) + 1
    start = sent or st.query_params.get("pair") or st.session_state.get(LAST_INSPECTED_KEY)
    if not start and default is not None:
        start = default()
    key = f"{INSPECT_BOX_KEY}-{st.session_state.get(INSPECT_BOX_GENERATION, 0)}"
    pair_id = st.text_input("Pair id", value=str(start or ""), key=key,
                            help="Results on the search pages open here; or paste any pair id.").strip()
    st.session_state[LAST_INSPECTED_KEY] = pair_id
    if pair_id:
        st.query_params["pair"] = pair_id
    return pair_id


def footprint_minimap(
    bounds: Bounds, pair_id: str, layers: MapLayers, *, basemap: str = "osm", height: int = 260
) -> None:
    """A small map locating one pair's footprint (outlined red) on the after imagery around it.

    The imagery map is rendered once per archive; each pair only moves it and outlines its box.
    """
    from textitsr.app.maps import padded, picks_layer

    _moved_imagery_map(layers, padded(bounds, 2.0), picks_layer({pair_id: bounds}, pair_id, ()),
                       key="inspector-minimap", basemap=basemap, height=height)


def results_map(
    hits: Sequence[PairHit], layers: MapLayers, *, basemap: str = "osm", height: int = 320
) -> None:
    """The results' footprints numbered by rank on the archive's after imagery (nothing when none
    has a footprint); the imagery map is rendered once per archive and moved to the results."""
    from textitsr.app.maps import picks_layer, results_view

    found = results_view(hits)
    if found is None:
        return
    boxes, view = found
    _moved_imagery_map(layers, view, picks_layer(boxes, None, [h.pair_id for h in hits]),
                       key="results_map", basemap=basemap, height=height)


#: Most tiles the where-map colours (the best-scoring ones): bounds what one search sends the browser.
WHERE_MAP_TILES = 1000


def where_map(
    score_map: ScoreMap, layers: MapLayers, *, top: int, basemap: str = "osm", height: int = 420
) -> None:
    """The query's score on the archive's tiles as a heat map (hot: the described change), the `top`
    results numbered on top; opened on the hottest tenth of the coloured tiles."""
    from textitsr.app.footprints import union
    from textitsr.app.maps import heat_layer, padded

    if not score_map.pair_ids:
        return
    hottest = score_map.bounds[: max(1, len(score_map.pair_ids) // 10)]
    view = padded(union([tuple(float(v) for v in b) for b in hottest]), 0.2)
    _moved_imagery_map(layers, view, heat_layer(score_map, top), key="where_map", basemap=basemap,
                       height=height)


def _moved_imagery_map(
    layers: MapLayers, view: Bounds, picks: folium.FeatureGroup, *, key: str, basemap: str, height: int
) -> None:
    """A small square map: the archive's after imagery (rendered once per archive and `key`),
    moved to `view` with `picks` drawn on top."""
    from textitsr.app.map_widget import show_map
    from textitsr.app.maps import imagery_map, view_of

    center, zoom = view_of(view, height, height)
    show_map((key, layers.signature, basemap, height),
             lambda: imagery_map(layers.areas, layers.tiles_url, layers.footprints, basemap=basemap,
                                 height=height),
             key=key, height=height, picks=picks, center=center, zoom=zoom)


#: Longest query echoed back in full; longer ones are cut with an ellipsis.
ECHO_CHARS = 80


def plural(n: int, word: str, words: str | None = None) -> str:
    """'1 pair', '2 pairs' (thousands separated)."""
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


def shorten(text: str, limit: int = ECHO_CHARS) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def example_buttons(examples: Sequence[str], on_click: Callable[[str], None]) -> None:
    """One button per example query, each as wide as its text, wrapping onto new lines as needed."""
    import streamlit as st

    with st.container(horizontal=True, gap="small"):
        for example in examples:
            st.button(example, key=f"example-{example}", on_click=on_click, args=(example,), width="content")


def date_summary(dates: Mapping[str, int], shown: int = 12) -> str:
    """'2018-06-01 (400 pairs), ...' of the archive's acquisition dates, the first `shown` of them."""
    items = [f"{d} ({plural(n, 'pair')})" for d, n in sorted(dates.items())]
    more = f", … and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


def agreement_note(metrics: Mapping[str, float]) -> str:
    """How well the updated model agrees with answers it was not trained on (or why it is unknown)."""
    from textitsr.active.rounds import MIN_HELDOUT_LABELS

    if "heldout_agreement" in metrics:
        return (f"It agrees with {metrics['heldout_agreement']:.0f}% of "
                f"{plural(int(metrics.get('n_heldout', 0)), 'answer')} held out from training.")
    return (f"Too few answers to check agreement on held-out ones (needs {MIN_HELDOUT_LABELS}, "
            "with both similar and dissimilar among them).")


def hit_caption(hit: PairHit) -> str:
    """One line under a result: dates and (when known) the change type."""
    shown = [d[:4] if d and p == "year" else d for d, p in zip(hit.dates, hit.date_precision, strict=True)]
    dates = " → ".join(d for d in shown if d) or "dates unknown"
    kind = f" · {hit.change_type.replace('_', ' ')}" if hit.change_type else ""
    return f"{dates}{kind}"


def card_text(hit: PairHit) -> str:
    """A result card's Markdown: rank, id and score, then small grey lines with the dates (and change
    type) and the pair's first caption."""
    lines = [f"**#{hit.rank}** {markdown_code(hit.pair_id)} — score **{hit.score:.3f}**",
             f":small[:gray[{markdown_text(hit_caption(hit))}]]"]
    if hit.captions:
        lines.append(f":small[:gray[{markdown_text(f'“{hit.captions[0]}”')}]]")
    return "  \n".join(lines)


def sentence_table(sentences: Sequence[CaptionHit]) -> None:
    """The sentences that best describe a pair, with their scores (Map query and Inspector)."""
    import streamlit as st

    if not sentences:
        st.caption("The archive holds no sentences.")
        return
    # A static table wraps long sentences (a dataframe cell would cut them off).
    st.table([{"rank": c.rank, "score": f"{c.score:.3f}", "confidence": confidence_label(c.confidence),
               "sentence": c.text} for c in sentences], hide_index=True)
    st.caption("Confidence: the share of the archive's own captions that score lower with the pair "
               "they describe. Low: the archive has no sentence that fits this pair well.")


def confidence_label(confidence: float | None) -> str:
    """'high (83%)', 'medium (40%)', 'low (4%)' or '—' for a describing sentence's confidence."""
    if confidence is None:
        return "—"
    word = "high" if confidence >= 0.5 else "medium" if confidence >= 0.1 else "low"
    return f"{word} ({confidence * 100:.0f}%)"


def before_after(service: SearchService, pair_id: str, captions: tuple[str, str] = ("before", "after")
                 ) -> None:
    """A pair's before and after thumbnails side by side (JPEG: a tenth of PNG's bytes to send)."""

    from textitsr.app.thumbnails import thumbnail_jpegs

    _side_by_side(*thumbnail_jpegs(service, pair_id), captions)


def before_after_images(before: np.ndarray, after: np.ndarray, captions: tuple[str, str]) -> None:
    """Two images side by side (a query made of two dates the archive does not pair)."""
    from textitsr.app.figures import jpeg_bytes

    _side_by_side(jpeg_bytes(before), jpeg_bytes(after), captions)


def _side_by_side(before: bytes, after: bytes, captions: tuple[str, str]) -> None:
    import streamlit as st

    left, right = st.columns(2)
    left.image(before, caption=captions[0], width="stretch")
    right.image(after, caption=captions[1], width="stretch")


def index_of(options: Sequence[str], value: str | None, default: int = 0) -> int:
    """Position of `value` among a select box's `options` (`default` when it is not one of them)."""
    return list(options).index(value) if value in options else min(default, max(len(options) - 1, 0))


def results_grid(service: SearchService, hits: Sequence[PairHit], key: str, columns: int = 2) -> None:
    """Before/after thumbnails of each hit with rank, score and an Inspect button."""
    import streamlit as st

    for start in range(0, len(hits), columns):
        cols = st.columns(columns)  # a short last row leaves its spare columns empty, not empty cards
        for col, hit in zip(cols, hits[start : start + columns], strict=False):
            with col, st.container(border=True):
                # The card's text is one element, not three: the browser draws every element of a
                # results page again on each search, and the cards are most of them.
                st.markdown(card_text(hit))
                try:
                    before_after(service, hit.pair_id)
                except TextITSRError as err:
                    st.warning(f"thumbnails unavailable: {markdown_text(err)}")
                st.button("Inspect", key=f"{key}-inspect-{hit.pair_id}", on_click=request_inspector,
                          args=(hit.pair_id,))
