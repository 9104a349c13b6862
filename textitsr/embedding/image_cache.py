"""Backbone features of each distinct image of a build, so an image shared by several pairs is embedded once.

A GeoTIFF series pairs each (tile, date) image with several others: consecutive dates put every
middle date in two pairs, ``pairing="all"`` in n-1. The frozen image backbone is most of a build's
time, and its output for an image depends only on the image's pixels (and the model and precision,
fixed for a build), so features are kept by a digest of the pixels the backbone receives. Only the
fusion and pair head, which are cheap, run per pair. Memory is bounded (least recently used images
are dropped first); a dropped image is simply embedded again.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import Tensor

from textitsr.models.fusion import PairFeatures

#: Default bound of a build's image feature memory (globals: ~5 KB an image; tokens: ~250 KB).
DEFAULT_MAX_BYTES = 256 << 20


def image_key(image: np.ndarray) -> bytes:
    """Identity of an image as the backbone sees it: shape, dtype and a digest of its pixels."""
    image = np.ascontiguousarray(image)
    digest = hashlib.blake2b(image.data, digest_size=16)
    digest.update(f"{image.shape}{image.dtype.str}".encode())
    return digest.digest()


class ImageFeatureCache:
    """Least-recently-used map: image key -> (global (D,), tokens (N, D) or None) backbone features."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[bytes, tuple[Tensor, Tensor | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: bytes) -> tuple[Tensor, Tensor | None] | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: bytes, glob: Tensor, tokens: Tensor | None) -> None:
        """Keep copies (never views pinning a whole batch's memory), dropping the oldest over budget."""
        if key in self._items:
            return
        item = (glob.clone(), None if tokens is None else tokens.clone())
        size = _nbytes(item)
        if size > self.max_bytes:
            return
        self._items[key] = item
        self.nbytes += size
        while self.nbytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.nbytes -= _nbytes(old)


def _nbytes(item: tuple[Tensor, Tensor | None]) -> int:
    return sum(t.element_size() * t.nelement() for t in item if t is not None)


def cached_pair_features(
    model: Any,
    before: list[np.ndarray],
    after: list[np.ndarray],
    cache: ImageFeatureCache,
    keys: tuple[list[bytes], list[bytes]] | None = None,
    tokens: bool = False,
) -> PairFeatures:
    """`PairFeatures` of a batch of uint8 RGB pairs, running the backbone only on images the cache
    lacks (each distinct image once, same-size images in one call). `keys`: the images' `image_key`s
    when already computed (e.g. on the read-ahead thread)."""
    kb, ka = keys if keys is not None else ([image_key(b) for b in before], [image_key(a) for a in after])
    images = dict(zip(kb + ka, list(before) + list(after), strict=True))
    feats: dict[bytes, tuple[Tensor, Tensor | None]] = {}
    missing: dict[tuple[int, ...], list[bytes]] = {}
    for key, img in images.items():
        item = cache.get(key)
        if item is None:
            missing.setdefault(img.shape, []).append(key)
        else:
            feats[key] = item
    with torch.inference_mode():
        for group in missing.values():
            glob, toks = model.backbone_image_features(np.stack([images[k] for k in group]))
            for i, key in enumerate(group):
                feats[key] = (glob[i], toks[i] if tokens else None)
                cache.put(key, *feats[key])
    runs = sum(len(group) for group in missing.values())
    cache.misses += runs
    cache.hits += len(kb) + len(ka) - runs

    def stack(ks: list[bytes], part: int) -> Tensor:
        return torch.stack([feats[k][part] for k in ks])  # type: ignore[misc]

    if not tokens:
        return PairFeatures(stack(kb, 0), stack(ka, 0))
    return PairFeatures(stack(kb, 0), stack(ka, 0), stack(kb, 1), stack(ka, 1))
