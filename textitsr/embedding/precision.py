"""Which backbone precision an embedding run uses: fp32, or bf16 autocast where it pays and is accurate.

bf16 autocast speeds CNNs up on CPUs with native bf16 arithmetic (AVX512-BF16, AMX) and on recent
GPUs, but on CPUs without it PyTorch emulates bf16 and runs much *slower* than fp32
(benchmarks/results/build_speed.md); even
with native bf16, fp32 on a compiled backbone (ONNX Runtime, TorchScript) can be the faster of the
two. So "auto" considers bf16 only where the hardware has it and a check on real pairs shows the
final pair embeddings stay close to fp32 (mean cosine >= `MIN_BF16_COSINE`), and then *times* both
on the probe batch (fp32 on the backbone runtime the build will use) and keeps the faster. The
timing is kept per machine, model and runtime in `user_cache_dir()/precision.json`, so later builds
only re-run the accuracy check. The reason is logged.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from textitsr.config import user_cache_dir
from textitsr.errors import InputError

log = logging.getLogger(__name__)

#: What callers may ask for; "auto" resolves to one of the other two.
PRECISION_CHOICES = ("auto", "fp32", "bf16")
#: Mean cosine between bf16 and fp32 pair embeddings of the probe below which auto keeps fp32.
MIN_BF16_COSINE = 0.99
#: Pairs embedded twice (fp32 and bf16) by the accuracy check, and timed at both precisions.
PROBE_PAIRS = 8
#: Timed runs per precision (after one warm-up); the fastest counts.
TIMED_RUNS = 2
#: Per-machine timing results (JSON: key -> {"precision", "seconds"}).
TIMINGS_FILE = "precision.json"


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


def probe_seconds(model: Any, before: list[np.ndarray], after: list[np.ndarray], runtime: str = "auto"
                  ) -> dict[str, float]:
    """Seconds to embed the probe pairs at fp32 (on the compiled backbone `runtime`, as a build runs
    it) and at bf16: the best of `TIMED_RUNS` after one warm-up each."""
    from textitsr.embedding.encode import backbone_precision, compile_image_backbone, encode_rgb_pairs

    compile_image_backbone(model, runtime)
    seconds = {}
    for precision in ("fp32", "bf16"):
        with backbone_precision(model, precision):
            encode_rgb_pairs(model, before, after)
            runs = []
            for _ in range(TIMED_RUNS):
                start = time.perf_counter()
                encode_rgb_pairs(model, before, after)
                runs.append(time.perf_counter() - start)
        seconds[precision] = min(runs)
    return seconds


def machine_key(model: Any, runtime: str, device: torch.device) -> str:
    """What a timing depends on: processor, core count, device, torch version, backbone, runtime."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    if device.type == "cuda":
        cpu = torch.cuda.get_device_name(device)
    backbone = getattr(getattr(model, "config", None), "image_encoder", type(model).__name__)
    parts = (cpu, device.type, f"{torch.get_num_threads()} threads", f"torch {torch.__version__}", backbone,
             runtime, f"{PROBE_PAIRS} pairs")
    return "|".join(map(str, parts))


def _timings() -> dict[str, Any]:
    try:
        doc = json.loads((user_cache_dir() / TIMINGS_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _remember(key: str, precision: str, seconds: dict[str, float]) -> None:
    from textitsr.atomic import atomic_write_text

    doc = _timings()
    doc[key] = {"precision": precision, "seconds": seconds}
    try:
        atomic_write_text(user_cache_dir() / TIMINGS_FILE, json.dumps(doc, indent=1))
    except OSError as exc:  # an unwritable cache only means timing again next time
        log.warning("precision timing not kept (%s)", exc)


def faster_precision(model: Any, before: list[np.ndarray], after: list[np.ndarray], runtime: str,
                     device: torch.device) -> tuple[str, str]:
    """(fp32 or bf16, why): the faster on this machine, measured once and kept."""
    key = machine_key(model, runtime, device)
    known = _timings().get(key)
    if isinstance(known, dict) and known.get("precision") in ("fp32", "bf16"):
        seconds, when = known.get("seconds") or {}, "measured earlier on this machine"
    else:
        seconds, when = probe_seconds(model, before, after, runtime), "measured now"
    fastest = "bf16" if seconds.get("bf16", np.inf) < seconds.get("fp32", np.inf) else "fp32"
    if known is None or known.get("precision") != fastest:
        _remember(key, fastest, seconds)
    timing = ", ".join(f"{p} {s * 1000:.0f} ms" for p, s in seconds.items())
    return fastest, f"{fastest} is faster on {len(before)} probe pairs ({timing}; {when})"


def check_precision(precision: str) -> str:
    if precision not in PRECISION_CHOICES:
        raise InputError(f"precision={precision!r}: expected one of {', '.join(PRECISION_CHOICES)}")
    return precision


#: Returns a few (before, after) uint8 RGB pairs of the data to embed, read only when needed.
ProbeFn = Callable[[], tuple[list[np.ndarray], list[np.ndarray]]]


def choose_precision(model: Any, requested: str, probe: ProbeFn | None, runtime: str = "auto"
                     ) -> PrecisionChoice:
    """Resolve `requested` (auto/fp32/bf16) for `model` on its device; `probe` gives the pairs of
    auto's accuracy check and timing (None, or no pairs: fp32); `runtime`: the backbone runtime an
    fp32 build would use (`encode.compile_image_backbone`)."""
    check_precision(requested)
    if requested != "auto":
        return PrecisionChoice(requested, "asked for")
    device = torch.device(getattr(model, "device", "cpu"))
    if not native_bf16(device):
        choice = PrecisionChoice("fp32", f"{device.type} has no native bf16 (emulated bf16 is slower)")
    elif probe is None or not (pairs := probe())[0]:
        choice = PrecisionChoice("fp32", "no pairs to check bf16 accuracy on")
    else:
        before, after = pairs[0][:PROBE_PAIRS], pairs[1][:PROBE_PAIRS]
        cosine = bf16_cosine(model, before, after)
        if cosine >= MIN_BF16_COSINE:
            fastest, why = faster_precision(model, before, after, runtime, device)
            choice = PrecisionChoice(fastest, f"native bf16, probe cosine to fp32 {cosine:.4f}; {why}")
        else:
            choice = PrecisionChoice(
                "fp32", f"bf16 probe cosine to fp32 {cosine:.4f} < {MIN_BF16_COSINE}: keeping fp32"
            )
    log.info("embedding precision %s (%s)", choice.precision, choice.reason)
    return choice
