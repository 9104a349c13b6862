"""Dubai-CCD loader: the real caption files with generated 50x50 Landsat-like tifs in the official layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import shared_path

from textitsr.data.describe import change_stats
from textitsr.data.dubaiccd import CAPTION_FILES, DubaiCCDSource
from textitsr.data.registry import detect_kind
from textitsr.errors import InputError


def write_plain_tif(path: Path, data: np.ndarray) -> None:
    """A non-georeferenced (bands, h, w) TIFF, like the official Dubai-CCD crops."""
    count, h, w = data.shape
    with rasterio.open(
        path, "w", driver="GTiff", width=w, height=h, count=count, dtype=data.dtype.name
    ) as dst:
        dst.write(data)


def make_root(root: Path, names: list[str], bands: int = 6, dtype=np.uint8, scale: int = 1) -> Path:
    rng = np.random.default_rng(0)
    for folder in ("500_2000", "500_2010"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            data = (rng.integers(20, 200, size=(bands, 50, 50)) * scale).astype(dtype)
            write_plain_tif(root / folder / name, data)
    for fname in CAPTION_FILES.values():
        shutil.copy(shared_path("dubaiccd", fname), root / fname)
    return root


def caption_names() -> list[str]:
    names = []
    for fname in CAPTION_FILES.values():
        names += [im["filename"] for im in json.loads(shared_path("dubaiccd", fname).read_text())["images"]]
    return names


@pytest.fixture(scope="module")
def dubai_root(tmp_path_factory) -> Path:
    return make_root(tmp_path_factory.mktemp("dubai"), caption_names())


def test_full_layout_counts_and_bands(dubai_root):
    assert detect_kind(dubai_root) == "dubaiccd"
    src = DubaiCCDSource(dubai_root)
    assert len(src) == 500
    splits = {s: src.count(s) for s in ("train", "val", "test")}
    assert splits == {"train": 300, "val": 50, "test": 150}
    test_pairs = list(src.pairs("test"))
    assert len(test_pairs) == 150
    p = test_pairs[0]
    assert p.pair_id == "dubaiccd_0x0" and p.split == "test" and p.source == "dubaiccd"
    assert p.before.shape == (50, 50, 6) and p.bands == ("blue", "green", "red", "nir", "swir1", "swir2")
    assert p.display_bands == ("red", "green", "blue") and p.dates == ("2000-01-01", "2010-01-01")
    assert len(p.captions) == 5 and all(c and c == c.strip() for c in p.captions)
    assert change_stats(p) is not None and "ndbi_delta" in change_stats(p)


def test_three_band_and_false_colour_choice(tmp_path):
    root = make_root(tmp_path, ["0x0.tif", "1x4.tif"], bands=3)
    src = DubaiCCDSource(root, on_missing="skip")
    assert len(src) == 2
    p = next(iter(src.pairs()))
    assert p.bands == ("red", "green", "blue") and change_stats(p) is None
    with pytest.raises(InputError, match="swir1"):
        next(iter(DubaiCCDSource(root, on_missing="skip", display="false-colour").pairs()))


def test_16bit_crops_are_scaled_with_one_gain_per_pair(tmp_path):
    root = make_root(tmp_path, ["0x0.tif"], bands=6, dtype=np.uint16, scale=40)
    p = next(iter(DubaiCCDSource(root, on_missing="skip").pairs()))
    assert 0.0 <= p.before.min() and p.before.max() <= 1.0 and p.after.max() == 1.0
    with rasterio.open(root / "500_2000" / "0x0.tif") as src:
        raw = src.read().astype(np.float64)
    ratio = raw[3, 5, 5] / raw[2, 5, 5]  # nir / red survives scaling (unless clipped)
    got = p.before[5, 5, 3] / p.before[5, 5, 2]
    assert p.before[5, 5, 3] < 1.0 and got == pytest.approx(ratio, rel=1e-4)


def test_missing_image_and_folder(tmp_path, dubai_root):
    root = make_root(tmp_path / "d", ["0x0.tif"])
    with pytest.raises(InputError, match=r"500_2000/1x4.tif: image listed in Train_Dubai_CC.json is missing"):
        list(DubaiCCDSource(root).pairs("train"))
    shutil.rmtree(root / "500_2010")
    with pytest.raises(InputError, match=r"500_2010: Dubai-CCD image folder not found"):
        DubaiCCDSource(root)


def test_caption_file_with_wrong_schema_or_split(tmp_path):
    root = make_root(tmp_path, ["0x0.tif"])
    (root / "Validation_Dubai_CC.json").write_text(json.dumps({"images": [{"filename": "0x0.tif"}]}))
    with pytest.raises(
        InputError, match=r"Validation_Dubai_CC.json: images\[0\] \(0x0.tif\): 'split' is None"
    ):
        DubaiCCDSource(root)
    doc = json.loads(shared_path("dubaiccd", "Test_Dubai_CC.json").read_text())
    (root / "Validation_Dubai_CC.json").write_text(json.dumps(doc))
    with pytest.raises(
        InputError, match=r"Validation_Dubai_CC.json: 0x0.tif has split 'test'; expected 'val'"
    ):
        DubaiCCDSource(root)


def test_different_sizes_in_one_pair(tmp_path):
    root = make_root(tmp_path, ["0x0.tif"])
    write_plain_tif(root / "500_2010" / "0x0.tif", np.zeros((6, 40, 50), dtype=np.uint8))
    with pytest.raises(InputError, match=r"500_2000/0x0.tif is 50x50x6 but .*500_2010/0x0.tif is 50x40x6"):
        next(iter(DubaiCCDSource(root, on_missing="skip").pairs()))
