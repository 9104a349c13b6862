"""Shared fixtures: paths to the research data in ../shared (tests using it skip when absent), and a
tiny trained archive. Tests that train or embed for more than a few seconds are marked `slow`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from textitsr.config import SHARED_DATA_DIR

#: Fixtures that train or embed with a real model: every test using one is `slow`.
SLOW_FIXTURES = frozenset({"tiny_archive"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that use a training fixture `slow`, so `-m "not slow"` is the fast edit loop."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def _export_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Text encoders exported for ONNX Runtime (`models.onnx_text`) go to a temporary folder."""
    os.environ.setdefault("TEXTITSR_CACHE_DIR", str(tmp_path_factory.mktemp("export-cache")))
    # "auto" precision is chosen by timing, which varies from run to run and machine to machine: the
    # suite's builds run at one precision (fp32 unless TEXTITSR_PRECISION says otherwise, e.g. bf16 to
    # prove the suite on a native-bf16 CPU), so stores built in different tests compare bit for bit.
    os.environ.setdefault("TEXTITSR_PRECISION", "fp32")


def shared_path(*parts: str) -> Path:
    """Path under ../shared/data, or skip the calling test when it is not there (fresh clone)."""
    path = SHARED_DATA_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared research data not available: {path}")
    return path


@pytest.fixture
def shared_data() -> Path:
    return shared_path()


@pytest.fixture(scope="session")
def tiny_hf_models(tmp_path_factory: pytest.TempPathFactory):
    """Tiny randomly initialised Hugging Face models saved to folders: `.vit`, `.bert`, `.clip`.

    They exercise the "any HF model by id or path" encoder route offline in well under a second.
    """
    import string
    from types import SimpleNamespace

    import torch
    from transformers import (
        BertConfig,
        BertModel,
        BertTokenizer,
        CLIPConfig,
        CLIPModel,
        CLIPTokenizer,
        ViTConfig,
        ViTModel,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    tiny = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)
    vit = root / "tiny-vit"
    ViTModel(ViTConfig(**tiny, image_size=32, patch_size=8)).save_pretrained(vit)

    words = "a the new road roads house houses building buildings built was were two trees river".split()
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, ",", "."])}
    bert = root / "tiny-bert"
    BertModel(BertConfig(vocab_size=len(vocab), max_position_embeddings=64, **tiny)).save_pretrained(bert)
    BertTokenizer(vocab=vocab).save_pretrained(bert)

    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    special = ["<|startoftext|>", "<|endoftext|>"]
    clip_vocab = {t: i for i, t in enumerate([*chars, *(c + "</w>" for c in chars), *special])}
    clip = root / "tiny-clip"
    text_config = dict(
        vocab_size=len(clip_vocab), max_position_embeddings=40, bos_token_id=clip_vocab[special[0]],
        eos_token_id=clip_vocab[special[1]], pad_token_id=clip_vocab[special[1]], **tiny,
    )
    config = CLIPConfig(text_config=text_config, vision_config=dict(**tiny, image_size=32, patch_size=8),
                        projection_dim=16)
    CLIPModel(config).save_pretrained(clip)
    CLIPTokenizer(vocab=clip_vocab, merges=[]).save_pretrained(clip)
    hf_logging.set_verbosity_warning()
    return SimpleNamespace(vit=vit, bert=bert, clip=clip)


def small_world(folder: Path, *, seed: int | None = None, **sizes: int) -> Path:
    """A synthetic world of 64 px tiles written to `folder` (`sizes`: n_train, n_val, n_test)."""
    from textitsr.synth.world import SyntheticWorldConfig, write_demo_world

    config = SyntheticWorldConfig(**{"tile_size": 64, **sizes})
    return write_demo_world(folder, config=config) if seed is None else write_demo_world(
        folder, seed=seed, config=config)


def tiny_model_config(tiny_hf_models, **overrides: object):
    """A `ModelConfig` on the tiny random HF encoders (`tiny_hf_models`): builds in well under a second."""
    from textitsr.models.textitsr import ModelConfig

    given = {"fusion": "gff:before+after+diff", "embed_dim": 16, **overrides}
    return ModelConfig(image_encoder=str(tiny_hf_models.vit), text_encoder=str(tiny_hf_models.bert), **given)


@dataclass(frozen=True)
class TinyArchive:
    """A tiny synthetic world, a model trained on it for a few epochs, and a store built from it."""

    world: Path
    checkpoint: Path
    store: Path


#: 40 pairs of 64 px: enough for several shards, filters and k clamping; built once per session.
TINY_WORLD = dict(n_train=24, n_val=8, n_test=8)


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory: pytest.TempPathFactory) -> TinyArchive:

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from textitsr.data.registry import open_source
    from textitsr.index.archive import Archive
    from textitsr.index.build import BuildConfig
    root = tmp_path_factory.mktemp("tiny_archive")
    world = small_world(root / "world", **TINY_WORLD)
    checkpoint = root / "model"
    from textitsr.training.train import TrainConfig, train

    train(TrainConfig(root=world, out=checkpoint, source="synthetic", fusion="gff:before+after+diff",
                      epochs=3, batch_size=8, cache_dir=root / "cache", device="cpu", progress=False))
    store = root / "store"
    # pairs and map tiles of the world's scenes, as `textitsr index` and the demo write them
    Archive(store, checkpoint).build(open_source(world, "synthetic"), progress=False,
                                     config=BuildConfig(shard_size=16, batch_size=16))
    return TinyArchive(world=world, checkpoint=checkpoint, store=store)


@pytest.fixture(scope="session")
def default_model():
    """The shipped default checkpoint, loaded once."""
    from textitsr.models.checkpoint import load_checkpoint
    from textitsr.training.default_model import DEFAULT_MODEL_DIR

    return load_checkpoint(DEFAULT_MODEL_DIR).eval()


@pytest.fixture(scope="session")
def landsat_pairs() -> list:
    """The shipped real Landsat series (Pucallpa, 1985-2020) as pairs of dates."""
    from textitsr.data.real_scenes import series_sources

    return [p for src in series_sources() for p in src.pairs() if p.pair_id.startswith("landsat")]


def cli_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """Run the real `textitsr` entry point in-process; (exit code, stderr). Errors are one line."""
    import sys

    from textitsr import cli

    monkeypatch.setattr(sys, "argv", ["textitsr", *map(str, args)])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err
