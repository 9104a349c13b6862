"""textitsr app: find bitemporal image pairs by describing a change, or by pointing at the map.

Run with `textitsr demo` (builds the demo archive first) or `textitsr serve` /
`streamlit run app.py`. The archive is chosen with TEXTITSR_STORE / TEXTITSR_CHECKPOINT; see
textitsr/app/. Every page under pages/ (N_Title.py) is picked up by the navigation.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from textitsr.app import navigation, services, widgets

widgets.page_setup()


def home() -> None:
    """Landing page: what the archive holds and where to go."""
    st.title("textitsr — find changes by describing them")
    st.markdown(
        "Search an archive of **bitemporal image pairs** (the same place at two dates) with a sentence "
        "like *“many new buildings were built”*, or pick a tile on the map to find similar changes and "
        "the sentences that describe it best."
    )
    service = services.service_or_stop()
    with widgets.show_errors("Reading archive statistics"):
        stats = service.stats()
        widgets.archive_metrics(stats)
    st.subheader("Pages")
    for page in PAGES:
        st.page_link(page)


PAGES = [
    st.Page(f"pages/{e.path.name}", title=e.title, icon=e.icon, url_path=e.url_path)
    for e in navigation.discover_pages(Path(__file__).parent / "pages")
]
navigation = st.navigation([st.Page(home, title="Home", icon=":material/home:", default=True), *PAGES])
navigation.run()
