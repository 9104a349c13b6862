"""Model loading and encoding: the one path from a checkpoint to text and pair embeddings.

Used by the index build, the search service and evaluation alike, so a text query and a stored
pair are always embedded the same way.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textitsr.embedding.no_change_queries import read_no_change
from textitsr.errors import InputError

#: Backbone precisions: fp32, or bf16 autocast (faster on CPUs with bf16 support).
PRECISIONS = ("fp32", "bf16")

_MODELS: dict[tuple[str, str], Any] = {}
_TRACE_LOCK = threading.Lock()

log = logging.getLogger(__name__)


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cpu'/'cuda'/'cuda:N' as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine (use cpu or auto)")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise InputError(f"--device: expected cpu, cuda or auto, got {device!r}") from err


@contextlib.contextmanager
def backbone_precision(model: Any, precision: str) -> Iterator[None]:
    """Run `model`'s backbones at `precision` inside the block, restoring the previous choice after."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    bf16_before = getattr(model, "bf16", False)
    model.bf16 = precision == "bf16"
    try:
        yield
    finally:
        model.bf16 = bf16_before


#: Intra-op threads for one short text query: splitting a sentence's small matrix products over
#: more threads costs more in hand-over (and in cores taken from other work) than it saves.
QUERY_THREADS = 1


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with torch on `n` intra-op threads, then restore the previous count."""
    before = torch.get_num_threads()
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_model(checkpoint: Path, device: str = "cpu") -> Any:
    """The checkpoint's model, loaded once per process (Dask workers reuse it across shards)."""
    from textitsr.models.checkpoint import load_checkpoint

    key = (str(Path(checkpoint).resolve()), device)
    if key not in _MODELS:
        model = load_checkpoint(Path(checkpoint), device=device)
        model.eval()
        _MODELS[key] = model
    return _MODELS[key]


