"""Embedding throughput features keep the embeddings: precision choice, traced backbone, text dedup."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import small_world, tiny_model_config

import textitsr.embedding.precision as precision
from textitsr.embedding.encode import backbone_precision, encode_rgb_pairs, encode_texts
from textitsr.errors import InputError


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_world(tmp_path_factory.mktemp("speed") / "world", n_train=4, n_val=2, n_test=2)


@pytest.fixture(scope="module")
def tiny_model(tiny_hf_models):
    from textitsr.models.textitsr import TextITSR

    torch.manual_seed(0)
    return TextITSR(tiny_model_config(tiny_hf_models))


def _pairs(world: Path, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    from textitsr.data.world import SyntheticSource

    pairs = list(itertools.islice(SyntheticSource(world).pairs(None), n))
    return [p.rgb("before") for p in pairs], [p.rgb("after") for p in pairs]


def test_auto_falls_back_to_fp32_when_the_bf16_check_fails(tiny_model, world, monkeypatch, caplog,
                                                           tmp_path) -> None:
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    probe = lambda: _pairs(world, 2)  # noqa: E731
    monkeypatch.setattr(precision, "MIN_BF16_COSINE", 1.5)  # no embedding can pass
    with caplog.at_level(logging.INFO, logger="textitsr.embedding.precision"):
        choice = precision.choose_precision(tiny_model, "auto", probe)
    assert choice.precision == "fp32"
    assert "< 1.5" in choice.reason and "fp32" in caplog.text
    monkeypatch.setattr(precision, "MIN_BF16_COSINE", 0.99)
    monkeypatch.setenv("TEXTITSR_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(precision, "probe_seconds", lambda *args: {"fp32": 0.2, "bf16": 0.1})
    assert precision.choose_precision(tiny_model, "auto", probe).precision == "bf16"


def test_auto_picks_the_faster_precision_and_keeps_the_timing(tiny_model, world, monkeypatch,
                                                              tmp_path) -> None:
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    monkeypatch.setenv("TEXTITSR_CACHE_DIR", str(tmp_path))
    probe = lambda: _pairs(world, 2)  # noqa: E731
    seconds = precision.probe_seconds(tiny_model, *probe())  # the real measurement
    assert set(seconds) == {"fp32", "bf16"} and all(0 < s < 60 for s in seconds.values())
    monkeypatch.setattr(precision, "probe_seconds", lambda *args: {"fp32": 0.1, "bf16": 0.3})
    choice = precision.choose_precision(tiny_model, "auto", probe)
    assert choice.precision == "fp32" and "fp32 100 ms, bf16 300 ms" in choice.reason
    assert (tmp_path / precision.TIMINGS_FILE).is_file()

    def no_second_timing(*args):
        raise AssertionError("timed again although this machine's timing is kept")

    monkeypatch.setattr(precision, "probe_seconds", no_second_timing)
    again = precision.choose_precision(tiny_model, "auto", probe)
    assert again.precision == "fp32" and "measured earlier" in again.reason
    other_runtime = precision.machine_key(tiny_model, "eager", torch.device("cpu"))
    assert other_runtime != precision.machine_key(tiny_model, "auto", torch.device("cpu"))


def test_auto_keeps_fp32_without_native_bf16_or_probe_pairs(tiny_model, monkeypatch) -> None:
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    choice = precision.choose_precision(tiny_model, "auto", lambda: _pairs(Path("unused"), 0))
    assert choice.precision == "fp32" and "no native bf16" in choice.reason
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    assert precision.choose_precision(tiny_model, "auto", lambda: ([], [])).precision == "fp32"
    assert precision.choose_precision(tiny_model, "bf16", None).precision == "bf16"
    with pytest.raises(InputError, match="precision='fp16'"):
        precision.choose_precision(tiny_model, "fp16", None)


def test_distinct_texts_are_encoded_once_with_the_same_result(tiny_model) -> None:
    texts = ["a new road", "two houses were built", "a new road", "trees", "two houses were built"]
    dedup = encode_texts(tiny_model, texts, batch_size=2)
    one_by_one = np.concatenate([tiny_model.encode_texts([t]).numpy() for t in texts])
    assert dedup.shape == (5, 16)
    np.testing.assert_allclose(dedup, one_by_one, atol=1e-5)
    assert encode_texts(tiny_model, []).shape[0] == 0


def test_distinct_texts_are_batched_by_token_count(tiny_model, monkeypatch) -> None:
    texts = ["a a a a a a a a", "b", "cccccccccccccccccccccccc", "d d", "e e e e"]  # long word: few tokens
    batches: list[list[str]] = []
    real = tiny_model.encode_texts

    def spy(chunk, **kwargs):
        batches.append(list(chunk))
        return real(chunk, **kwargs)

    monkeypatch.setattr(tiny_model, "encode_texts", spy)
    emb = encode_texts(tiny_model, texts, batch_size=2)
    tokens = {t: len(tiny_model.text_encoder.tokenizer(t)["input_ids"]) for t in texts}
    flat = [t for b in batches for t in b]
    assert sorted(flat) == sorted(texts) and [tokens[t] for t in flat] == sorted(tokens.values())
    monkeypatch.undo()
    np.testing.assert_allclose(emb, np.concatenate([tiny_model.encode_texts([t]).numpy() for t in texts]),
                               atol=1e-5)


@pytest.mark.slow
def test_default_model_bf16_and_traced_backbone_match_fp32(world) -> None:
    """On real-size CNN inputs: bf16 stays within cosine 0.99 of fp32; the traced graph is fp32 itself."""
    from textitsr.embedding.encode import compile_image_backbone
    from textitsr.models.checkpoint import load_checkpoint
    from textitsr.training.default_model import DEFAULT_MODEL_DIR

    model = load_checkpoint(DEFAULT_MODEL_DIR)
    before, after = _pairs(world, 3)
    with backbone_precision(model, "fp32"):
        eager = encode_rgb_pairs(model, before, after)
    assert precision.bf16_cosine(model, before, after) >= precision.MIN_BF16_COSINE
    for runtime in ("torchscript", "onnx"):
        model.fast_image_encoder = None
        assert compile_image_backbone(model, runtime) and model.fast_image_encoder is not None
        compiled = encode_rgb_pairs(model, before, after)
        np.testing.assert_allclose(compiled, eager, atol=1e-4)
    with backbone_precision(model, "bf16"):  # autocast runs eagerly, not through the fp32 graph
        assert not model._fast_backbone_applies(torch.zeros(1, 3, 8, 8))
    assert "fast_image_encoder" not in "".join(model.state_dict())


def test_backbone_runtime_choice_and_fallbacks(tiny_model, world, monkeypatch, tmp_path) -> None:
    import sys

    import textitsr.embedding.encode as encode

    monkeypatch.setenv("TEXTITSR_CACHE_DIR", str(tmp_path))
    before, after = _pairs(world, 2)
    tiny_model.fast_image_encoder = None
    eager = encode_rgb_pairs(tiny_model, before, after)

    def compiled(runtime: str) -> str | None:
        tiny_model.fast_image_encoder = None
        if not encode.compile_image_backbone(tiny_model, runtime):
            return None
        np.testing.assert_allclose(encode_rgb_pairs(tiny_model, before, after), eager, atol=1e-5)
        return type(tiny_model.fast_image_encoder).__name__

    try:
        assert compiled("auto") == "_OnnxBackbone"
        assert compiled("torchscript") == "_Compiled"
        assert compiled("eager") is None
        monkeypatch.setattr(encode, "MIN_ONNX_BACKBONE_COSINE", 1.5)  # no probe can pass
        assert compiled("auto") == "_Compiled"
        assert compiled("onnx") == "_OnnxBackbone"  # asked for: used all the same
        monkeypatch.setitem(sys.modules, "onnxruntime", None)
        assert compiled("auto") == "_Compiled"
        with pytest.raises(InputError, match="backbone runtime 'onnx': onnxruntime/onnx not installed"):
            compiled("onnx")
        with pytest.raises(InputError, match="backbone runtime 'fast': expected one of auto, onnx"):
            compiled("fast")
        from textitsr.index.build import BuildConfig, embed_pairs

        with pytest.raises(InputError, match="backbone runtime 'fast'"):  # refused at any precision
            embed_pairs(tiny_model, [], BuildConfig(precision="bf16", backbone_runtime="fast"))
    finally:
        tiny_model.fast_image_encoder = None
