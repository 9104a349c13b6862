"""`device="cuda"` gives what the CPU gives: index build, precision choice, training, evaluation, search.

The 2-core machines have no GPU, so this module skips there; it runs on a machine with CUDA. Every
check builds or trains the same thing on the CPU and on CUDA and compares the embeddings (the default
model, EfficientNet-Lite0 + MiniLM-L6, on a small folder of PNG pairs).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
    pytest.mark.slow,
]

DEVICE = "cuda"
#: Run label -> device: everything is done on the CPU as the reference, then on CUDA.
DEVICES = {"cpu": "cpu", "cuda": DEVICE}
#: fp32 on CUDA differs from the CPU only by summation order and TF32 convolutions (cuDNN's default).
MIN_FP32_COSINE = 0.999
CAPTIONS = {
    "built": ["a new building was built in the field", "a house appeared"],
    "road": ["a road was built across the area", "a new road crosses the land"],
    "none": ["nothing changed", "the scene is the same"],
}


def _scene(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.integers(60, 140, 3)
    img = np.clip(base + rng.normal(0, 12, (size, size, 3)), 0, 255)
    for _ in range(3):  # fields of another colour
        y, x = rng.integers(0, size - 16, 2)
        img[y : y + 16, x : x + 16] = rng.integers(40, 200, 3)
    return img


def _change(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    out = img.copy()
    size = img.shape[0]
    if kind == "built":
        y, x = rng.integers(0, size - 12, 2)
        out[y : y + 12, x : x + 12] = (200, 60, 50)
    elif kind == "road":
        y = int(rng.integers(4, size - 8))
        out[y : y + 5, :] = (90, 90, 90)
    return np.clip(out + rng.normal(0, 3, out.shape), 0, 255)


@pytest.fixture(scope="module")
def pairs_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 train + 8 val pairs of 64 px PNGs in the generic pairs-folder layout, two captions each."""
    root = tmp_path_factory.mktemp("cuda") / "pairs"
    rng = np.random.default_rng(7)
    rows = []
    for side in ("before", "after"):
        (root / side).mkdir(parents=True)
    for i in range(24):
        kind = list(CAPTIONS)[i % 3]
        before = _scene(rng, 64)
        name = f"p{i:02d}.png"
        Image.fromarray(before.astype(np.uint8)).save(root / "before" / name)
        Image.fromarray(_change(before, kind, rng).astype(np.uint8)).save(root / "after" / name)
        rows += [(name, text, "train" if i < 16 else "val") for text in CAPTIONS[kind]]
    with open(root / "captions.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("filename", "caption", "split"), *rows])
    return root


def _source(root: Path):
    from textitsr.data.registry import open_source

    return open_source(root, "folder")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


@pytest.fixture(scope="module")
def stores(pairs_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same fp32 store built with the default model on each device."""
    from textitsr.index.build import BuildConfig, build_store
    from textitsr.training.default_model import DEFAULT_MODEL_DIR

    root = tmp_path_factory.mktemp("cuda-stores")
    return {
        label: build_store(
            Path(DEFAULT_MODEL_DIR), _source(pairs_folder), root / label, split=None,
            config=BuildConfig(device=device, precision="fp32", batch_size=8, shard_size=16), progress=False,
        ).root
        for label, device in DEVICES.items()
    }


def _store_arrays(store: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    from textitsr.index.store import Store

    opened = Store.open(store)
    ids = [str(i) for i in opened.metadata()["pair_id"]]
    return ids, opened.pair_embeddings().astype(np.float32), opened.caption_embeddings().astype(np.float32)


def test_build_on_cuda_gives_the_cpu_embeddings(stores) -> None:
    cpu_ids, cpu_pairs, cpu_caps = _store_arrays(stores["cpu"])
    ids, pairs, caps = _store_arrays(stores["cuda"])
    assert ids == cpu_ids and len(ids) == 24
    assert _cosines(pairs, cpu_pairs).min() >= MIN_FP32_COSINE
    assert caps.shape == cpu_caps.shape == (48, cpu_pairs.shape[1])
    assert _cosines(caps, cpu_caps).min() >= MIN_FP32_COSINE


def test_auto_precision_on_cuda_times_bf16_within_the_accuracy_bound(pairs_folder) -> None:
    from textitsr.embedding.encode import backbone_precision, encode_rgb_pairs, load_model
    from textitsr.embedding.precision import MIN_BF16_COSINE, choose_precision
    from textitsr.training.default_model import DEFAULT_MODEL_DIR

    pairs = list(_source(pairs_folder).pairs(None))
    before, after = [p.rgb("before") for p in pairs], [p.rgb("after") for p in pairs]
    model = load_model(Path(DEFAULT_MODEL_DIR), DEVICE)
    choice = choose_precision(model, "auto", lambda: (before, after))
    if torch.cuda.is_bf16_supported():  # both pass the accuracy check: the faster one on this card
        assert choice.precision in ("bf16", "fp32") and "faster" in choice.reason, choice.reason
    else:
        assert choice.precision == "fp32", choice.reason
    cpu = encode_rgb_pairs(load_model(Path(DEFAULT_MODEL_DIR), "cpu"), before, after)
    with backbone_precision(model, "bf16"):
        low = encode_rgb_pairs(model, before, after)
    assert _cosines(low, cpu).mean() >= MIN_BF16_COSINE


def test_search_on_cuda_returns_the_cpu_hits(stores) -> None:
    from textitsr.service import SearchService

    queries = ["a road was built", "a new house in the field", "nothing changed"]
    for text_only in (False, True):
        cpu = SearchService.open(stores["cpu"], device="cpu", text_only=text_only)
        gpu = SearchService.open(stores["cpu"], device=DEVICE, text_only=text_only, text_backend="torch")
        got, want = (s.encode_query(queries[0]).reshape(1, -1) for s in (gpu, cpu))
        assert _cosines(got, want)[0] >= 0.9999
        for query in queries:
            want, got = cpu.search_text(query, k=5), gpu.search_text(query, k=5)
            assert [h.pair_id for h in got] == [h.pair_id for h in want]
            np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-3)


def test_training_on_cuda_caches_features_there_and_matches_cpu(pairs_folder, tmp_path, monkeypatch) -> None:
    from textitsr.embedding.encode import encode_rgb_pairs
    from textitsr.models.checkpoint import load_checkpoint
    from textitsr.models.textitsr import TextITSR
    from textitsr.training.train import TrainConfig, train

    cached_on: list[str] = []
    real = TextITSR.backbone_pair_features

    def spy(self, *args, **kwargs):
        cached_on.append(self.device.type)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TextITSR, "backbone_pair_features", spy)
    # Comparable runs: the heads' dropout draws its masks from another generator on CUDA (epoch losses
    # then differ by 4-14%, as two CPU runs with different dropout streams do), so none here; and full
    # fp32 features (TF32 convolutions, cuDNN's default, change them by ~1e-3).
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    results = {}
    for label, device in DEVICES.items():
        cached_on.clear()
        results[label] = train(TrainConfig(
            root=pairs_folder, out=tmp_path / label, source="folder", fusion="gff:before+after+diff",
            epochs=3, batch_size=4, device=device, cache_dir=tmp_path / f"cache-{label}", progress=False,
            model_options={"dropout": 0.0},
        ))
        assert set(cached_on) == {torch.device(device).type}  # the backbones ran on the training device
    cpu_loss = [h["loss"] for h in results["cpu"].history]
    gpu_loss = [h["loss"] for h in results["cuda"].history]
    np.testing.assert_allclose(gpu_loss, cpu_loss, rtol=5e-3)
    pairs = list(_source(pairs_folder).pairs("val"))
    before, after = [p.rgb("before") for p in pairs], [p.rgb("after") for p in pairs]
    cpu_model = load_checkpoint(results["cpu"].checkpoint)
    gpu_model = load_checkpoint(results["cuda"].checkpoint)  # saved from CUDA tensors, read on the CPU
    cos = _cosines(encode_rgb_pairs(gpu_model, before, after), encode_rgb_pairs(cpu_model, before, after))
    assert cos.min() >= 0.995


def test_evaluation_on_cuda_gives_the_cpu_metrics(pairs_folder, tmp_path, monkeypatch) -> None:
    from textitsr.evaluation.evaluate import evaluate_checkpoint
    from textitsr.training.default_model import DEFAULT_MODEL_DIR

    # Without TF32 convolutions CUDA fp32 matches the CPU to ~1e-6, far below any gap between scores.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    metrics = {
        label: evaluate_checkpoint(Path(DEFAULT_MODEL_DIR), _source(pairs_folder), "val", device,
                                   cache_dir=tmp_path / label, progress=False)
        for label, device in DEVICES.items()
    }
    for key, value in metrics["cpu"].items():
        if isinstance(value, float):
            assert metrics["cuda"][key] == pytest.approx(value, abs=1e-6), key