def to_numpy(t: torch.Tensor | np.ndarray) -> np.ndarray:
    """float32 numpy copy of a tensor (any device) or array."""
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
            emb = to_numpy(
                model.encode_pairs(np.stack([before[i] for i in idx]), np.stack([after[i] for i in idx]))
            )
            for j, i in enumerate(idx):
                out[i] = emb[j]
    return np.stack(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


#: Texts a batch: PyTorch runs few large batches best; ONNX Runtime smaller ones (less padding).
TEXT_BATCH = {"torch": 256, "onnx": 64}


def encode_texts(model: Any, texts: list[str], batch_size: int | None = None) -> np.ndarray:
    """(N, d) embeddings of `texts`, `batch_size` at a time (None: `TEXT_BATCH` for the text
    encoder's runtime).

    Archives repeat their captions (templated sentences, "no change"), so each distinct text is
    encoded once; distinct texts go in order of token count (as sentence-transformers does) so a
    batch pads to similar lengths. Sentences that only say nothing changed lean on their change
    reading (`no_change_queries`).
    """
    if not texts:
        return np.zeros((0, 0), np.float32)
    if batch_size is None:
        on_onnx = getattr(getattr(model, "text_encoder", None), "runtime", None) is not None
        batch_size = TEXT_BATCH["onnx" if on_onnx else "torch"]
    distinct, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    order = _by_length(model, [str(t) for t in distinct])
    parts = []
    with torch.inference_mode():
        for i in range(0, len(order), batch_size):
            chunk = [str(distinct[j]) for j in order[i : i + batch_size]]
            parts.append(to_numpy(model.encode_texts(chunk)))
    emb = np.empty((len(distinct), parts[0].shape[1]), np.float32)
    emb[order] = np.concatenate(parts)
    emb = read_no_change(model, [str(t) for t in distinct], emb)
    return emb[inverse.reshape(-1)]


def _by_length(model: Any, texts: list[str]) -> list[int]:
    """Indices of `texts` by token count as the text encoder tokenizes them (by characters where it
    has no tokenizer); a single text is not tokenized twice."""
    tokenizer = getattr(getattr(model, "text_encoder", None), "tokenizer", None)
    if len(texts) < 2 or tokenizer is None:
        lengths = [len(t) for t in texts]
    else:
        lengths = [len(ids) for ids in tokenizer(texts, truncation=True)["input_ids"]]
    return sorted(range(len(texts)), key=lengths.__getitem__)


def compile_image_backbone(model: Any, runtime: str = "auto") -> bool:
    """Give `model` a compiled copy of its frozen image backbone for fp32 CPU inference.

    `runtime`: "onnx" (ONNX Runtime), "torchscript" (a frozen TorchScript graph,
    `torch.jit.optimize_for_inference`: convolutions folded and fused into oneDNN kernels), "eager"
    (none), or "auto": ONNX Runtime when it is installed and a probe gives the same features as
    PyTorch, else TorchScript. Both embed pairs faster than eager mode on CPUs without native bf16,
    with the same features (benchmarks/results/build_speed.md). Only for a frozen CNN backbone on the
    CPU (the model's `_pair_features` falls back to eager for bf16, gradients or a fine-tuned tail);
    done once per model. Returns whether the model now has one.
    """
    check_backbone_runtime(runtime)
    enc = getattr(model, "image_encoder", None)
    if enc is None or getattr(model, "fast_image_encoder", None) is not None:
        return getattr(model, "fast_image_encoder", None) is not None
    if runtime == "eager" or model.device.type != "cpu" or enc.unfrozen:
        return False
    if getattr(model, "image_tail", None) is not None:
        return False
    with _TRACE_LOCK:
        if model.fast_image_encoder is None:
            size = enc.image_size
            example = enc.preprocess(np.random.default_rng(0).integers(0, 256, (2, size, size, 3), np.uint8))
            fast = _onnx_backbone(enc, example, runtime) if runtime in ("auto", "onnx") else None
            if fast is None:
                fast = _torchscript_backbone(enc, example)
            if fast is None:
                return False
            model.fast_image_encoder = fast
    return True


#: What `compile_image_backbone` may run the frozen image backbone on.
BACKBONE_RUNTIMES = ("auto", "onnx", "torchscript", "eager")


def check_backbone_runtime(runtime: str) -> str:
    """`runtime`, refused with the allowed names before any work (a build checks it at any precision)."""
    if runtime not in BACKBONE_RUNTIMES:
        raise InputError(f"backbone runtime {runtime!r}: expected one of {', '.join(BACKBONE_RUNTIMES)}")
    return runtime


#: Least cosine between ONNX Runtime and PyTorch backbone features for "auto" to keep ONNX Runtime.
MIN_ONNX_BACKBONE_COSINE = 0.9999


def _onnx_backbone(enc: Any, example: torch.Tensor, runtime: str) -> _OnnxBackbone | None:
    """The backbone on ONNX Runtime, or None (logged) where "auto" should not use it."""
    from textitsr.models.onnx_export import cached_session, min_cosine, onnx_missing

    missing = onnx_missing()
    if missing:
        if runtime == "onnx":
            raise InputError(f"backbone runtime 'onnx': {missing}")
        log.info("image backbone not on ONNX Runtime: %s", missing)
        return None
    try:
        session = cached_session(
            enc, "image-backbone", torch.get_num_threads(), [example], ["pixels"], ["glob", "tokens"],
            {"pixels": {0: "batch", 2: "height", 3: "width"}, "glob": {0: "batch"},
             "tokens": {0: "batch", 1: "n"}},
        )
        fast = _OnnxBackbone(session)
        with torch.no_grad():
            ref = enc(example)
        got = fast(example)
        cosine = min(min_cosine(ref[0], got[0]), min_cosine(ref[1], got[1]))
    except Exception as exc:  # noqa: BLE001 - export/runtime failures of any kind: PyTorch still works
        if runtime == "onnx":
            raise InputError(
                f"backbone runtime 'onnx': cannot run the image backbone on ONNX Runtime: {exc}"
            ) from exc
        log.warning("image backbone not on ONNX Runtime: %s: %s", type(exc).__name__, exc)
        return None
    if cosine != cosine:  # NaN: the graph's features are not finite, whatever was asked for
        if runtime == "onnx":
            raise InputError(f"backbone runtime 'onnx': {session.path} gives features that are not finite")
        log.warning("image backbone not on ONNX Runtime: %s gives features that are not finite", session.path)
        return None
    if runtime == "auto" and cosine < MIN_ONNX_BACKBONE_COSINE:
        log.warning("image backbone not on ONNX Runtime: probe cosine to PyTorch %.6f < %s", cosine,
                    MIN_ONNX_BACKBONE_COSINE)
        return None
    log.info("image backbone on ONNX Runtime (probe cosine to PyTorch %.6f)", cosine)
    return fast


def _torchscript_backbone(enc: Any, example: torch.Tensor) -> _Compiled | None:
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # Tracing warns about every Python branch on tensor shapes; the traced graph serves only
            # the one input size it was traced at, and its first run below checks it executes.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # the tracer reads every attribute of the Hugging Face module, deprecated ones included
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
            traced = torch.jit.trace(enc, example, check_trace=False)
            fast = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
            fast(example)  # compile the graph now, not in the first real batch
    except (RuntimeError, TypeError) as err:  # eager still works; only slower
        log.warning("image backbone kept in eager mode: tracing failed (%s)", err)
        return None
    return _Compiled(fast)


class _OnnxBackbone:
    """The backbone's ONNX Runtime session, called as the module is: pixels -> (global, tokens)."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def __call__(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        glob, tokens = self.session.run({"pixels": pixels.detach().cpu().numpy().astype(np.float32)})
        return glob, tokens


class _Compiled:
    """A compiled backbone held outside the module tree (so it is never saved in a checkpoint)."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def __call__(self, pixels: torch.Tensor) -> Any:
        return self._module(pixels)
