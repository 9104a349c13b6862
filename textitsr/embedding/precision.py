"""Which backbone precision an embedding run uses: fp32, or bf16 autocast where it pays and is accurate.

bf16 autocast speeds CNNs up on CPUs with native bf16 arithmetic (AVX512-BF16, AMX) and on recent
GPUs, but on CPUs without it PyTorch emulates bf16 and runs much *slower* than fp32
(benchmarks/results/build_speed.md). So "auto" picks bf16 only where the hardware has it, and only
after a one-off check on real pairs shows the final pair embeddings stay close to fp32 (mean cosine
>= `MIN_BF16_COSINE`); otherwise fp32, with the reason logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from textitsr.config import PRECISION_ENV, forced_precision
from textitsr.errors import InputError

log = logging.getLogger(__name__)

#: What callers may ask for; "auto" resolves to one of the other two.
PRECISION_CHOICES = ("auto", "fp32", "bf16")
#: Mean cosine between bf16 and fp32 pair embeddings of the probe below which auto keeps fp32.
MIN_BF16_COSINE = 0.99
#: Pairs embedded twice (fp32 and bf16) by the accuracy check.
PROBE_PAIRS = 8


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision to run at and why (shown in logs and build output)."""

    precision: str
    reason: str


def native_bf16(device: torch.device) -> bool:
    """Whether `device` does bf16 arithmetic in hardware (emulated bf16 is slower than fp32)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def bf16_cosine(model: Any, before: list[np.ndarray], after: list[np.ndarray]) -> float:
    """Mean cosine between the pair embeddings of (before, after) at bf16 and at fp32."""
    from textitsr.embedding.encode import backbone_precision, encode_rgb_pairs

    with backbone_precision(model, "fp32"):
        ref = encode_rgb_pairs(model, before, after)
    with backbone_precision(model, "bf16"):
        low = encode_rgb_pairs(model, before, after)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(low, axis=1)
    return float(np.mean((ref * low).sum(axis=1) / np.maximum(norms, 1e-12)))


def check_precision(precision: str) -> str:
    if precision not in PRECISION_CHOICES:
        raise InputError(f"precision={precision!r}: expected one of {', '.join(PRECISION_CHOICES)}")
    return precision


#: Returns a few (before, after) uint8 RGB pairs of the data to embed, read only when needed.
ProbeFn = Callable[[], tuple[list[np.ndarray], list[np.ndarray]]]


def choose_precision(model: Any, requested: str, probe: ProbeFn | None) -> PrecisionChoice:
    """Resolve `requested` (auto/fp32/bf16) for `model` on its device; `probe` gives the pairs of
    auto's accuracy check (None, or no pairs: fp32)."""
    check_precision(requested)
    if requested != "auto":
        return PrecisionChoice(requested, "asked for")
    try:
        forced = forced_precision()
    except ValueError as err:
        raise InputError(str(err)) from None
    if forced is not None:
        return PrecisionChoice(forced, f"${PRECISION_ENV}")
    device = torch.device(getattr(model, "device", "cpu"))
    if not native_bf16(device):
        choice = PrecisionChoice("fp32", f"{device.type} has no native bf16 (emulated bf16 is slower)")
    elif probe is None or not (pairs := probe())[0]:
        choice = PrecisionChoice("fp32", "no pairs to check bf16 accuracy on")
    else:
        cosine = bf16_cosine(model, pairs[0][:PROBE_PAIRS], pairs[1][:PROBE_PAIRS])
        if cosine >= MIN_BF16_COSINE:
            choice = PrecisionChoice("bf16", f"native bf16, probe cosine to fp32 {cosine:.4f}")
        else:
            choice = PrecisionChoice(
                "fp32", f"bf16 probe cosine to fp32 {cosine:.4f} < {MIN_BF16_COSINE}: keeping fp32"
            )
    log.info("embedding precision %s (%s)", choice.precision, choice.reason)
    return choice
