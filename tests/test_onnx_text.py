"""Text queries on ONNX Runtime: same sentence features as PyTorch, and PyTorch whenever it cannot be."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import torch

import textitsr.models.onnx_export as onnx_export
import textitsr.models.onnx_text as onnx_text
from textitsr.errors import InputError
from textitsr.models.hf_encoders import HFTextEncoder

SENTENCES = ["a new road was built", "two houses , the river", "the trees were the new buildings ."]


@pytest.fixture
def bert(tiny_hf_models, tmp_path, monkeypatch) -> HFTextEncoder:
    monkeypatch.setenv("TEXTITSR_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    return HFTextEncoder(str(tiny_hf_models.bert))


def _features(encoder: HFTextEncoder) -> np.ndarray:
    with torch.inference_mode():
        return encoder(SENTENCES).numpy()


def test_auto_runs_on_onnx_with_the_same_features(bert, tmp_path):
    ref = _features(bert)
    choice = onnx_text.use_text_backend(bert, "auto")
    assert choice.backend == "onnx" and bert.runtime is not None
    assert list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    np.testing.assert_allclose(_features(bert), ref, atol=1e-5)
    # Padded batches of different lengths (the dynamic axes) give each sentence's own features.
    with torch.inference_mode():
        one_by_one = np.concatenate([bert([s]).numpy() for s in SENTENCES])
    np.testing.assert_allclose(one_by_one, ref, atol=1e-5)


def test_scoped_backend_is_restored_after_the_block_and_reused_by_the_next(bert):
    ref = _features(bert)
    with onnx_text.text_backend(bert, "auto", threads=2) as choice:
        assert choice.backend == "onnx" and bert.runtime is not None
        session = bert.runtime
        np.testing.assert_allclose(_features(bert), ref, atol=1e-5)
    assert bert.runtime is None  # back on PyTorch, as before the block
    with onnx_text.text_backend(bert, "auto", threads=2):
        assert bert.runtime is session  # the next shard of a build: no second export or probe
    query = onnx_text.use_text_backend(bert, "auto", threads=1)  # a service's own choice
    with onnx_text.text_backend(bert, "auto", threads=2):
        assert bert.runtime is session
    assert bert.runtime is not session and bert.runtime is not None
    assert onnx_text.use_text_backend(bert, "auto", threads=1) is query


def test_gradient_runs_stay_on_pytorch(bert):
    onnx_text.use_text_backend(bert, "onnx")
    assert bert.runtime is not None
    called = []
    bert.runtime = lambda batch: called.append(batch) or None
    with torch.enable_grad():
        bert(SENTENCES)
    assert not called


def test_cached_graph_is_reused_and_a_broken_one_exported_again(bert, monkeypatch):
    onnx_text.use_text_backend(bert, "onnx")
    path = bert.runtime.path
    exports = []
    real_export = onnx_export.export
    monkeypatch.setattr(onnx_export, "export", lambda *args: exports.append(args[-1]) or real_export(*args))
    # Another request than the last one is set up anew (not answered from the in-memory choice):
    # its session comes from the graph on disk.
    assert onnx_text.use_text_backend(bert, "auto").backend == "onnx"
    assert exports == []
    path.write_bytes(b"not an onnx graph")
    assert onnx_text.use_text_backend(bert, "onnx").backend == "onnx"
    assert exports == [path]


def test_auto_keeps_pytorch_when_the_probe_disagrees(bert, monkeypatch, caplog):
    monkeypatch.setattr(onnx_text, "probe_cosine", lambda encoder, runtime: 0.98)
    with caplog.at_level(logging.INFO, logger="textitsr.models.onnx_text"):
        choice = onnx_text.use_text_backend(bert, "auto")
    assert choice.backend == "torch" and bert.runtime is None
    assert "0.980000 < 0.9999" in choice.reason and "keeping PyTorch" in caplog.text
    # Asked for explicitly, ONNX Runtime is used all the same (the reason shows the cosine).
    assert onnx_text.use_text_backend(bert, "onnx").backend == "onnx"
    assert onnx_text.use_text_backend(bert, "torch").backend == "torch" and bert.runtime is None


def test_without_onnxruntime_auto_stays_on_pytorch_and_onnx_is_refused(bert, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    choice = onnx_text.use_text_backend(bert, "auto")
    assert choice.backend == "torch" and "not installed" in choice.reason
    with pytest.raises(InputError, match="text_backend='onnx': onnxruntime/onnx not installed"):
        onnx_text.use_text_backend(bert, "onnx")


def test_clip_text_models_and_bad_names(tiny_hf_models, monkeypatch, tmp_path):
    monkeypatch.setenv("TEXTITSR_CACHE_DIR", str(tmp_path))
    clip = HFTextEncoder(str(tiny_hf_models.clip))
    assert onnx_text.use_text_backend(clip, "auto").backend == "torch"
    with pytest.raises(InputError, match="not a BERT-like model"):
        onnx_text.use_text_backend(clip, "onnx")
    with pytest.raises(InputError, match="text_backend='fast': expected one of auto, torch, onnx"):
        onnx_text.use_text_backend(clip, "fast")
    assert onnx_text.use_text_backend(None, "auto").backend == "torch"
