"""The one writer of an archive store: build it from a source, add scenes, re-embed it.

Why one owner: an archive is pairs, embeddings, thumbnails and map tiles that must agree. Each
method here is one job under the store's writer lock: the map tiles are drawn from the source's
own reads (`PairSource.map_scenes`: the same bands and the same per-scene stretch its pairs were
embedded and thumbnailed with), then the pairs are embedded and the manifest committed. The CLI,
the demo, the app and ANNEAL write only through `Archive`; a `SearchService` open on the store
notices the new manifest by itself.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from textitsr.data.pairs import PairSource
from textitsr.data.scenes import place_from_names
from textitsr.errors import InputError, StoreError
from textitsr.index.build import BuildConfig, ProgressFn, build_store
from textitsr.index.lock import writer_lock
from textitsr.index.store import Store, read_manifest
from textitsr.index.tiles import (
    TileIndex,
    refuse_known_scenes,
    scene_digest,
    store_scene_paths,
    tile_key,
    update_tiles,
)

#: Hex digits of the scenes' content digest in the ids of pairs added with `Archive.add_scenes`.
PLACE_DIGEST_LEN = 6


class Archive:
    """Writes to the store at `root`; `checkpoint` None means the one its manifest records."""

    def __init__(self, root: Path, checkpoint: Path | None = None) -> None:
        self.root = Path(root)
        self._checkpoint = Path(checkpoint) if checkpoint is not None else None

    @property
    def checkpoint(self) -> Path:
        """The model pairs are embedded with: the one given, else the store's own."""
        if self._checkpoint is not None:
            return self._checkpoint
        manifest = read_manifest(self.root) if self.root.is_dir() else None
        if not manifest or not manifest.get("checkpoint"):
            raise StoreError(f"{self.root}: no store with a recorded checkpoint here; pass the checkpoint")
        path = Path(manifest["checkpoint"])
        return path if path.is_absolute() else (self.root / path).resolve()

    def build(
        self,
        source: PairSource,
        *,
        split: str | None = None,
        scheduler: Any = None,
        config: BuildConfig | None = None,
        progress: bool | ProgressFn = True,
    ) -> Store:
        """Embed `source` into the store (created, resumed or extended) and tile its scenes."""
        with writer_lock(self.root):
            return self._build(source, split=split, scheduler=scheduler, config=config, progress=progress)

    def add_scenes(self, paths: list[Path], progress: bool | ProgressFn = False, **options: Any) -> int:
        """Tile a GeoTIFF scene pair (or series) into pairs, embed them and append them.

        `options` go to the GeoTIFF loader (tile_size, pairing, bands, display, ...). Returns the
        number of pairs added. Scenes whose files all hold content the archive already has are
        refused (InputError): adding them again would only duplicate pairs.
        """
        from textitsr.data.registry import open_source

        paths = [Path(p) for p in paths]
        if len(paths) < 2:
            raise InputError(
                f"add_scenes: expected at least two GeoTIFF scenes of one place, got {len(paths)}"
            )
        for p in paths:
            if not p.is_file():
                raise InputError(f"{p}: scene file not found")
        for name in ("tile_size", "stride"):
            value = options.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
                raise InputError(f"{name}={value!r}: expected a whole number of pixels")
        keys = [tile_key(scene_digest(p)) for p in paths]
        with writer_lock(self.root):
            before = Store.open(self.root)
            refuse_known_scenes(before, keys, [p.name for p in paths])
            # Pair ids carry the scenes' content digest: new scenes whose file names match scenes in
            # the archive (another NAIP tile, another year's download) never collide with their ids.
            place = options.pop("place", None) or place_from_names(paths)
            digest = hashlib.sha256("".join(sorted(keys)).encode()).hexdigest()[:PLACE_DIGEST_LEN]
            source = open_source(paths, kind="geotiff", place=f"{place}-{digest}", **options)
            built = self._build(source, progress=progress)
        return len(built) - len(before)

    def reembed(self, out: Path, embeddings: np.ndarray, *, checkpoint: Path, model: dict[str, Any]) -> Store:
        """A copy of the archive at `out` with new pair embeddings (store order) from `checkpoint`,
        whose card is `model` (ANNEAL: the fine-tuned pair head; text side unchanged)."""
        return Store.open(self.root).with_embeddings(out, embeddings, checkpoint=checkpoint, model=model)

    def refuse_known_scenes(self, keys: list[str], names: list[str]) -> None:
        """InputError when every scene (content keys, `tiles.tile_key`) is in the archive already."""
        refuse_known_scenes(Store.open(self.root), keys, names)

    def tile_missing(self, progress: ProgressFn | None = None) -> TileIndex:
        """Tile the scenes of a store built before map tiles existed (its source is unknown: each
        file's RGB bands, stretched over the whole scene)."""
        with writer_lock(self.root):
            store = Store.open(self.root)
            return self._tile(store, store_scene_paths(store), progress)

    def _build(
        self,
        source: PairSource,
        *,
        split: str | None = None,
        scheduler: Any = None,
        config: BuildConfig | None = None,
        progress: bool | ProgressFn = True,
    ) -> Store:
        """The pairs (embeddings, thumbnails, manifest), then the map tiles of the same reads."""
        store = build_store(self.checkpoint, source, self.root, split=split, scheduler=scheduler,
                            progress=progress, config=config, locked=True)
        self._tile(store, source.map_scenes(), progress if callable(progress) else None)
        return store

    @staticmethod
    def _tile(store: Store, scenes: list[Any], progress: ProgressFn | None) -> TileIndex:
        """Bring the store's map tiles up to date with `scenes` (SceneDisplays, or bare paths)."""
        if scenes:
            update_tiles(store.tiles_dir, scenes, progress)
        return TileIndex.read(store.tiles_dir)
