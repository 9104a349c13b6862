"""The `SearchService` of each archive, opened once per server process and shared by all sessions.

Which archive that is lives in `archives`; the pages reach everything the archive holds through the
service this module hands them (`service_or_stop`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textitsr.app.archives import ArchiveChoice, active_archive, base_archive
from textitsr.app.config import ENV_CHECKPOINT, ENV_STORE, AppConfig, load_config
from textitsr.errors import TextITSRError
from textitsr.escape import markdown_code, markdown_text

if TYPE_CHECKING:  # pragma: no cover - typing only
    from textitsr.service import SearchService

log = logging.getLogger(__name__)


def _cache_resource(**kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    import streamlit as st

    return st.cache_resource(**kwargs)


@_cache_resource(show_spinner="Loading the model and the archive (once per server process)...",
                 max_entries=4)
def _open_service(store: str, checkpoint: str | None, stamp: str = "") -> SearchService:
    """`stamp` only keys the cache (a re-embedded store at the same path is opened afresh).

    Text side only: the pages query with sentences and with pairs already in the archive (their
    stored embeddings), never with new images, so the image backbone need not be loaded; adding
    scenes and ANNEAL load the full model from the checkpoint themselves.
    """
    from textitsr.service import SearchService

    return SearchService.open(Path(store), Path(checkpoint) if checkpoint else None, text_only=True)


def get_service(config: AppConfig | None = None, *, archive: ArchiveChoice | None = None) -> SearchService:
    """The process-wide SearchService of `archive` (default: the base one), shared by sessions."""
    config = config or load_config()
    archive = archive or base_archive(config)
    return _open_service(str(archive.store), str(archive.checkpoint) if archive.checkpoint else None,
                         archive.stamp)


def get_base_service(config: AppConfig | None = None) -> SearchService:
    """The base archive's service: where scenes are added and ANNEAL takes its items from."""
    config = config or load_config()
    return get_service(config, archive=base_archive(config))


def clear_service_cache() -> None:
    """Forget the loaded service (after the archive changed on disk, e.g. scenes were added)."""
    _open_service.clear()


def service_or_stop(*, base: bool = False) -> SearchService:
    """The active archive's service (the base one with `base`), or a clear error and the page stops.

    Also shows in the sidebar which archive and model the search pages use.
    """
    import streamlit as st

    try:
        config = load_config()
        archive = active_archive(config, st.session_state)
        st.sidebar.caption(f"Searching with the **{archive.label}**  \n{markdown_code(archive.store)}")
        if archive.note:
            st.sidebar.warning(markdown_text(archive.note))
        return get_service(config, archive=base_archive(config) if base else archive)
    except TextITSRError as err:
        st.error(markdown_text(f"Could not open the archive: {err}"))
        st.info(
            "Run `textitsr demo` (or `make run`) to build the demo archive, or point the app at "
            f"another store with {ENV_STORE}=/path/to/store (and {ENV_CHECKPOINT} if needed)."
        )
        st.stop()
    except Exception as err:  # noqa: BLE001 - the page must show a message, never a traceback
        log.exception("opening the search service failed")
        st.error(markdown_text(f"Could not open the archive ({type(err).__name__}: {err})."))
        st.stop()
    raise AssertionError("unreachable")  # st.stop() raises
