"""On-disk cache of frozen-backbone features, so training and evaluation never re-run the backbones.

With frozen encoders the only trainable parts (fusion + heads) see the same backbone outputs every
epoch, so those are computed once per (image backbone, text backbone, source, split) and stored as
memory-mapped `.npy` files in one folder under `cache_dir`:

    meta.json              identity (backbones, kind, resolved root, split), source fingerprint, sizes
    pairs.json             pair ids, change types, captions (per pair, as given by the source)
    texts.json             the split's unique caption texts (duplicates encoded once)
    caption_text.npy       int32 (C,)   text index of every caption, pair by pair
    caption_offsets.npy    int64 (N+1,) captions of pair i are caption_text[off[i]:off[i+1]]
    changed.npy            int8  (N,)   1 change, 0 no change, -1 unknown
    before_global.npy      float32 (N, D)    after_global.npy likewise
    before_tokens.npy      float16 (N, T, D) after_tokens.npy likewise (only when tokens are cached;
                           float16 halves the disk: ~250 KB per pair for EfficientNet's 7x7x1280)
    text_features.npy      float32 (U, Dt)

The folder is written through `atomic_dir`, so a crash never leaves half a cache. It is reused when
its meta matches (same fingerprint, tokens present if needed) and rebuilt otherwise. The cache is
keyed by the source's identity (`name`, `paths()`) and checked against its `fingerprint()` (a hash
of its files' paths, sizes and mtimes: no pixels read).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from textitsr.atomic import atomic_dir
from textitsr.config import DATA_DIR
from textitsr.data.pairs import BitemporalPair, PairSource
from textitsr.embedding.encode import backbone_precision
from textitsr.errors import InputError
from textitsr.safe_read import read_json_file

if TYPE_CHECKING:
    from textitsr.models.textitsr import PairFeatures, TextITSR

#: Default home of feature caches (git-ignored under data/).
DEFAULT_CACHE_DIR = DATA_DIR / "cache"
#: Bump when the on-disk layout changes: old caches are then rebuilt instead of misread.
CACHE_VERSION = 1
CHANGED_UNKNOWN = -1


class EmptySplitError(InputError):
    """The source has no pairs in the requested split (callers may fall back to another split)."""


class FeatureCache:
    """Backbone features of one split of one source (memory-mapped tokens, in-RAM globals)."""

    def __init__(
        self,
        pair_ids: list[str],
        texts: list[str],
        caption_text: np.ndarray,
        caption_offsets: np.ndarray,
        changed: np.ndarray,
        before_global: np.ndarray,
        after_global: np.ndarray,
        text_features: np.ndarray,
        before_tokens: np.ndarray | None = None,
        after_tokens: np.ndarray | None = None,
        change_type: list[str | None] | None = None,
        folder: Path | None = None,
        meta: dict | None = None,
    ) -> None:
        n = len(pair_ids)
        self.pair_ids = list(pair_ids)
        self.texts = list(texts)
        self.caption_text = np.asarray(caption_text, dtype=np.int64)
        self.caption_offsets = np.asarray(caption_offsets, dtype=np.int64)
        self.changed = np.asarray(changed, dtype=np.int8)
        self.before_global = np.asarray(before_global, dtype=np.float32)
        self.after_global = np.asarray(after_global, dtype=np.float32)
        self.text_features_all = np.asarray(text_features, dtype=np.float32)
        self.before_tokens = before_tokens
        self.after_tokens = after_tokens
        self.change_type = list(change_type) if change_type is not None else [None] * n
        self.folder = folder
        self.meta = meta or {}
        if not (
            len(self.caption_offsets) == n + 1
            and len(self.changed) == n
            and len(self.before_global) == n == len(self.after_global)
            and len(self.change_type) == n
            and len(self.text_features_all) == len(self.texts)
            and self.caption_offsets[-1] == len(self.caption_text)
        ):
            raise InputError(f"feature cache {folder or '(in memory)'}: inconsistent array lengths")

    @classmethod
    def open(cls, folder: Path) -> FeatureCache:
        folder = Path(folder)
        meta = read_json_file(folder / "meta.json")
        pairs = read_json_file(folder / "pairs.json")

        def arr(name: str, mmap: bool = False) -> np.ndarray:
            return np.load(folder / f"{name}.npy", mmap_mode="r" if mmap else None)

        tokens = meta["with_tokens"]
        return cls(
            pair_ids=pairs["pair_ids"],
            change_type=pairs["change_type"],
            texts=read_json_file(folder / "texts.json"),
            caption_text=arr("caption_text"),
            caption_offsets=arr("caption_offsets"),
            changed=arr("changed"),
            before_global=arr("before_global"),
            after_global=arr("after_global"),
            text_features=arr("text_features"),
            before_tokens=arr("before_tokens", mmap=True) if tokens else None,
            after_tokens=arr("after_tokens", mmap=True) if tokens else None,
            folder=folder,
            meta=meta,
        )

    @classmethod
    def concat(cls, caches: list[FeatureCache]) -> FeatureCache:
        """One in-memory cache of several (e.g. the train splits of several sources), so a model
        trains on their union while each source keeps its own on-disk cache. Texts shared by the
        caches are stored once; tokens are kept only when every cache has them."""
        if not caches:
            raise InputError("feature caches: nothing to concatenate")
        if len(caches) == 1:
            return caches[0]
        widths = {(c.before_global.shape[1], c.text_features_all.shape[1]) for c in caches}
        if len(widths) > 1:
            raise InputError(
                f"feature caches: different backbone widths {sorted(widths)}; same backbones needed"
            )
        index: dict[str, int] = {}
        texts: list[str] = []
        remapped, offsets, rows = [], [np.zeros(1, dtype=np.int64)], []
        for c in caches:
            new_ids = np.empty(len(c.texts), dtype=np.int64)
            for i, text in enumerate(c.texts):
                if text not in index:
                    index[text] = len(texts)
                    texts.append(text)
                    rows.append((c, i))
                new_ids[i] = index[text]
            remapped.append(new_ids[c.caption_text])
            offsets.append(c.caption_offsets[1:] + offsets[-1][-1])
        tokens = all(c.with_tokens for c in caches)

        def cat(name: str) -> np.ndarray:
            return np.concatenate([np.asarray(getattr(c, name)) for c in caches])

        return cls(
            pair_ids=[p for c in caches for p in c.pair_ids],
            texts=texts,
            caption_text=np.concatenate(remapped),
            caption_offsets=np.concatenate(offsets),
            changed=cat("changed"),
            before_global=cat("before_global"),
            after_global=cat("after_global"),
            text_features=np.stack([c.text_features_all[i] for c, i in rows]),
            before_tokens=cat("before_tokens") if tokens else None,
            after_tokens=cat("after_tokens") if tokens else None,
            change_type=[t for c in caches for t in c.change_type],
            meta={"parts": [c.meta.get("identity") for c in caches]},
        )

    @property
    def n_pairs(self) -> int:
        return len(self.pair_ids)

    @property
    def with_tokens(self) -> bool:
        return self.before_tokens is not None

    @property
    def caption_pair(self) -> np.ndarray:
        """(C,) pair index of every caption."""
        return np.repeat(np.arange(self.n_pairs), np.diff(self.caption_offsets))

    def captions(self, i: int) -> list[str]:
        a, b = self.caption_offsets[i], self.caption_offsets[i + 1]
        return [self.texts[t] for t in self.caption_text[a:b]]

    def pair_features(
        self, idx: np.ndarray | Iterable[int], device: str | torch.device = "cpu", tokens: bool = True
    ) -> PairFeatures:
        """Features of pairs `idx` as float32 tensors on `device` (tokens only if cached and asked)."""
        from textitsr.models.textitsr import PairFeatures

        idx = np.asarray(list(idx) if not isinstance(idx, np.ndarray) else idx, dtype=np.int64)

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)

        bt = at = None
        if tokens and self.with_tokens:
            # Read memory-mapped rows in file order (sequential IO), then restore the batch order.
            order = np.argsort(idx, kind="stable")
            back = np.empty_like(order)
            back[order] = np.arange(len(order))
            bt = t(self.before_tokens[idx[order]][back])
            at = t(self.after_tokens[idx[order]][back])
        return PairFeatures(
            before_global=t(self.before_global[idx]),
            after_global=t(self.after_global[idx]),
            before_tokens=bt,
            after_tokens=at,
        )

    def text_features(self, text_idx: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
        """Backbone features of unique texts `text_idx` (float32 tensor on `device`)."""
        return torch.from_numpy(np.ascontiguousarray(self.text_features_all[text_idx])).to(device)


def build_or_load(
    model: TextITSR,
    source: PairSource,
    split: str | None,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    *,
    tokens: bool | None = None,
    batch_size: int = 32,
    precision: str = "fp32",
    progress: bool = True,
) -> FeatureCache:
    """The cache of `split` of `source` for `model`'s backbones: reused when valid, else (re)built.

    tokens: cache patch tokens too (default: when the model's fusion uses them). A cache built with
    tokens serves models that do not need them; one without is rebuilt for a model that does.
    precision: "fp32", or "bf16" autocast for the backbones (faster on CPUs with bf16 support).
    """
    need_tokens = bool(getattr(model, "uses_tokens", True)) if tokens is None else tokens
    kind = source.name
    where = [str(Path(p).resolve()) for p in source.paths()]
    identity = {
        "version": CACHE_VERSION,
        "image_encoder": _encoder_name(model, "image"),
        "text_encoder": _encoder_name(model, "text"),
        "dims": _backbone_dims(model),
        "kind": kind,
        "root": where[0] if len(where) == 1 else (where or None),
        "split": split,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir) / f"{kind}-{split or 'all'}-{digest}"
    fingerprint = source.fingerprint(split, exclude=Path(cache_dir))

    meta_path = folder / "meta.json"
    if meta_path.exists():
        with contextlib.suppress(ValueError, OSError):
            meta = read_json_file(meta_path)
            if (
                meta.get("identity") == identity
                and meta.get("fingerprint") == fingerprint
                and (meta.get("with_tokens") or not need_tokens)
            ):
                return FeatureCache.open(folder)

    with atomic_dir(folder) as tmp:
        with backbone_precision(model, precision):
            _write_cache(model, source, split, tmp, need_tokens, batch_size, precision, progress)
        meta = json.loads((tmp / "meta.json").read_text())
        meta.update(identity=identity, fingerprint=fingerprint)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    return FeatureCache.open(folder)


def _write_cache(
    model: TextITSR,
    source: PairSource,
    split: str | None,
    out: Path,
    tokens: bool,
    batch_size: int,
    precision: str,
    progress: bool,
) -> None:
    t0 = time.perf_counter()
    pair_ids: list[str] = []
    change_type: list[str | None] = []
    captions: list[list[str]] = []
    changed: list[int] = []
    text_index: dict[str, int] = {}
    caption_text: list[int] = []
    offsets = [0]
    writers: dict[str, _NpyWriter] = {}

    def write_batch(batch: list[BitemporalPair]) -> None:
        before = np.stack([p.rgb("before") for p in batch])
        after = np.stack([p.rgb("after") for p in batch])
        with torch.inference_mode():
            feats = model.backbone_pair_features(before, after, tokens=tokens, batch_size=len(batch))
        arrays = {"before_global": feats.before_global, "after_global": feats.after_global}
        if tokens:
            if feats.before_tokens is None or feats.after_tokens is None:
                raise InputError(f"image encoder {_encoder_name(model, 'image')!r} returned no patch tokens")
            arrays.update(before_tokens=feats.before_tokens, after_tokens=feats.after_tokens)
        for name, tensor in arrays.items():
            a = tensor.float().cpu().numpy()
            if name not in writers:
                dtype = np.float16 if name.endswith("tokens") else np.float32
                writers[name] = _NpyWriter(out / f"{name}.npy", dtype, a.shape[1:])
            writers[name].append(a)

    bar = tqdm(desc=f"caching {split or 'all'} features", unit="pair", disable=not progress, leave=False)
    try:
        batch: list[BitemporalPair] = []
        for pair in source.pairs(split):
            if batch and (len(batch) >= batch_size or pair.before.shape[:2] != batch[0].before.shape[:2]):
                write_batch(batch)
                bar.update(len(batch))
                batch = []
            batch.append(pair)
            pair_ids.append(pair.pair_id)
            change_type.append(pair.change_type)
            changed.append(CHANGED_UNKNOWN if pair.changed is None else int(bool(pair.changed)))
            caps = [" ".join(c.split()) for c in pair.captions if c and c.strip()]
            captions.append(list(pair.captions))
            for c in caps:
                caption_text.append(text_index.setdefault(c, len(text_index)))
            offsets.append(len(caption_text))
        if batch:
            write_batch(batch)
            bar.update(len(batch))
    finally:
        bar.close()
        for w in writers.values():
            w.close()
    if not pair_ids:
        raise EmptySplitError(f"source {source.name!r} has no pairs in split {split!r}")

    texts = list(text_index)
    text_feats = []
    with torch.inference_mode():
        for i in range(0, len(texts), 256):
            text_feats.append(model.backbone_text_features(texts[i : i + 256]).float().cpu().numpy())
    text_dim = text_feats[0].shape[1] if text_feats else 0
    np.save(
        out / "text_features.npy",
        np.concatenate(text_feats) if text_feats else np.zeros((0, text_dim), np.float32),
    )
    np.save(out / "caption_text.npy", np.asarray(caption_text, dtype=np.int32))
    np.save(out / "caption_offsets.npy", np.asarray(offsets, dtype=np.int64))
    np.save(out / "changed.npy", np.asarray(changed, dtype=np.int8))
    (out / "pairs.json").write_text(
        json.dumps({"pair_ids": pair_ids, "change_type": change_type, "captions": captions})
    )
    (out / "texts.json").write_text(json.dumps(texts))
    meta = {
        "n_pairs": len(pair_ids),
        "n_captions": len(caption_text),
        "n_texts": len(texts),
        "with_tokens": tokens,
        "precision": precision,
        "build_seconds": round(time.perf_counter() - t0, 2),
        "shapes": {name: list(w.shape) for name, w in writers.items()},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))


class _NpyWriter:
    """Streams rows into a `.npy` file whose length is unknown up front (sources are iterators).

    A fixed-size header is reserved, rows are appended, and the header is rewritten with the final
    row count on close (NPY format 1.0: magic, header length, dict literal padded with spaces).
    The result is a plain .npy that `np.load(mmap_mode="r")` maps.
    """

    HEADER_BYTES = 256

    def __init__(self, path: Path, dtype: Any, tail: tuple[int, ...]) -> None:
        self.path, self.dtype, self.tail, self.rows = path, np.dtype(dtype), tuple(tail), 0
        self.file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.file.write(b"\0" * self.HEADER_BYTES)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.rows, *self.tail)

    def append(self, rows: np.ndarray) -> None:
        if rows.shape[1:] != self.tail:
            raise InputError(f"{self.path.name}: rows of shape {rows.shape[1:]}, expected {self.tail}")
        self.file.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())
        self.rows += len(rows)

    def close(self) -> None:
        if self.file.closed:
            return
        header = repr(
            {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        )
        body = header.ljust(self.HEADER_BYTES - 10 - 1) + "\n"
        self.file.seek(0)
        self.file.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1"))
        self.file.close()


def _encoder_name(model: Any, which: str) -> str:
    cfg = getattr(model, "config", None)
    return str(getattr(cfg, f"{which}_encoder", "unknown"))


def _backbone_dims(model: Any) -> dict | None:
    dims = getattr(model, "dims", None)
    return dims() if callable(dims) else None


def cache_size_bytes(folder: Path) -> int:
    """Disk use of a cache folder (for benchmarks/reports)."""
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())


__all__ = [
    "DEFAULT_CACHE_DIR",
    "EmptySplitError",
    "FeatureCache",
    "build_or_load",
    "cache_size_bytes",
]
