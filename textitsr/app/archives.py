"""Which archive the pages search: the base one, or the ANNEAL fine-tuned copy.

The choice belongs to one browser session (Streamlit's session state): one analyst switching to the
fine-tuned model never changes what another analyst's searches rank by.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from textitsr.app.config import AppConfig, load_config
from textitsr.errors import InputError, StoreError

BASE = "base"
FINE_TUNED = "fine-tuned"
#: Session-state key of the archive this session's search pages use (BASE or FINE_TUNED).
CHOICE_KEY = "archive_choice"

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


def archive_choice(session: Mapping[str, Any] | None) -> str:
    """This session's choice (BASE or FINE_TUNED); BASE when it made none."""
    return FINE_TUNED if session is not None and session.get(CHOICE_KEY) == FINE_TUNED else BASE


def set_archive_choice(session: MutableMapping[str, Any], kind: str) -> None:
    """Choose which archive this session's search pages use (no other session is affected)."""
    if kind not in (BASE, FINE_TUNED):
        raise InputError(f"archive choice {kind!r}: expected {BASE!r} or {FINE_TUNED!r}")
    session[CHOICE_KEY] = kind


def _manifest(store: Path) -> dict[str, Any] | None:
    """The store's manifest, or None when there is no readable store there."""
    from textitsr.index.store import read_manifest

    try:
        return read_manifest(store)
    except StoreError:
        return None


def base_archive(config: AppConfig) -> ArchiveChoice:
    return ArchiveChoice(BASE, config.store, config.checkpoint)


def active_archive(config: AppConfig | None = None, session: Mapping[str, Any] | None = None
                   ) -> ArchiveChoice:
    """The archive the search pages use now: the fine-tuned store when chosen and current, else base.

    A fine-tuned store that no longer holds the base archive's pairs (scenes were added since the
    update) is not used: searching it would silently miss the new pairs.
    """
    config = config or load_config()
    base = base_archive(config)
    if archive_choice(session) != FINE_TUNED:
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
