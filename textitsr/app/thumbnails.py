"""Pairs' thumbnails as JPEG bytes, decoded and encoded once per process (result grids repeat them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from textitsr.service import SearchService


def _cache_data(**kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    import streamlit as st

    return st.cache_data(**kwargs)


@_cache_data(show_spinner=False, max_entries=4096)
def _thumbnail_jpegs(store: str, n_pairs: int, pair_id: str, _service: SearchService) -> tuple[bytes, bytes]:
    """`store` and `n_pairs` only key the cache (another archive, or scenes added)."""
    from textitsr.app.figures import jpeg_bytes

    before, after = _service.thumbnails(pair_id)
    return jpeg_bytes(before), jpeg_bytes(after)


def thumbnail_jpegs(service: SearchService, pair_id: str) -> tuple[bytes, bytes]:
    """A pair's (before, after) thumbnails as JPEG bytes, decoded and encoded once per process.

    Result grids show the same pairs again and again; the same bytes also get the same media URL,
    so the browser shows them from its cache. StoreError when the pair has no thumbnails.
    """
    return _thumbnail_jpegs(str(service.store_root), len(service), pair_id, service)
