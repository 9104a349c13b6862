"""Text queries through ONNX Runtime: the same BERT-like sentence encoder, cheaper per query on CPU.

A text query's latency is mostly the sentence encoder. PyTorch runs its small matrix products
(one sentence: ~10 tokens) one operator at a time; ONNX Runtime runs the exported graph with fused
attention, LayerNorm and GELU kernels, at the same float32 precision. `use_text_backend` exports the
encoder once (cached on disk, keyed to its weights and the library versions) and, for "auto", keeps
ONNX Runtime only when a probe shows it gives the same sentence features as PyTorch; otherwise the
encoder stays on PyTorch and the reason is logged. Training and gradient runs always use PyTorch.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from textitsr.atomic import atomic_write_bytes
from textitsr.errors import InputError

log = logging.getLogger(__name__)

#: What callers may ask for; "auto" resolves to one of the other two.
TEXT_BACKENDS = ("auto", "torch", "onnx")
#: Least cosine between ONNX Runtime and PyTorch sentence features for "auto" to keep ONNX Runtime.
MIN_ONNX_COSINE = 0.9999
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
    """An ONNX Runtime session of a text model: token batch -> last hidden states."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, batch: Any) -> Tensor:
        feed = {name: batch[name].cpu().numpy().astype(np.int64) for name in self.inputs}
        return torch.from_numpy(self.session.run(None, feed)[0])


class _HiddenStates(torch.nn.Module):
    """Wraps a Hugging Face text model so the exported graph has plain tensor inputs and one output."""

    def __init__(self, model: torch.nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: Tensor) -> Tensor:
        return self.model(**dict(zip(self.names, tensors, strict=True))).last_hidden_state


def cache_dir() -> Path:
    """Where exported graphs are kept: $TEXTITSR_CACHE_DIR, else the user's cache folder."""
    root = os.environ.get("TEXTITSR_CACHE_DIR")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "textitsr"
    return Path(root).expanduser() / "onnx"


def export_key(encoder: Any) -> str:
    """Changes whenever the exported graph would: the encoder's weights and the library versions."""
    import onnxruntime as ort

    digest = hashlib.sha1(f"{torch.__version__} {ort.__version__} {type(encoder.model).__name__}".encode())
    for name, tensor in encoder.model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()[:16]


def export_text_model(encoder: Any, path: Path) -> Path:
    """Export `encoder.model` (batch and sequence length dynamic) to `path`, written atomically."""
    sample = encoder.tokenizer(list(PROBE_TEXTS[:2]), padding=True, return_tensors="pt")
    names = [n for n in _INPUTS if n in sample]
    axes = {n: {0: "batch", 1: "tokens"} for n in [*names, "hidden"]}
    buf = io.BytesIO()
    model = _HiddenStates(encoder.model, names).eval()
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer's notes on shape-dependent Python branches: those branches do not depend on
        # the batch or sequence length for these models (checked by the probe and the tests).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, tuple(sample[n] for n in names), buf, input_names=names, output_names=["hidden"],
            dynamic_axes=axes, opset_version=17, dynamo=False,
        )
    atomic_write_bytes(path, buf.getvalue())
    return path


def onnx_runtime_for(encoder: Any, threads: int = 1) -> OnnxTextRuntime:
    """The runtime of `encoder`, exporting it first unless the cache already holds this graph."""
    path = cache_dir() / f"{export_key(encoder)}.onnx"
    if path.is_file():
        try:
            return OnnxTextRuntime(path, threads)
        except Exception as exc:  # noqa: BLE001 - an unreadable cached graph is exported again
            log.warning("cached text encoder graph %s unreadable (%s): exporting it again", path, exc)
    log.info("exporting text encoder %s to %s", encoder.name, path)
    export_text_model(encoder, path)
    return OnnxTextRuntime(path, threads)


def probe_cosine(encoder: Any, runtime: OnnxTextRuntime) -> float:
    """Least cosine between the sentence features of `PROBE_TEXTS` on PyTorch and on `runtime`."""
    previous = encoder.runtime
    try:
        with torch.inference_mode():
            encoder.runtime = None
            ref = torch.cat([encoder([t]) for t in PROBE_TEXTS])
            encoder.runtime = runtime
            low = torch.cat([encoder([t]) for t in PROBE_TEXTS])
    finally:
        encoder.runtime = previous
    return float(torch.nn.functional.cosine_similarity(ref, low, dim=-1).min())


def use_text_backend(encoder: Any, requested: str = "auto", threads: int = 1) -> TextBackendChoice:
    """Set the backend `encoder` answers inference calls on (auto/torch/onnx) and say which and why."""
    if requested not in TEXT_BACKENDS:
        raise InputError(f"text_backend={requested!r}: expected one of {', '.join(TEXT_BACKENDS)}")
    choice = _choose(encoder, requested, threads)
    log.info("text queries on %s (%s)", choice.backend, choice.reason)
    return choice


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
    try:
        runtime = onnx_runtime_for(encoder, threads)
        cosine = probe_cosine(encoder, runtime)
    except Exception as exc:  # noqa: BLE001 - export/runtime failures of any kind: stay on PyTorch
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


def _unsupported(encoder: Any) -> str | None:
    """Why `encoder` cannot run on ONNX Runtime here, or None when it can."""
    from textitsr.models.hf_encoders import HFTextEncoder

    if not isinstance(encoder, HFTextEncoder) or encoder.is_clip:
        return f"text encoder {getattr(encoder, 'name', type(encoder).__name__)!r} is not a BERT-like model"
    if next(encoder.model.parameters()).device.type != "cpu":
        return "the text encoder is not on the CPU"
    try:
        import onnx  # noqa: F401 - torch's exporter needs it
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        return f"onnxruntime/onnx not installed ({exc})"
    return None
