"""Embed a pair source into a store: reader -> encoder -> shard writer, locally or on Dask.

The source is cut into contiguous slices of `shard_size` pairs; each slice becomes one shard, made
by the same function (`embed_shard`) whether it runs in this process or on a Dask worker. Pairs are
read and encoded `batch_size` at a time and a shard holds only its own rows, so peak memory is one
shard's thumbnails + embeddings whatever the archive size. Shards listed in the manifest are
skipped, so an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textitsr.data.pairs import BitemporalPair, PairSource, check_split
from textitsr.errors import InputError
from textitsr.index.store import (
    DEFAULT_THUMB_SIZE,
    MANIFEST,
    ShardData,
    Store,
    discard_empty_store,
    encode_thumbnail,
    pair_row,
    write_shard,
    writer_lock,
)

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


# -------------------------------------------------------------------------------- model side
_MODELS: dict[tuple[str, str], Any] = {}


def load_model(checkpoint: Path, device: str = "cpu") -> Any:
    """The checkpoint's model, loaded once per process (Dask workers reuse it across shards)."""
    from textitsr.models.checkpoint import load_checkpoint

    key = (str(Path(checkpoint).resolve()), device)
    if key not in _MODELS:
        model = load_checkpoint(Path(checkpoint), device=device)
        model.eval()
        _MODELS[key] = model
    return _MODELS[key]


def model_card(model: Any, checkpoint: Path) -> dict[str, Any]:
    """What the store records about its model: config, checkpoint id and path, training summary."""
    from textitsr.models.checkpoint import checkpoint_id

    config = getattr(model, "config", None)
    card: dict[str, Any] = {"checkpoint_id": checkpoint_id(Path(checkpoint)), "checkpoint": str(checkpoint)}
    if config is not None and is_dataclass(config):
        card["config"] = asdict(config)
        for key in ("image_encoder", "text_encoder", "fusion", "embed_dim"):
            if hasattr(config, key):
                card[key] = getattr(config, key)
    card.update(_training_summary(Path(checkpoint)))
    return card


def _training_summary(folder: Path) -> dict[str, Any]:
    """The `extra` a trainer saved beside the weights, when the checkpoint has one (best effort)."""
    import json

    for name in ("meta.json", "checkpoint.json", "config.json", "training.json"):
        path = folder / name
        if path.is_file():
            try:
                data = json.loads(path.read_text("utf-8"))
            except (OSError, ValueError):
                continue
            extra = data.get("extra") if isinstance(data, dict) else None
            if isinstance(extra, dict) and extra:
                return {"training": extra}
    return {}


