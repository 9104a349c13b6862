"""A model's whole text side as one ONNX graph, so a one-shot text query needs neither torch nor
transformers: tokenizers (the model's own fast tokenizer, saved as tokenizer.json) + ONNX Runtime.

A cold `textitsr search` used to spend most of its time importing torch and transformers and
building the text encoder. `export_query_graph` writes, once per checkpoint, the graph of tokens ->
text encoder -> pooling -> text head -> unit vector with the tokenizer and a spec, under
`user_cache_dir()/query/<checkpoint id>/` (written to a temporary folder and renamed). It is kept only
when it tokenises the probe sentences exactly as transformers does and its vectors agree with
PyTorch's (cosine >= MIN_COSINE). `QueryGraph.find(checkpoint_id)` opens it without importing torch.
Change-only "no change" sentences are read after the graph as PyTorch reads them
(`embedding.no_change_queries`, numpy only), from the type part the spec records.
Only BERT-like text encoders (masked mean pooling) are exported; CLIP-style ones keep PyTorch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from textitsr.config import user_cache_dir
from textitsr.errors import InputError

log = logging.getLogger(__name__)

FORMAT = "textitsr-query-graph"
#: 2: the spec records the text head's type part, read for "no change" sentences after the graph.
VERSION = 2
GRAPH, TOKENIZER, SPEC = "text.onnx", "tokenizer.json", "query.json"
#: Least cosine between the graph's and PyTorch's query vectors for the graph to be kept.
MIN_COSINE = 0.9999
PROBE_TEXTS = (
    "new buildings along the road",
    "nothing has changed",
    "a road is built across the bare land and several houses appear in the upper left corner",
)


@dataclass(frozen=True)
class GraphBackend:
    """What text queries run on (the API's /health and logs show it, as for `models.onnx_text`)."""

    backend: str
    reason: str


def graph_dir(checkpoint_id: str) -> Path:
    """Where the query graph of a checkpoint is kept."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", str(checkpoint_id)):
        raise InputError(f"checkpoint id {checkpoint_id!r}: expected letters, digits, '_', '.', '-'")
    return user_cache_dir() / "query" / str(checkpoint_id)


class QueryGraph:
    """Text -> (1, d) unit vector on ONNX Runtime; `encode_texts` answers like a model's."""

    def __init__(self, folder: Path, threads: int = 1) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        folder = Path(folder)
        spec = json.loads((folder / SPEC).read_text("utf-8"))
        if spec.get("format") != FORMAT:
            raise InputError(f"{folder / SPEC}: not a textitsr query graph spec")
        if spec.get("version") != VERSION:
            raise InputError(
                f"{folder / SPEC}: a query graph of an earlier textitsr (version {spec.get('version')!r}, "
                f"expected {VERSION}); the next index build or search writes it again"
            )
        self.spec, self.folder = spec, folder
        self.checkpoint_id = str(spec["checkpoint_id"])
        self.embed_dim = int(spec["embed_dim"])
        self.type_part = None if spec.get("type_part") is None else slice(*map(int, spec["type_part"]))
        self.inputs = [str(n) for n in spec["inputs"]]
        self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(folder / GRAPH), options, providers=["CPUExecutionProvider"])
        self.backend_choice = GraphBackend("onnx-graph", f"exported query graph {folder}")

    @classmethod
    def find(cls, checkpoint_id: str, threads: int = 1) -> QueryGraph | None:
        """The checkpoint's graph, or None when none was exported (or it cannot be opened)."""
        folder = graph_dir(checkpoint_id)
        if not (folder / SPEC).is_file():
            return None
        try:
            graph = cls(folder, threads)
        except Exception as exc:  # noqa: BLE001 - an unreadable graph means "use PyTorch", logged
            log.warning("query graph %s cannot be opened (%s): using PyTorch", folder, exc)
            return None
        return graph if graph.checkpoint_id == checkpoint_id else None

    def tokens(self, texts: list[str]) -> dict[str, np.ndarray]:
        """The graph's int64 inputs for `texts` (padded to the longest, truncated to max_length)."""
        encodings = self.tokenizer.encode_batch(list(texts))
        feed = {"input_ids": [e.ids for e in encodings], "token_type_ids": [e.type_ids for e in encodings],
                "attention_mask": [e.attention_mask for e in encodings]}
        return {name: np.asarray(feed[name], dtype=np.int64) for name in self.inputs}

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """(len(texts), d) float32 unit vectors."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise InputError("texts: expected a list of strings")
        if not texts:
            return np.zeros((0, self.embed_dim), np.float32)
        from textitsr.embedding.no_change_queries import emphasise_no_change

        vectors = np.asarray(self.session.run(None, self.tokens(texts))[0], dtype=np.float32)
        return emphasise_no_change(texts, vectors, self.type_part)


def export_query_graph(text_side: Any, checkpoint_id: str) -> Path | None:
    """Write the query graph of a loaded text side (a `TextSide` or full model) for `checkpoint_id`;
    the folder, or None when this text encoder cannot be exported (reason logged)."""

    from textitsr.atomic import atomic_dir
    from textitsr.embedding.encode import encode_texts
    from textitsr.embedding.no_change_queries import query_type_part
    from textitsr.models.onnx_export import export
    from textitsr.models.onnx_text import _unsupported

    encoder = text_side.text_encoder
    unsupported = _unsupported(encoder)
    hf = encoder.tokenizer if unsupported is None else None
    if hf is None or not getattr(hf, "is_fast", False):
        log.info("no query graph for checkpoint %s: %s", checkpoint_id, unsupported or "no fast tokenizer")
        return None
    sample = hf(list(PROBE_TEXTS[:2]), padding=True, truncation=True, max_length=encoder.max_length,
                return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    folder = graph_dir(checkpoint_id)
    with atomic_dir(folder) as tmp:
        export(_TextGraph(text_side, names), [sample[n] for n in names], names, ["embedding"],
               {n: {0: "batch", 1: "tokens"} for n in names} | {"embedding": {0: "batch"}}, tmp / GRAPH)
        tokenizer = hf.backend_tokenizer
        tokenizer.enable_truncation(max_length=int(encoder.max_length))
        tokenizer.enable_padding(pad_id=int(hf.pad_token_id or 0), pad_token=str(hf.pad_token or "[PAD]"))
        tokenizer.save(str(tmp / TOKENIZER))
        part = query_type_part(text_side)
        spec = {"format": FORMAT, "version": VERSION, "checkpoint_id": checkpoint_id, "inputs": names,
                "embed_dim": int(text_side.config.embed_dim), "max_length": int(encoder.max_length),
                "type_part": None if part is None else [part.start, part.stop]}
        (tmp / SPEC).write_text(json.dumps(spec, indent=1), "utf-8")
        graph = QueryGraph(tmp)
        for text in PROBE_TEXTS:  # the same tokens as transformers, one sentence and a padded batch
            ref = hf([text], truncation=True, max_length=encoder.max_length)["input_ids"][0]
            if graph.tokens([text])["input_ids"][0].tolist() != list(ref):
                raise InputError(f"query graph of {checkpoint_id}: tokenizers and transformers disagree")
        want = encode_texts(text_side, list(PROBE_TEXTS))
        singles = [graph.encode_texts([t]) for t in PROBE_TEXTS]
        got = np.concatenate([*singles, graph.encode_texts(list(PROBE_TEXTS))])
        cosine = float((got * np.concatenate([want, want])).sum(axis=1).min())
        if cosine < MIN_COSINE:
            raise InputError(f"query graph of {checkpoint_id}: cosine to PyTorch {cosine:.6f} < {MIN_COSINE}")
        spec["min_cosine"] = cosine
        (tmp / SPEC).write_text(json.dumps(spec, indent=1), "utf-8")
    log.info("query graph of %s written to %s (cosine to PyTorch %.6f)", checkpoint_id, folder, cosine)
    return folder


def prepare_query_graph(text_side: Any, checkpoint_id: str) -> Path | None:
    """`export_query_graph` unless the graph is there already; a failure is logged, never raised (the
    PyTorch path keeps working)."""
    if QueryGraph.find(checkpoint_id) is not None:
        return graph_dir(checkpoint_id)
    try:
        return export_query_graph(text_side, checkpoint_id)
    except Exception as exc:  # noqa: BLE001 - a missing fast path is not an error
        log.warning("query graph of %s not written: %s", checkpoint_id, exc)
        return None


def _make_text_graph() -> type:
    import torch
    import torch.nn.functional as F  # noqa: N812

    from textitsr.models.backbone import _masked_mean

    class TextGraph(torch.nn.Module):
        """tokens -> hidden states -> masked mean (-> unit length) -> text head: the exported graph."""

        def __init__(self, side: Any, names: list[str]) -> None:
            super().__init__()
            self.side, self.names = side, names

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            batch = dict(zip(self.names, tensors, strict=True))
            encoder = self.side.text_encoder
            feats = _masked_mean(encoder.model(**batch).last_hidden_state, batch["attention_mask"])
            if encoder.normalize:
                feats = F.normalize(feats, dim=-1)
            return self.side.text_head(feats)

    return TextGraph


def _TextGraph(side: Any, names: list[str]) -> Any:  # noqa: N802 - builds the torch module lazily
    return _make_text_graph()(side, names)
