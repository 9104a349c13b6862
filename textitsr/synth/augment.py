"""Sensor-like appearance changes and geometric augmentation for generated training pairs.

Why: in real archives the two dates differ in lighting, season, haze, sharpness and registration
even where nothing changed (LEVIR-CC and realdev call those "no change"). `jitter` draws such a
difference for one date; applying it to both dates of every generated pair (changed or not) teaches
the model that appearance alone is not change. `geometric` draws one rotation/flip/zoom applied to
both dates alike, so synthetic scenes look less like one fixed sensor geometry.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image
from scipy import ndimage


def jitter(
    image: np.ndarray, rng: np.random.Generator, strength: float = 1.0, shift: bool = False
) -> np.ndarray:
    """One date's appearance change of a uint8 RGB image: gain, gamma, colour cast, season, blur, noise.

    `strength` scales every draw (0 returns the image unchanged); `shift` adds a sub-pixel to 3 px
    mis-registration (edges reflected).
    """
    if strength <= 0:
        return image.copy()
    x = image.astype(np.float32) / 255.0
    s = strength
    x = x ** rng.uniform(1 - 0.2 * s, 1 + 0.2 * s)
    x = x * rng.uniform(1 - 0.15 * s, 1 + 0.15 * s) * rng.uniform(1 - 0.06 * s, 1 + 0.06 * s, 3)
    x = x + rng.uniform(-0.04 * s, 0.04 * s, 3)
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(1 - 0.3 * s, 1 + 0.25 * s)  # saturation (dry vs green season)
    if rng.random() < 0.5:  # season: green vegetation shifts towards yellow-brown or back
        green = np.clip((x[..., 1:2] - x[..., 0:1]) * 4, 0, 1)
        x = x + green * rng.uniform(-0.05 * s, 0.05 * s) * np.array([1.0, -0.4, -0.6], np.float32)
    if rng.random() < 0.3 * s:  # haze
        a = rng.uniform(0, 0.15 * s)
        x = (1 - a) * x + a * rng.uniform(0.6, 0.9)
    if rng.random() < 0.35:
        x = ndimage.gaussian_filter(x, sigma=(rng.uniform(0.3, 1.2 * s), rng.uniform(0.3, 1.2 * s), 0))
    if shift:
        x = ndimage.shift(x, (*rng.uniform(-3 * s, 3 * s, 2), 0), order=1, mode="reflect")
    x = x + rng.normal(0, rng.uniform(0, 0.015 * s), x.shape)
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def geometric(
    rng: np.random.Generator, size: int, zoom: tuple[float, float] = (1.0, 1.5)
) -> Callable[[np.ndarray], np.ndarray]:
    """One random dihedral transform + zoom (crop and resize back to `size`), for images and masks alike."""
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    scale = rng.uniform(*zoom)
    crop = int(round(size / scale))
    y0, x0 = (int(v) for v in rng.integers(0, size - crop + 1, 2))

    def apply(a: np.ndarray) -> np.ndarray:
        a = np.rot90(a, k)
        a = a[:, ::-1] if flip else a
        a = a[y0 : y0 + crop, x0 : x0 + crop]
        if crop == size:
            return np.ascontiguousarray(a)
        if a.dtype == bool:
            return np.asarray(Image.fromarray(a).resize((size, size), Image.NEAREST))
        return np.asarray(Image.fromarray(np.ascontiguousarray(a)).resize((size, size), Image.BILINEAR))

    return apply