def _numpy(t: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().float().cpu().numpy()
    return np.asarray(t, dtype=np.float32)


def encode_rgb_pairs(model: Any, before: list[np.ndarray], after: list[np.ndarray]) -> np.ndarray:
    """(B, d) embeddings of uint8 RGB pairs; pairs of different sizes are encoded in same-size groups."""
    out: list[np.ndarray | None] = [None] * len(before)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(before):
        groups.setdefault(img.shape, []).append(i)
    with torch.inference_mode():
        for idx in groups.values():
            emb = _numpy(
                model.encode_pairs(np.stack([before[i] for i in idx]), np.stack([after[i] for i in idx]))
            )
            for j, i in enumerate(idx):
                out[i] = emb[j]
    return np.stack(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


def encode_texts(model: Any, texts: list[str], batch_size: int = 256) -> np.ndarray:
    parts = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            parts.append(_numpy(model.encode_texts(texts[i : i + batch_size])))
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


# ---------------------------------------------------------------------------- shard building
def _change_stats_fn() -> Callable[[BitemporalPair], dict[str, float] | None]:
    try:
        from textitsr.data.describe import change_stats
    except ImportError:  # the describe module is optional for a store
        return lambda pair: None

    def safe(pair: BitemporalPair) -> dict[str, float] | None:
        try:
            return change_stats(pair)
        except Exception:  # noqa: BLE001 - statistics are optional metadata, never worth a failed build
            return None

    return safe


def _batches(pairs: Iterable[BitemporalPair], size: int) -> Iterator[list[BitemporalPair]]:
    it = iter(pairs)
    while batch := list(itertools.islice(it, size)):
        yield batch


def embed_pairs(
    model: Any,
    pairs: Iterable[BitemporalPair],
    config: BuildConfig = BuildConfig(),
    on_batch: Callable[[int], None] | None = None,
    cache: Any | None = None,
) -> ShardData:
    """Embed pairs batch by batch into one in-memory shard (metadata, embeddings, thumbnails, captions)."""
    stats = _change_stats_fn()
    rows: list[dict[str, Any]] = []
    embs: list[np.ndarray] = []
    tb: list[bytes] = []
    ta: list[bytes] = []
    cap_texts: list[str] = []
    cap_ids: list[str] = []
    cache_rows = {pid: i for i, pid in enumerate(cache.pair_ids)} if cache is not None else {}
    for batch in _batches(pairs, config.batch_size):
        before = [p.rgb("before") for p in batch]
        after = [p.rgb("after") for p in batch]
        if cache is not None and all(p.pair_id in cache_rows for p in batch):
            feats = cache.pair_features(
                np.array([cache_rows[p.pair_id] for p in batch]),
                tokens=bool(getattr(model, "uses_tokens", False)),
            )
            with torch.inference_mode():
                embs.append(_numpy(model.embed_pair_features(feats)))
        else:
            embs.append(encode_rgb_pairs(model, before, after))
        for p, b, a in zip(batch, before, after, strict=True):
            rows.append(pair_row(p, stats(p)))
            tb.append(encode_thumbnail(b, config.thumb_size))
            ta.append(encode_thumbnail(a, config.thumb_size))
            for c in p.captions:
                if str(c).strip():
                    cap_texts.append(str(c))
                    cap_ids.append(p.pair_id)
        if on_batch is not None:
            on_batch(len(batch))
    dim = int(model.config.embed_dim) if hasattr(model, "config") else (embs[0].shape[1] if embs else 0)
    pair_emb = np.concatenate(embs) if embs else np.zeros((0, dim), np.float32)
    cap_emb = encode_texts(model, cap_texts) if cap_texts else np.zeros((0, pair_emb.shape[1]), np.float32)
    return ShardData(rows, pair_emb, tb, ta, cap_texts, cap_ids, cap_emb)


def embed_shard(
    checkpoint: Path,
    source: PairSource,
    split: str | None,
    start: int,
    stop: int,
    store_root: Path,
    name: str,
    config: BuildConfig = BuildConfig(),
) -> dict[str, Any] | None:
    """Embed pairs [start, stop) of `source` (in its `pairs(split)` order) into shard `name`.

    The unit of distributed work: runs on a Dask worker (model loaded once per worker process),
    writes only its own shard folder, and returns the manifest entry for the client to commit.
    """
    model = load_model(checkpoint, config.device)
    pairs = itertools.islice(source.pairs(split), start, stop)
    data = embed_pairs(model, pairs, config)
    if not data.rows:  # past the end of a source whose length was an upper bound
        return None
    data.info = _shard_info(source, split, start, start + len(data.rows))
    return write_shard(Path(store_root), name, data, dtype=config.dtype)


# --------------------------------------------------------------------------------- planning
def shard_prefix(source: PairSource, split: str | None) -> str:
    """Stable name stem of a source's shards: its kind, split and a hash of where it lives."""
    name = (
        re.sub(r"[^A-Za-z0-9_-]+", "-", str(getattr(source, "name", "") or "source")).strip("-") or "source"
    )
    root = getattr(source, "root", None) or getattr(source, "paths", None)
    if root is None and getattr(source, "scenes", None) and hasattr(source.scenes[0], "path"):
        root = [s.path for s in source.scenes]  # a GeoTIFF series: its scene files
    root = root or type(source).__name__
    if isinstance(root, (list, tuple)):
        root = "|".join(str(Path(p).resolve()) for p in root)
    elif isinstance(root, (str, Path)):
        root = str(Path(root).resolve())
    digest = hashlib.sha1(f"{name}|{root}|{split}".encode()).hexdigest()[:8]
    return f"{name}-{split or 'all'}-{digest}"


def count_pairs(source: PairSource, split: str | None) -> int:
    if split is None:
        return len(source)
    counts = getattr(source, "split_counts", None)
    if callable(counts):
        return int(counts().get(split, 0))
    records = getattr(source, "records", None)
    if callable(records):
        return len(records(split))
    return sum(1 for _ in source.pairs(split))


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


# ------------------------------------------------------------------------------------ build
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
) -> Store:
    """Embed `source` (all pairs, or one split) with `checkpoint` into the store at `out`.

    Creates the store, or extends it when it already exists for the same checkpoint (new source ->
    new shards; same source -> the missing shards only, i.e. resume). `scheduler`: a Dask scheduler
    address ("tcp://host:8786") or a `distributed.Client`; workers must see `out` and the source
    root on a shared filesystem. Returns the opened store.
    """
    config = config or BuildConfig(batch_size=batch_size, shard_size=shard_size)
    check_split(split)
    if config.batch_size <= 0 or config.shard_size <= 0:
        raise InputError(f"batch_size={config.batch_size}, shard_size={config.shard_size}: expected positive")
    checkpoint = Path(checkpoint).resolve()
    model = load_model(checkpoint, config.device)
    card = model_card(model, checkpoint)
    out = Path(out)
    with writer_lock(out):
        created = not (out / MANIFEST).exists()
        folder_existed = out.exists()
        try:
            _build(model, card, checkpoint, source, out, split, scheduler, progress, config, prefix)
        except BaseException:
            if created:  # a failed first build leaves no empty store behind
                discard_empty_store(out, remove_folder=not folder_existed)
            raise
    return Store.open(Path(out), checkpoint_id=card["checkpoint_id"])


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
    prefix = prefix or shard_prefix(source, split)
    # Some sources only know an upper bound of their length (GeoTIFF tiles with nodata are skipped),
    # so slices may come out short; shard k always holds pairs [k * shard_size, (k + 1) * shard_size).
    n = count_pairs(source, split)
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
            _build_local(store, model, source, split, prefix, config, bar)
    finally:
        bar.close()


def _build_local(
    store: Store,
    model: Any,
    source: PairSource,
    split: str | None,
    prefix: str,
    config: BuildConfig,
    bar: _Progress,
) -> None:
    """One pass over the source, cut into shards; committed shards are read past, not embedded."""
    cache = None
    if config.feature_cache is not None:
        from textitsr.training.features import build_or_load

        cache = build_or_load(
            model,
            source,
            split,
            Path(config.feature_cache),
            tokens=bool(getattr(model, "uses_tokens", False)),
            progress=False,
        )
    it = iter(source.pairs(split))
    for k in itertools.count():
        start, name = k * config.shard_size, f"{prefix}-{k:05d}"
        chunk = itertools.islice(it, config.shard_size)
        if store.has_shard(name):
            if sum(1 for _ in chunk) == 0:
                return
            continue
        data = embed_pairs(model, chunk, config, on_batch=bar.update, cache=cache)
        if not data.rows:
            return
        data.info = _shard_info(source, split, start, start + len(data.rows))
        store.add_shard(name, data)


def _shard_info(source: PairSource, split: str | None, start: int, stop: int) -> dict[str, Any]:
    """Where a shard's pairs came from (kept in the manifest: enough to re-read or re-embed them)."""
    root = getattr(source, "root", None)
    if root is None and getattr(source, "scenes", None) and hasattr(source.scenes[0], "path"):
        root = [str(s.path) for s in source.scenes]
    return {
        "source": getattr(source, "name", ""),
        "root": root if isinstance(root, list) else (str(root) if root is not None else None),
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
