"""Embed a pair source into a store: reader -> encoder -> shard writer, locally or on Dask.

The source is cut into contiguous slices of `shard_size` pairs; each slice becomes one shard, made
by the same function (`embed_shard`, the runner) whether it runs in this process (`_build_local`)
or on a Dask worker (`_build_distributed`): clip-retrieval's runner / distributor split. Pairs are
read and encoded `batch_size` at a time and a shard holds only its own rows, so peak memory is one
shard's thumbnails + embeddings whatever the archive size. A thread reads the next batch (pixels,
thumbnails, statistics) while the model embeds the current one; the backbone precision is chosen
once per build (`embedding.precision`). Each shard's pairs are one archive for the archive-relative
change reading (`embedding.archive_change`), split by sensor or dataset where the source names them
(`BitemporalPair.archive`). Shards listed in the manifest are
skipped, so an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textitsr.atomic import remove_stale_temps
from textitsr.data.describe import change_stats
from textitsr.data.pairs import BitemporalPair, PairSource, check_split
from textitsr.embedding.archive_change import (
    ARCHIVE_CHANGE_WEIGHT,
    archive_keys,
    archive_sizes,
    calibrate_change,
    pixel_change,
    relative_change,
    type_slice,
)
from textitsr.embedding.encode import (
    backbone_precision,
    check_backbone_runtime,
    compile_image_backbone,
    encode_rgb_pairs,
    encode_texts,
    load_model,
    to_numpy,
)
from textitsr.embedding.image_cache import (
    DEFAULT_MAX_BYTES,
    ImageFeatureCache,
    cached_pair_features,
    image_key,
)
from textitsr.embedding.precision import PROBE_PAIRS, check_precision, choose_precision
from textitsr.errors import InputError
from textitsr.index.lock import writer_lock
from textitsr.index.shards import (
    DEFAULT_THUMB_SIZE,
    SHARDS,
    ShardData,
    encode_thumbnail,
    pair_row,
    write_shard,
)
from textitsr.index.store import MANIFEST, Store, discard_empty_store
from textitsr.models.checkpoint import model_card

#: progress(fraction done in [0, 1], message)
ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True)
class BuildConfig:
    """How a build embeds and writes (defaults keep a worker well under 2 GB)."""

    batch_size: int = 32
    #: Pairs per shard: one shard's PNG thumbnails (~100-200 KB a pair) are held in memory.
    shard_size: int = 512
    dtype: str = "float16"
    thumb_size: int = DEFAULT_THUMB_SIZE
    device: str = "cpu"
    #: Reuse / build the training feature cache here (skips the backbones when it is valid).
    feature_cache: Path | None = None
    #: Backbone precision: fp32, bf16 autocast, or auto (bf16 where the device has it natively and
    #: a probe of the source's first pairs stays within cosine 0.99 of fp32).
    precision: str = "auto"
    #: What an fp32 CPU build runs the frozen image backbone on: auto (ONNX Runtime when its probe
    #: matches PyTorch, else TorchScript), onnx, torchscript or eager (`encode.compile_image_backbone`).
    backbone_runtime: str = "auto"
    #: Read the next batch on a thread while the model embeds the current one.
    prefetch: bool = True
    #: Bytes of backbone features kept per build so an image shared by several pairs (a GeoTIFF
    #: series' middle dates) goes through the backbone once (`embedding.image_cache`); 0: off.
    image_cache_bytes: int = DEFAULT_MAX_BYTES
    #: How far a pair's pixel change relative to its shard moves its change-type reading
    #: (`embedding.archive_change`); 0: each pair read on its own.
    archive_change_weight: float = ARCHIVE_CHANGE_WEIGHT


def _change_stats(pair: BitemporalPair) -> dict[str, float] | None:
    """Spectral change statistics of a pair, or None where they cannot be computed (optional metadata)."""
    try:
        return change_stats(pair)
    except Exception:  # noqa: BLE001 - statistics are optional metadata, never worth a failed build
        return None


def _batches(pairs: Iterable[BitemporalPair], size: int) -> Iterator[list[BitemporalPair]]:
    it = iter(pairs)
    while batch := list(itertools.islice(it, size)):
        yield batch


@dataclass
class _ReadBatch:
    """One batch of pairs with everything but the embeddings: pixels, metadata rows, thumbnails."""

    pairs: list[BitemporalPair]
    before: list[np.ndarray]
    after: list[np.ndarray]
    rows: list[dict[str, Any]]
    thumbs_before: list[bytes]
    thumbs_after: list[bytes]
    #: `image_key` of each before / after image (None when the build keeps no image cache).
    keys: tuple[list[bytes], list[bytes]] | None = None
    #: Mean |after - before| of each pair's display images (`embedding.archive_change.pixel_change`).
    changes: list[float] = field(default_factory=list)


def _read_batch(batch: list[BitemporalPair], thumb_size: int, keys: bool = False) -> _ReadBatch:
    before = [p.rgb("before") for p in batch]
    after = [p.rgb("after") for p in batch]
    return _ReadBatch(
        batch,
        before,
        after,
        [pair_row(p, _change_stats(p)) for p in batch],
        [encode_thumbnail(b, thumb_size) for b in before],
        [encode_thumbnail(a, thumb_size) for a in after],
        ([image_key(b) for b in before], [image_key(a) for a in after]) if keys else None,
        [pixel_change(b, a) for b, a in zip(before, after, strict=True)],
    )


def _with_pixel_change(row: dict[str, Any], change: float, relative: float, size: int) -> dict[str, Any]:
    """`row` whose change statistics also hold its pixel change and that change relative to its
    archive in the shard, with how many pairs that archive had (where it had enough to say)."""
    if not np.isfinite(change):
        return row
    stats = json.loads(row["change_stats"]) if row["change_stats"] else {}
    stats["pixel_change"] = change
    if np.isfinite(relative):
        stats["relative_pixel_change"] = relative
        stats["archive_pairs"] = int(size)
    return {**row, "change_stats": json.dumps(stats)}


def _read_batches(pairs: Iterable[BitemporalPair], config: BuildConfig, keys: bool) -> Iterator[_ReadBatch]:
    """Batches whose pixels, thumbnails and statistics are prepared one batch ahead on a thread,
    overlapping the model's work on the current one (`config.prefetch`), or inline.

    The source itself is iterated here, in the caller's thread: loaders hold per-thread state
    across pairs (rasterio's GDAL environment), so only the prepared pairs cross to the thread.
    """
    batches = _batches(pairs, config.batch_size)
    if not config.prefetch:
        yield from (_read_batch(b, config.thumb_size, keys) for b in batches)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="textitsr-read") as pool:
        pending = None
        for batch in batches:
            ahead = pool.submit(_read_batch, batch, config.thumb_size, keys)
            if pending is not None:
                yield pending.result()
            pending = ahead
        if pending is not None:
            yield pending.result()


def resolve_precision(model: Any, source: PairSource, split: str | None, config: BuildConfig) -> BuildConfig:
    """`config` with "auto" precision replaced by the choice for this model and source (made once
    per build, so Dask workers do not each re-run the accuracy check)."""
    check_precision(config.precision)
    if config.precision != "auto":
        return config

    def probe() -> tuple[list[np.ndarray], list[np.ndarray]]:
        pairs = list(itertools.islice(source.pairs(split), PROBE_PAIRS))
        return [p.rgb("before") for p in pairs], [p.rgb("after") for p in pairs]

    choice = choose_precision(model, "auto", probe, config.backbone_runtime)
    return replace(config, precision=choice.precision)


def embed_pairs(
    model: Any,
    pairs: Iterable[BitemporalPair],
    config: BuildConfig = BuildConfig(),
    on_batch: Callable[[int], None] | None = None,
    cache: Any | None = None,
    images: ImageFeatureCache | None = None,
) -> ShardData:
    """Embed pairs batch by batch into one in-memory shard (metadata, embeddings, thumbnails, captions).

    `images`: backbone features of images already embedded in this build (a fresh cache of
    `config.image_cache_bytes` when None)."""
    check_backbone_runtime(config.backbone_runtime)
    precision = check_precision(config.precision)
    if precision == "auto":  # a caller that did not resolve it: no probe, so the safe choice
        precision = choose_precision(model, "auto", None).precision
    if precision == "fp32":
        compile_image_backbone(model, config.backbone_runtime)
    rows: list[dict[str, Any]] = []
    embs: list[np.ndarray] = []
    tb: list[bytes] = []
    ta: list[bytes] = []
    cap_texts: list[str] = []
    cap_ids: list[str] = []
    changes: list[float] = []
    archives: list[str | None] = []
    cache_rows = {pid: i for i, pid in enumerate(cache.pair_ids)} if cache is not None else {}
    if not hasattr(model, "backbone_image_features") or config.image_cache_bytes <= 0:
        images = None
    elif images is None:
        images = ImageFeatureCache(config.image_cache_bytes)
    tokens = bool(getattr(model, "uses_tokens", False))
    with backbone_precision(model, precision):
        for read in _read_batches(pairs, config, keys=images is not None):
            batch = read.pairs
            if cache is not None and all(p.pair_id in cache_rows for p in batch):
                feats = cache.pair_features(np.array([cache_rows[p.pair_id] for p in batch]), tokens=tokens)
                with torch.inference_mode():
                    embs.append(to_numpy(model.embed_pair_features(feats)))
            elif images is not None:
                feats = cached_pair_features(model, read.before, read.after, images, read.keys, tokens)
                with torch.inference_mode():
                    embs.append(to_numpy(model.embed_pair_features(feats)))
            else:
                embs.append(encode_rgb_pairs(model, read.before, read.after))
            rows.extend(read.rows)
            changes.extend(read.changes)
            archives.extend(p.archive for p in batch)
            tb.extend(read.thumbs_before)
            ta.extend(read.thumbs_after)
            for p in batch:
                for c in p.captions:
                    if str(c).strip():
                        cap_texts.append(str(c))
                        cap_ids.append(p.pair_id)
            if on_batch is not None:
                on_batch(len(batch))
        dim = int(model.config.embed_dim) if hasattr(model, "config") else (embs[0].shape[1] if embs else 0)
        pair_emb = np.concatenate(embs) if embs else np.zeros((0, dim), np.float32)
        magnitudes, keys = np.array(changes), archive_keys(archives)
        relative = relative_change(magnitudes, keys)
        pair_emb = calibrate_change(pair_emb, relative, type_slice(model), config.archive_change_weight)
        sizes = archive_sizes(magnitudes, keys)
        rows = [_with_pixel_change(*row) for row in zip(rows, changes, relative, sizes, strict=True)]
        cap_emb = _caption_embeddings(model, cap_texts, pair_emb.shape[1], precision)
    return ShardData(rows, pair_emb, tb, ta, cap_texts, cap_ids, cap_emb)


def _caption_embeddings(model: Any, texts: list[str], dim: int, precision: str) -> np.ndarray:
    """Caption embeddings; an fp32 CPU build runs the text encoder on ONNX Runtime when its probe
    matches PyTorch (`models.onnx_text`), on the build's threads, in length-sorted batches."""
    if not texts:
        return np.zeros((0, dim), np.float32)
    encoder = getattr(model, "text_encoder", None)
    if precision != "fp32" or encoder is None or not hasattr(encoder, "runtime"):
        return encode_texts(model, texts)
    from textitsr.models.onnx_text import text_backend

    with text_backend(encoder, "auto", threads=torch.get_num_threads()):
        return encode_texts(model, texts)


def embed_shard(
    checkpoint: Path,
    source: PairSource,
    split: str | None,
    start: int,
    stop: int,
    store_root: Path,
    name: str,
    config: BuildConfig = BuildConfig(),
    *,
    pairs: Iterable[BitemporalPair] | None = None,
    on_batch: Callable[[int], None] | None = None,
    cache: Any | None = None,
    images: ImageFeatureCache | None = None,
) -> dict[str, Any] | None:
    """Embed pairs [start, stop) of `source` (in its `pairs(split)` order) into shard `name`.

    The one unit of work of every build (clip-retrieval's runner): a local build calls it shard
    after shard, handing it the slice of its single pass over the source (`pairs`); a Dask worker
    calls it with only the slice bounds and reads them itself (model loaded once per worker
    process). It writes only its own shard folder and returns the manifest entry for the caller
    to commit (None when the slice is empty: past the end of a source whose length was an upper bound).
    `images`: the build's image feature cache, shared by its shards (None: one for this shard).
    """
    model = load_model(checkpoint, config.device)
    if pairs is None:
        pairs = itertools.islice(source.pairs(split), start, stop)
    data = embed_pairs(model, pairs, config, on_batch=on_batch, cache=cache, images=images)
    if not data.rows:
        return None
    data.info = _shard_info(source, split, start, start + len(data.rows)) | {
        "archive_change_weight": config.archive_change_weight
    }
    return write_shard(Path(store_root), name, data, dtype=config.dtype)


def shard_prefix(source: PairSource, split: str | None) -> str:
    """Stable name stem of a source's shards: its kind, split and a hash of where it lives."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", str(source.name or "source")).strip("-") or "source"
    where = "|".join(str(Path(p).resolve()) for p in source.paths()) or type(source).__name__
    digest = hashlib.sha1(f"{name}|{where}|{split}".encode()).hexdigest()[:8]
    return f"{name}-{split or 'all'}-{digest}"


class _Progress:
    """tqdm bar (pairs/s, ETA) and/or a callback with the fraction done."""

    def __init__(self, total: int, progress: bool | ProgressFn, desc: str) -> None:
        self.total, self.done, self.t0 = max(total, 1), 0, time.perf_counter()
        self.fn = progress if callable(progress) else None
        self.bar = None
        if progress is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="pair", desc=desc, dynamic_ncols=True)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        if self.fn is not None:
            rate = self.done / max(time.perf_counter() - self.t0, 1e-9)
            self.fn(min(self.done / self.total, 1.0), f"{self.done}/{self.total} pairs, {rate:.1f} pairs/s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def build_store(
    checkpoint: Path,
    source: PairSource,
    out: Path,
    *,
    split: str | None = None,
    batch_size: int = BuildConfig.batch_size,
    shard_size: int = BuildConfig.shard_size,
    scheduler: Any = None,
    progress: bool | ProgressFn = True,
    config: BuildConfig | None = None,
    prefix: str | None = None,
    locked: bool = False,
) -> Store:
    """Embed `source` (all pairs, or one split) with `checkpoint` into the store at `out`.

    Creates the store, or extends it when it already exists for the same checkpoint (new source ->
    new shards; same source -> the missing shards only, i.e. resume). `scheduler`: a Dask scheduler
    address ("tcp://host:8786") or a `distributed.Client`; workers must see `out` and the source
    root on a shared filesystem. `locked`: the caller already holds the store's writer lock
    (`index.archive.Archive`, which also writes the map tiles). Returns the opened store.
    """
    config = config or BuildConfig(batch_size=batch_size, shard_size=shard_size)
    check_split(split)
    if config.batch_size <= 0 or config.shard_size <= 0:
        raise InputError(f"batch_size={config.batch_size}, shard_size={config.shard_size}: expected positive")
    checkpoint = Path(checkpoint).resolve()
    model = load_model(checkpoint, config.device)
    config = resolve_precision(model, source, split, config)
    card = model_card(checkpoint)
    out = Path(out)
    with contextlib.nullcontext() if locked else writer_lock(out):
        created = not (out / MANIFEST).exists()
        folder_existed = out.exists()
        try:
            _build(model, card, checkpoint, source, out, split, scheduler, progress, config, prefix)
        except BaseException:
            if created:  # a failed first build leaves no empty store behind
                discard_empty_store(out, remove_folder=not folder_existed)
            raise
    return Store.open(out, checkpoint_id=card["checkpoint_id"])


def _build(
    model: Any,
    card: dict[str, Any],
    checkpoint: Path,
    source: PairSource,
    out: Path,
    split: str | None,
    scheduler: Any,
    progress: bool | ProgressFn,
    config: BuildConfig,
    prefix: str | None,
) -> None:
    """build_store's work, run while it holds the store's writer lock."""
    store = Store.create(
        Path(out),
        checkpoint_id=card["checkpoint_id"],
        embed_dim=int(model.config.embed_dim),
        dtype=config.dtype,
        checkpoint=str(checkpoint),
        model=card,
        thumb_size=config.thumb_size,
    )
    remove_stale_temps(out / SHARDS)  # half-written shards of a killed build (we hold the lock)
    prefix = prefix or shard_prefix(source, split)
    # Some sources only know an upper bound of their length (GeoTIFF tiles with nodata are skipped),
    # so slices may come out short; shard k always holds pairs [k * shard_size, (k + 1) * shard_size).
    n = source.count(split)
    plan = [
        (i, min(i + config.shard_size, n), f"{prefix}-{k:05d}")
        for k, i in enumerate(range(0, n, config.shard_size))
    ]
    todo = [p for p in plan if not store.has_shard(p[2])]
    bar = _Progress(sum(b - a for a, b, _ in todo), progress, f"index {prefix}")
    try:
        if scheduler is not None:
            _build_distributed(store, checkpoint, source, split, todo, config, scheduler, bar)
        else:
            _build_local(store, checkpoint, source, split, prefix, config, bar)
    finally:
        bar.close()


def _build_local(
    store: Store,
    checkpoint: Path,
    source: PairSource,
    split: str | None,
    prefix: str,
    config: BuildConfig,
    bar: _Progress,
) -> None:
    """One pass over the source, cut into shards; committed shards are read past, not embedded."""
    cache = None
    if config.feature_cache is not None:
        from textitsr.embedding.cache import build_or_load

        model = load_model(checkpoint, config.device)
        cache = build_or_load(
            model,
            source,
            split,
            Path(config.feature_cache),
            tokens=bool(getattr(model, "uses_tokens", False)),
            progress=False,
        )
    images = ImageFeatureCache(config.image_cache_bytes) if config.image_cache_bytes > 0 else None
    it = iter(source.pairs(split))
    for k in itertools.count():
        start, name = k * config.shard_size, f"{prefix}-{k:05d}"
        chunk = itertools.islice(it, config.shard_size)
        if store.has_shard(name):
            if sum(1 for _ in chunk) == 0:
                return
            continue
        entry = embed_shard(checkpoint, source, split, start, start + config.shard_size, store.root, name,
                            config, pairs=chunk, on_batch=bar.update, cache=cache, images=images)
        if entry is None:
            return
        store.commit([entry])


def _shard_info(source: PairSource, split: str | None, start: int, stop: int) -> dict[str, Any]:
    """Where a shard's pairs came from (kept in the manifest: enough to re-read or re-embed them)."""
    paths = [str(p) for p in source.paths()]
    return {
        "source": source.name,
        "root": paths[0] if len(paths) == 1 else (paths or None),
        "split": split,
        "start": start,
        "stop": stop,
    }


def _build_distributed(
    store: Store,
    checkpoint: Path,
    source: PairSource,
    split: str | None,
    todo: list[tuple[int, int, str]],
    config: BuildConfig,
    scheduler: Any,
    bar: _Progress,
) -> None:
    from distributed import Client, as_completed

    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        futures = {
            client.submit(
                embed_shard,
                checkpoint,
                source,
                split,
                a,
                b,
                store.root,
                name,
                config,
                key=f"embed-shard-{name}",
                pure=False,
            ): b - a
            for a, b, name in todo
        }
        for fut in as_completed(futures):
            entry = fut.result()
            if entry is not None:
                store.commit([entry])  # committed as each shard lands: a killed build keeps them
            bar.update(futures[fut])
    finally:
        if client is not scheduler:
            client.close()
