"""Streamlit building blocks the pages share: page set-up, error boxes, metrics, result cards."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from textitsr.app.config import APP_ICON, APP_TITLE
from textitsr.errors import TextITSRError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from textitsr.service import ArchiveStats, CaptionHit, PairHit, SearchService

log = logging.getLogger(__name__)

INSPECT_KEY = "inspect_pair"
INSPECTOR_PAGE = "pages/3_Inspector.py"


def page_setup(title: str | None = None) -> None:
    """Page config every page sets itself: a page opened directly by URL before the home page
    has run (Streamlit then runs pages/ scripts without app.py) looks the same."""
    import streamlit as st

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
        st.error(f"{what}: {err}")
    except Exception as err:  # noqa: BLE001 - never show a traceback to the analyst
        log.exception("%s failed", what)
        st.error(f"{what} failed unexpectedly ({type(err).__name__}: {err}).")


def open_inspector(pair_id: str) -> None:
    """Go to the inspector page showing `pair_id` (session state + query param survive reloads)."""
    import streamlit as st

    st.session_state[INSPECT_KEY] = pair_id
    st.query_params["pair"] = pair_id
    try:
        st.switch_page(INSPECTOR_PAGE)
    except st.errors.StreamlitAPIException:
        st.info(f"Open the Inspector page to see {pair_id}.")


def hit_caption(hit: PairHit) -> str:
    """One line under a result: dates and (when known) the change type."""
    dates = " → ".join(d for d in hit.dates if d) or "dates unknown"
    kind = f" · {hit.change_type.replace('_', ' ')}" if hit.change_type else ""
    return f"{dates}{kind}"


def sentence_table(sentences: Sequence[CaptionHit]) -> None:
    """The sentences that best describe a pair, with their scores (Map query and Inspector)."""
    import streamlit as st

    if not sentences:
        st.caption("The archive holds no sentences.")
        return
    st.dataframe(
        [{"rank": c.rank, "score": round(c.score, 3), "sentence": c.text} for c in sentences],
        hide_index=True, width="stretch",
    )


def results_grid(service: SearchService, hits: Sequence[PairHit], key: str, columns: int = 2) -> None:
    """Before/after thumbnails of each hit with rank, score and an Inspect button."""
    import streamlit as st

    for start in range(0, len(hits), columns):
        cols = st.columns(columns, border=True)
        for col, hit in zip(cols, hits[start : start + columns], strict=False):
            with col:
                st.markdown(f"**#{hit.rank}** `{hit.pair_id}` — score **{hit.score:.3f}**")
                try:
                    before, after = service.thumbnails(hit.pair_id)
                    left, right = st.columns(2)
                    left.image(before, caption="before", width="stretch")
                    right.image(after, caption="after", width="stretch")
                except TextITSRError as err:
                    st.warning(f"thumbnails unavailable: {err}")
                st.caption(hit_caption(hit))
                if hit.captions:
                    st.caption(f"“{hit.captions[0]}”")
                if st.button("Inspect", key=f"{key}-inspect-{hit.pair_id}"):
                    open_inspector(hit.pair_id)
