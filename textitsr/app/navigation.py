"""The pages/ scripts as st.navigation entries, in number order (new pages show up by themselves)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PageEntry:
    """One page script of the app, as st.navigation shows it."""

    path: Path
    title: str
    url_path: str
    icon: str | None = None


PAGE_ICONS = {
    "Text search": ":material/search:",
    "Map query": ":material/map:",
    "Inspector": ":material/compare:",
    "Archive": ":material/inventory_2:",
    "Annotate": ":material/label:",
}
_PAGE_NAME = re.compile(r"^(\d+)_(.+)$")


def discover_pages(pages_dir: Path) -> list[PageEntry]:
    """pages/<n>_<Title_words>.py scripts in number order, so new pages (e.g. Annotate) show up."""
    entries: list[tuple[int, str, PageEntry]] = []
    for path in pages_dir.glob("*.py"):
        if path.name.startswith("_"):
            continue
        match = _PAGE_NAME.match(path.stem)
        order, words = (int(match.group(1)), match.group(2)) if match else (10**6, path.stem)
        title = words.replace("_", " ").strip()
        title = title[:1].upper() + title[1:]
        # Same URL Streamlit gives a pages/ script ("Text_search"), so a first load of /Text_search
        # resolves before st.navigation has run (otherwise the browser shows "Page not found").
        url_path = re.sub(r"[_ ]+", "_", words).strip("_")
        entries.append((order, title, PageEntry(path, title, url_path, PAGE_ICONS.get(title))))
    return [e for _, _, e in sorted(entries, key=lambda t: (t[0], t[1]))]
