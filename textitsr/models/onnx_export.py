"""Frozen backbones as ONNX Runtime sessions: export once, cache the graph on disk, run it on the CPU.

On CPUs without native bf16 the frozen backbones are the cost of a text query and of an archive
build. ONNX Runtime runs the same float32 graph with fused kernels, faster than PyTorch on such
CPUs (benchmarks/results/search.md, build_speed.md). A graph is exported with torch's TorchScript exporter
(batch and sequence axes dynamic) and kept under `cache_dir()`, named by a hash of the module's
weights and the library versions, so a changed model or library never reuses a stale graph.
Callers check a new session against PyTorch before using it (`models.onnx_text`,
`embedding.encode.compile_image_backbone`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from textitsr.atomic import atomic_write_bytes

log = logging.getLogger(__name__)


def onnx_missing() -> str | None:
    """Why ONNX Runtime cannot be used here, or None when it can."""
    try:
        import onnx  # noqa: F401 - torch's exporter needs it
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        return f"onnxruntime/onnx not installed ({exc})"
    return None


class OnnxSession:
    """An ONNX Runtime session on the CPU: named numpy inputs -> its outputs as float32 tensors."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        #: Whether the graph was read from the cache rather than exported by this process.
        self.from_cache = False
        self._run_options = ort.RunOptions()

    def run(self, feed: dict[str, np.ndarray]) -> list[Tensor]:
        return [torch.from_numpy(out) for out in self.session.run(None, feed, self._run_options)]

    def terminate(self) -> None:
        """Stop a run in progress on another thread (and every later one): the session is abandoned."""
        self._run_options.log_severity_level = 4  # the stopped run's error is expected, not news
        self._run_options.terminate = True


def cache_dir() -> Path:
    """Where exported graphs are kept: $TEXTITSR_CACHE_DIR, else the user's cache folder."""
    from textitsr.config import user_cache_dir

    return user_cache_dir() / "onnx"


def export_key(module: torch.nn.Module, role: str) -> str:
    """Changes whenever the exported graph would: the module's weights and the library versions."""
    import onnxruntime as ort

    digest = hashlib.sha1(f"{role} {torch.__version__} {ort.__version__} {type(module).__name__}".encode())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()[:16]


def export(
    module: torch.nn.Module, example: Sequence[Tensor], input_names: Sequence[str],
    output_names: Sequence[str], dynamic: dict[str, dict[int, str]], path: Path,
) -> Path:
    """Export `module` called on `example` to `path` (written atomically)."""
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer's notes on shape-dependent Python branches: callers compare the session with
        # PyTorch on other shapes than the example before using it.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(), tuple(example), buf, input_names=list(input_names),
            output_names=list(output_names), dynamic_axes=dynamic, opset_version=17, dynamo=False,
        )
    atomic_write_bytes(path, buf.getvalue())
    return path


def cached_session(
    module: torch.nn.Module, role: str, threads: int, example: Sequence[Tensor], input_names: Sequence[str],
    output_names: Sequence[str], dynamic: dict[str, dict[int, str]], *, fresh: bool = False,
) -> OnnxSession:
    """A session of `module`, exporting it first unless the cache already holds this graph (or
    `fresh` asks for a new export, e.g. when the cached one failed its check against PyTorch).

    A cached graph is a file anyone with access to the cache could have replaced: callers check
    its outputs (finite, equal to PyTorch's) within a time limit before using it.
    """
    path = cache_dir() / f"{role}-{export_key(module, role)}.onnx"
    if path.is_file() and not path.is_symlink() and not fresh:
        try:
            session = OnnxSession(path, threads)
            session.from_cache = True
            return session
        except Exception as exc:  # noqa: BLE001 - an unreadable cached graph is exported again
            log.warning("cached %s graph %s unreadable (%s): exporting it again", role, path, exc)
    log.info("exporting the %s to %s", role, path)
    export(module, example, input_names, output_names, dynamic, path)
    return OnnxSession(path, threads)


def min_cosine(a: Tensor, b: Tensor) -> float:
    """Least row-wise cosine between two (N, ...) feature batches (flattened per row); NaN when
    either holds a value that is not finite (so no `cosine < limit` test can pass it by accident)."""
    if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
        return float("nan")
    return float(torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=-1).min())
