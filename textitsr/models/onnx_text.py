"""Text queries through ONNX Runtime: the same BERT-like sentence encoder, cheaper per query on CPU.

A text query's latency is mostly the sentence encoder. PyTorch runs its small matrix products
(one sentence: ~10 tokens) one operator at a time; ONNX Runtime runs the exported graph with fused
attention, LayerNorm and GELU kernels, at the same float32 precision. `use_text_backend` exports the
encoder once (cached on disk, keyed to its weights and the library versions) and, for "auto", keeps
ONNX Runtime only when a probe shows it gives the same sentence features as PyTorch; otherwise the
encoder stays on PyTorch and the reason is logged. Training and gradient runs always use PyTorch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from textitsr.errors import InputError
from textitsr.models.onnx_export import cached_session, min_cosine, onnx_missing

log = logging.getLogger(__name__)

#: What callers may ask for; "auto" resolves to one of the other two.
TEXT_BACKENDS = ("auto", "torch", "onnx")
#: Least cosine between ONNX Runtime and PyTorch sentence features for "auto" to keep ONNX Runtime.
MIN_ONNX_COSINE = 0.9999
#: Seconds the probe may take before the graph is abandoned (a few sentences take well under one).
PROBE_TIMEOUT_S = 30.0
#: Sentences the probe encodes both ways (short and long, to cover the dynamic sequence axis).
PROBE_TEXTS = (
    "new buildings along the road",
    "nothing has changed",
    "a road is built across the bare land and several houses appear in the upper left corner",
)
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class TextBackendChoice:
    """The backend text queries run on and why (logged; shown by the API's /health)."""

    backend: str
    reason: str


class OnnxTextRuntime:
    """The text model on ONNX Runtime: token batch -> last hidden states (as the model's output)."""

    def __init__(self, encoder: Any, threads: int = 1, *, fresh: bool = False) -> None:
        sample = encoder.tokenizer(list(PROBE_TEXTS[:2]), padding=True, return_tensors="pt")
        names = [n for n in _INPUTS if n in sample]
        self.session = cached_session(
            _HiddenStates(encoder.model, names), "text-encoder", threads, [sample[n] for n in names], names,
            ["hidden"], {n: {0: "batch", 1: "tokens"} for n in [*names, "hidden"]}, fresh=fresh,
        )
        self.path = self.session.path

    def __call__(self, batch: Any) -> Tensor:
        feed = {name: batch[name].cpu().numpy().astype("int64") for name in self.session.inputs}
        return self.session.run(feed)[0]


class _HiddenStates(torch.nn.Module):
    """Wraps a Hugging Face text model so the exported graph has plain tensor inputs and one output."""

    def __init__(self, model: torch.nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: Tensor) -> Tensor:
        return self.model(**dict(zip(self.names, tensors, strict=True))).last_hidden_state


def probe_cosine(encoder: Any, runtime: OnnxTextRuntime) -> float:
    """Least cosine between the sentence features of `PROBE_TEXTS` on PyTorch and on `runtime`;
    NaN when the runtime's features are not all finite."""
    previous = encoder.runtime
    try:
        with torch.inference_mode():
            encoder.runtime = None
            ref = torch.cat([encoder([t]) for t in PROBE_TEXTS])
            encoder.runtime = runtime
            low = torch.cat([encoder([t]) for t in PROBE_TEXTS])
    finally:
        encoder.runtime = previous
    if not bool(torch.isfinite(low).all()):
        return math.nan
    return min_cosine(ref, low)


def probe_within(encoder: Any, runtime: OnnxTextRuntime, timeout_s: float | None = None) -> float:
    """`probe_cosine` on a worker thread, abandoned after `timeout_s` (raises TimeoutError).

    A graph from the cache may never finish (an endless Loop node): start-up must not hang on it.
    ONNX Runtime stops the abandoned run at its next node (`OnnxSession.terminate`).
    """
    timeout_s = PROBE_TIMEOUT_S if timeout_s is None else timeout_s
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["cosine"] = probe_cosine(encoder, runtime)
        except Exception as exc:  # noqa: BLE001 - handed to the caller's thread below
            result["error"] = exc

    worker = threading.Thread(target=work, name="onnx-text-probe", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        runtime.session.terminate()
        worker.join(5)
        raise TimeoutError(f"the ONNX Runtime probe did not finish within {timeout_s:g} s")
    if "error" in result:
        raise result["error"]
    return result["cosine"]


def _acceptable(cosine: float, requested: str) -> bool:
    """Finite features always; for "auto" also the same features as PyTorch within MIN_ONNX_COSINE."""
    return math.isfinite(cosine) and (requested == "onnx" or cosine >= MIN_ONNX_COSINE)


def use_text_backend(encoder: Any, requested: str = "auto", threads: int = 1) -> TextBackendChoice:
    """Set the backend `encoder` answers inference calls on (auto/torch/onnx) and say which and why."""
    if requested not in TEXT_BACKENDS:
        raise InputError(f"text_backend={requested!r}: expected one of {', '.join(TEXT_BACKENDS)}")
    made = getattr(encoder, "backend_made", None)
    if made is not None and made[:2] == (requested, threads) and encoder.runtime is made[2]:
        return made[3]  # already set up this way (a model shared by several services asks again)
    choice = _choose(encoder, requested, threads)
    if _unsupported(encoder) is None:
        encoder.backend_made = (requested, threads, encoder.runtime, choice)
    log.info("text encoder on %s (%s)", choice.backend, choice.reason)
    return choice


@contextlib.contextmanager
def text_backend(encoder: Any, requested: str = "auto", threads: int = 1) -> Iterator[TextBackendChoice]:
    """`use_text_backend` for the block only (e.g. a build's captions on its threads), then the
    encoder's previous backend again (a search service sharing the model keeps its own). The
    block's session is kept on the encoder for the next such block (a build's next shard)."""
    previous = (getattr(encoder, "runtime", None), getattr(encoder, "backend_made", None))
    kept = getattr(encoder, "scoped_backend", None)
    try:
        if kept is not None and kept[:2] == (requested, threads):
            encoder.runtime = kept[2]
            yield kept[3]
            return
        choice = use_text_backend(encoder, requested, threads)
        if encoder is not None and hasattr(encoder, "runtime"):
            encoder.scoped_backend = (requested, threads, encoder.runtime, choice)
        yield choice
    finally:
        if encoder is not None and hasattr(encoder, "runtime"):
            encoder.runtime, encoder.backend_made = previous


def _choose(encoder: Any, requested: str, threads: int) -> TextBackendChoice:
    unsupported = _unsupported(encoder)
    if requested == "torch" or unsupported:
        if not unsupported:
            encoder.runtime = None
        if requested == "torch":
            return TextBackendChoice("torch", "asked for")
        if requested == "onnx":
            raise InputError(f"text_backend='onnx': {unsupported}")
        return TextBackendChoice("torch", unsupported)
    encoder.runtime = None  # PyTorch unless the new graph passes its probe
    try:
        runtime = OnnxTextRuntime(encoder, threads)
        cosine = probe_within(encoder, runtime)
        if runtime.session.from_cache and not _acceptable(cosine, requested):
            log.warning("cached ONNX graph %s gives features %s: exporting it again", runtime.path,
                        "that are not finite" if math.isnan(cosine) else f"at cosine {cosine:.6f} to PyTorch")
            runtime = OnnxTextRuntime(encoder, threads, fresh=True)
            cosine = probe_within(encoder, runtime)
        if math.isnan(cosine):
            raise ValueError("the graph's sentence features are not finite (NaN or inf)")
    except Exception as exc:  # noqa: BLE001 - export/runtime failures of any kind: stay on PyTorch
        if isinstance(exc, TimeoutError):
            _forget(runtime)
            log.warning("text encoder stays on PyTorch: %s", exc)
        if requested == "onnx":
            raise InputError(
                f"text_backend='onnx': cannot run the text encoder on ONNX Runtime: {exc}"
            ) from exc
        return TextBackendChoice("torch", f"ONNX Runtime failed ({type(exc).__name__}: {exc})")
    if requested == "auto" and cosine < MIN_ONNX_COSINE:
        return TextBackendChoice(
            "torch", f"ONNX Runtime probe cosine to PyTorch {cosine:.6f} < {MIN_ONNX_COSINE}: keeping PyTorch"
        )
    encoder.runtime = runtime
    return TextBackendChoice("onnx", f"probe cosine to PyTorch {cosine:.6f}")


def _forget(runtime: OnnxTextRuntime) -> None:
    """Drop a cached graph that hung, so the next start exports a fresh one instead."""
    with contextlib.suppress(OSError):
        runtime.path.unlink()


def _unsupported(encoder: Any) -> str | None:
    """Why `encoder` cannot run on ONNX Runtime here, or None when it can."""
    from textitsr.models.hf_encoders import HFTextEncoder

    if not isinstance(encoder, HFTextEncoder) or encoder.is_clip:
        return f"text encoder {getattr(encoder, 'name', type(encoder).__name__)!r} is not a BERT-like model"
    if next(encoder.model.parameters()).device.type != "cpu":
        return "the text encoder is not on the CPU"
    return onnx_missing()
