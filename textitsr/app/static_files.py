"""Files the browser fetches straight from Streamlit's static serving (./static -> /app/static/).

Streamlit serves only files inside the app's `static/` folder (symlinks leading out of it are
refused), so a store's map tiles are published there as hard links (copies across file systems;
only regular files, never what a symlink in the store points at):
`static/tiles/<store id>/<key>/{z}/{x}/{y}.webp`. Data the map loads by URL (footprints) is written
there under a content-hashed name, so a browser cache never shows stale data.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from textitsr.atomic import atomic_write_text, link_or_copy_file
from textitsr.config import REPO_ROOT

STATIC_DIR = REPO_ROOT / "static"
STATIC_URL = "/app/static"
PUBLISHED = "tiles"


def store_slot(store: Path) -> str:
    """Folder name of one store's published files (stable for a store path)."""
    return hashlib.sha1(str(Path(store).resolve()).encode()).hexdigest()[:12]


def publish_tree(src: Path, store: Path, static_dir: Path = STATIC_DIR) -> str:
    """Mirror the folder `src` (a store's tiles) under static/; returns its URL. Existing files stay."""
    slot = static_dir / PUBLISHED / store_slot(store)
    src = Path(src)
    if src.is_dir():
        for folder, _dirs, files in os.walk(src):
            rel = Path(folder).relative_to(src)
            (slot / rel).mkdir(parents=True, exist_ok=True)
            for name in files:
                target = slot / rel / name
                if target.exists():
                    continue
                link_or_copy_file(Path(folder) / name, target)  # skips links, FIFOs, devices
    return f"{STATIC_URL}/{PUBLISHED}/{store_slot(store)}"


def publish_json(data: Any, store: Path, stem: str, static_dir: Path = STATIC_DIR) -> str:
    """Write `data` as JSON under static/ with a content-hashed name; returns its URL."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    name = f"{stem}-{hashlib.sha1(text.encode()).hexdigest()[:12]}.json"
    slot = static_dir / PUBLISHED / store_slot(store)
    if not (slot / name).is_file():
        atomic_write_text(slot / name, text)
    return f"{STATIC_URL}/{PUBLISHED}/{store_slot(store)}/{name}"
