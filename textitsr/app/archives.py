"""Which archive the pages search: the base one, or the ANNEAL fine-tuned copy.

The choice is persisted in the ANNEAL workspace so every session of the app agrees on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from textitsr.app.config import AppConfig, load_config
from textitsr.errors import InputError, StoreError

BASE = "base"
FINE_TUNED = "fine-tuned"
#: In the ANNEAL workspace: which archive the search pages use ({"archive": "base" | "fine-tuned"}).
ARCHIVE_CHOICE_FILE = "search.json"


@dataclass(frozen=True)
class ArchiveChoice:
    """The store (and model) the search pages query: the base archive, or the ANNEAL re-embedded one.

    `stamp` changes whenever the store is rewritten behind the app's back (every "update model"),
    so the cached service is reopened; `note` says why the fine-tuned one was chosen but not used.
    """

    kind: str
    store: Path
    checkpoint: Path | None = None
    stamp: str = ""
    note: str | None = None

    @property
    def label(self) -> str:
        return "fine-tuned model (ANNEAL)" if self.kind == FINE_TUNED else "base model"


def fine_tuned_store(config: AppConfig) -> Path | None:
    """The store the Annotate page's last "update model" re-embedded, or None when there is none."""
    from textitsr.index.store import is_store

    path = config.annotations_dir / "store"
    return path if is_store(path) else None


def archive_choice(config: AppConfig) -> str:
    """The persisted choice (BASE or FINE_TUNED); BASE when unset or unreadable."""
    try:
        choice = json.loads((config.annotations_dir / ARCHIVE_CHOICE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return BASE
    return FINE_TUNED if isinstance(choice, dict) and choice.get("archive") == FINE_TUNED else BASE


def set_archive_choice(config: AppConfig, kind: str) -> None:
    """Persist which archive the search pages use (shared by every session of this workspace)."""
    from textitsr.atomic import atomic_write_text

    if kind not in (BASE, FINE_TUNED):
        raise InputError(f"archive choice {kind!r}: expected {BASE!r} or {FINE_TUNED!r}")
    atomic_write_text(config.annotations_dir / ARCHIVE_CHOICE_FILE, json.dumps({"archive": kind}))


def _manifest(store: Path) -> dict[str, Any] | None:
    """The store's manifest, or None when there is no readable store there."""
    from textitsr.index.store import read_manifest

    try:
        return read_manifest(store)
    except StoreError:
        return None


def base_archive(config: AppConfig) -> ArchiveChoice:
    return ArchiveChoice(BASE, config.store, config.checkpoint)


def active_archive(config: AppConfig | None = None) -> ArchiveChoice:
    """The archive the search pages use now: the fine-tuned store when chosen and current, else base.

    A fine-tuned store that no longer holds the base archive's pairs (scenes were added since the
    update) is not used: searching it would silently miss the new pairs.
    """
    config = config or load_config()
    base = base_archive(config)
    if archive_choice(config) != FINE_TUNED:
        return base
    tuned = fine_tuned_store(config)
    manifest = _manifest(tuned) if tuned is not None else None
    if tuned is None or manifest is None:
        return replace(base, note="No fine-tuned model yet: update the model on the Annotate page.")
    base_manifest = _manifest(config.store) or {}
    n_base, n_tuned = base_manifest.get("n_pairs"), manifest.get("n_pairs")
    if n_base is not None and n_tuned != n_base:
        return replace(
            base,
            note=f"The fine-tuned archive holds {n_tuned} pairs, the base archive {n_base}; searching the "
            "base archive. Update the model again on the Annotate page.",
        )
    return ArchiveChoice(FINE_TUNED, tuned, None, stamp=str(manifest.get("checkpoint_id", "")))
