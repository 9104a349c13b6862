"""Generic before/after folder loader with captions.csv / captions.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from textitsr.data.folder import FolderSource
from textitsr.data.registry import detect_kind, open_source
from textitsr.errors import InputError


def make_folder(root: Path, names=("a.png", "b.png", "c.png"), size=(32, 32)) -> Path:
    rng = np.random.default_rng(1)
    for side in ("before", "after"):
        (root / side).mkdir(parents=True, exist_ok=True)
        for name in names:
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / side / name)
    return root


def test_csv_captions_several_rows_per_file(tmp_path):
    root = make_folder(tmp_path)
    (root / "captions.csv").write_text(
        "filename,caption,split\na.png,a new house,train\na.png,one building appears,train\n"
        'b.png,"roads, and trees",val\n'
    )
    assert detect_kind(root) == "folder"
    src = open_source(root)
    assert isinstance(src, FolderSource) and len(src) == 3
    pairs = {p.pair_id: p for p in src.pairs()}
    assert pairs["folder_a"].captions == ["a new house", "one building appears"]
    assert pairs["folder_a"].split == "train" and pairs["folder_b"].captions == ["roads, and trees"]
    assert pairs["folder_c"].captions == [] and pairs["folder_c"].split is None
    assert [p.pair_id for p in src.pairs("val")] == ["folder_b"]
    img = np.asarray(Image.open(root / "after" / "b.png"))
    assert np.array_equal(pairs["folder_b"].rgb("after"), img)


def test_jsonl_captions_and_no_captions(tmp_path):
    root = make_folder(tmp_path / "j")
    (root / "captions.jsonl").write_text(
        json.dumps({"filename": "c.png", "captions": ["nothing changed", "same as before"]}) + "\n\n"
    )
    pairs = {p.pair_id: p for p in FolderSource(root).pairs()}
    assert pairs["folder_c"].captions == ["nothing changed", "same as before"]
    bare = make_folder(tmp_path / "bare")
    assert all(p.captions == [] for p in FolderSource(bare).pairs())


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # plain image tiles, by design
def test_16bit_and_4band_tiffs(tmp_path):
    import rasterio

    root = tmp_path / "t"
    for side, k in (("before", 1), ("after", 2)):
        (root / side).mkdir(parents=True)
        data = (np.arange(4 * 16 * 16).reshape(4, 16, 16) * 10 * k).astype(np.uint16)
        with rasterio.open(
            root / side / "x.tif", "w", driver="GTiff", width=16, height=16, count=4, dtype="uint16"
        ) as dst:
            dst.write(data)
    p = next(iter(FolderSource(root).pairs()))
    assert p.bands == ("red", "green", "blue", "nir") and p.before.dtype == np.float32
    assert 0 <= p.before.min() and p.after.max() == 1.0
    # one gain for both dates: 'after' is twice 'before' wherever not clipped
    assert p.after[0, 1, 0] == pytest.approx(2 * p.before[0, 1, 0], rel=1e-5)


def test_unmatched_file_is_named(tmp_path):
    root = make_folder(tmp_path)
    (root / "after" / "b.png").unlink()
    with pytest.raises(InputError, match=r"after/b.png: missing \(its partner .*before/b.png exists\)"):
        FolderSource(root)
    assert len(FolderSource(root, on_missing="skip")) == 2


def test_pairs_listing_names_each_pairs_archive_or_is_refused(tmp_path):
    root = make_folder(tmp_path)
    (root / "pairs.jsonl").write_text('{"name": "a.png", "dataset": "NAIP"}\n')
    assert [p.archive for p in FolderSource(root).pairs()] == ["NAIP", None, None]
    (root / "pairs.jsonl").write_text('{"name": "a", "source": ""}\n')
    with pytest.raises(InputError, match=r'pairs.jsonl:1: "source" must be a non-empty string'):
        FolderSource(root)
    (root / "pairs.jsonl").write_text('{"name": "a"}\n["a"]\n')
    with pytest.raises(InputError, match=r'pairs.jsonl:2: expected \{"name"'):
        FolderSource(root)


def test_bad_caption_files(tmp_path):
    root = make_folder(tmp_path)
    (root / "captions.csv").write_text("file,text\na.png,x\n")
    with pytest.raises(InputError, match=r"captions.csv: header .* expected columns 'filename,caption"):
        FolderSource(root)
    (root / "captions.csv").write_text("filename,caption\nzzz.png,x\n")
    with pytest.raises(InputError, match=r"captions.csv:2: 'zzz.png' is not an image"):
        FolderSource(root)
    (root / "captions.csv").unlink()
    (root / "captions.jsonl").write_text('{"filename": "a.png", "captions": "not a list"}\n')
    with pytest.raises(InputError, match=r"captions.jsonl:1: expected"):
        FolderSource(root)


def test_different_sizes_and_missing_folders(tmp_path):
    root = make_folder(tmp_path)
    Image.new("RGB", (16, 32)).save(root / "after" / "a.png")
    with pytest.raises(InputError, match=r"before/a.png is 32x32x3 but .*after/a.png is 16x32x3"):
        next(iter(FolderSource(root).pairs()))
    with pytest.raises(InputError, match=r"nowhere/before: folder not found"):
        FolderSource(tmp_path / "nowhere")
    corrupt = make_folder(tmp_path / "corrupt")
    (corrupt / "after" / "c.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match=r"after/c.png: not a readable image"):
        list(FolderSource(corrupt).pairs())


def test_band_names_must_match_the_channel_count(tmp_path):
    root = make_folder(tmp_path)  # 3-channel PNGs
    with pytest.raises(InputError, match=r"a\.png: 3 bands but band names \['red', 'green', 'blue', 'nir'\]"):
        next(iter(FolderSource(root, band_names=("red", "green", "blue", "nir")).pairs()))
    pair = next(iter(FolderSource(root, band_names=("blue", "green", "red")).pairs()))
    assert pair.bands == ("blue", "green", "red")
