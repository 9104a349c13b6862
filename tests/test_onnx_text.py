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


def _hostile_graph(kind: str, hidden: int) -> bytes:
    """A graph with the text encoder's inputs and output: all-NaN features, or a Loop that never ends."""
    from onnx import TensorProto as T
    from onnx import helper as h

    inputs = [h.make_tensor_value_info(n, T.INT64, ["batch", "tokens"])
              for n in ("input_ids", "attention_mask", "token_type_ids")]
    consts = [h.make_tensor("axes", T.INT64, [1], [2]),
              h.make_tensor("nan", T.FLOAT, [1, 1, hidden], [float("nan")] * hidden),
              h.make_tensor("true", T.BOOL, [], [True]), h.make_tensor("one", T.FLOAT, [], [1.0])]
    nodes = [h.make_node("Cast", ["input_ids"], ["f"], to=T.FLOAT),
             h.make_node("Unsqueeze", ["f", "axes"], ["f3"])]
    if kind == "nan":
        nodes.append(h.make_node("Mul", ["f3", "nan"], ["hidden"]))
    else:
        body = h.make_graph(
            [h.make_node("Identity", ["cond_in"], ["cond_out"]),
             h.make_node("Add", ["v_in", "one"], ["v_out"])],
            "forever",
            [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("cond_in", T.BOOL, []),
             h.make_tensor_value_info("v_in", T.FLOAT, None)],
            [h.make_tensor_value_info("cond_out", T.BOOL, []),
             h.make_tensor_value_info("v_out", T.FLOAT, None)],
        )
        nodes.append(h.make_node("Loop", ["", "true", "f3"], ["hidden"], body=body))
    graph = h.make_graph(nodes, kind, inputs, [h.make_tensor_value_info("hidden", T.FLOAT, None)], consts)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8).SerializeToString()


def test_a_cached_graph_with_nan_outputs_is_exported_again(bert, caplog):
    ref = _features(bert)
    onnx_text.use_text_backend(bert, "onnx")
    path = bert.runtime.path
    path.write_bytes(_hostile_graph("nan", bert.model.config.hidden_size))
    with caplog.at_level(logging.WARNING, logger="textitsr.models.onnx_text"):
        choice = onnx_text.use_text_backend(bert, "auto")
    assert "not finite" in caplog.text
    assert choice.backend == "onnx" and np.isfinite(float(choice.reason.split()[-1]))
    np.testing.assert_allclose(_features(bert), ref, atol=1e-5)
    assert path.read_bytes() != _hostile_graph("nan", bert.model.config.hidden_size)


def test_nan_features_are_refused_even_when_onnx_is_asked_for(bert, monkeypatch):
    monkeypatch.setattr(onnx_text, "probe_cosine", lambda encoder, runtime: float("nan"))
    assert onnx_text.use_text_backend(bert, "auto").backend == "torch" and bert.runtime is None
    with pytest.raises(InputError, match="not finite"):
        onnx_text.use_text_backend(bert, "onnx")


def test_a_cached_graph_that_never_finishes_is_abandoned(bert, monkeypatch, caplog):
    import time

    ref = _features(bert)
    onnx_text.use_text_backend(bert, "onnx")
    path = bert.runtime.path
    path.write_bytes(_hostile_graph("loop", bert.model.config.hidden_size))
    monkeypatch.setattr(onnx_text, "PROBE_TIMEOUT_S", 1.0)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="textitsr.models.onnx_text"):
        choice = onnx_text.use_text_backend(bert, "auto")
    assert time.monotonic() - started < 20
    assert choice.backend == "torch" and "did not finish within 1 s" in choice.reason
    assert "stays on PyTorch" in caplog.text and bert.runtime is None
    np.testing.assert_allclose(_features(bert), ref, atol=1e-5)
    assert not path.exists()  # the next start exports a fresh graph
