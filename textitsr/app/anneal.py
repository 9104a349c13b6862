"""The ANNEAL session the Annotate page drives (the `textitsr.active.rounds` facade, app side)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textitsr.active.anneal import STRATEGIES
from textitsr.app.config import AppConfig

if TYPE_CHECKING:  # pragma: no cover - typing only
    from textitsr.active.rounds import AnnealSession

__all__ = ["STRATEGIES", "anneal_session"]


def anneal_session(config: AppConfig, strategy: str, batch: int) -> AnnealSession:
    """The ANNEAL session over the base archive, kept in the app's annotations workspace."""
    from textitsr.active.anneal import SelectionConfig
    from textitsr.active.rounds import AnnealSession

    return AnnealSession(config.store, config.annotations_dir, config.checkpoint,
                         SelectionConfig(strategy=strategy, batch=batch))
