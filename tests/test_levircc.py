"""LEVIR-CC loader: the real mini dataset, the full caption file, and malformed inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path
from PIL import Image

from textitsr.data.levircc import LevirCCSource, clean_caption, parse_caption_json
from textitsr.errors import InputError


@pytest.fixture
def mini_copy(tmp_path) -> Path:
    dest = tmp_path / "levircc"
    shutil.copytree(shared_path("levircc-mini"), dest)
    return dest


def test_clean_caption_strips_artefacts():
    assert clean_caption(" several houses appear on the bareland at the bottom .") == (
        "several houses appear on the bareland at the bottom"
    )
    assert clean_caption("  a road ,  then houses .  ") == "a road, then houses"
    assert clean_caption(" . ") == ""


def test_mini_dataset_pairs():
    root = shared_path("levircc-mini")
    src = LevirCCSource(root)
    assert len(src) == 3 and src.split_counts() == {"train": 3, "val": 0, "test": 0}
    pairs = list(src.pairs())
    assert [p.pair_id for p in pairs] == [
        "levircc_train_000016",
        "levircc_train_000051",
        "levircc_train_000054",
    ]
    p = pairs[0]
    assert p.before.shape == p.after.shape == (256, 256, 3) and p.before.dtype == np.float32
    assert p.bands == ("red", "green", "blue") and p.split == "train" and p.changed is True
    assert p.source == "levircc" and p.bounds is None
    assert len(p.captions) == 5
    assert p.captions[0] == "several houses appear on the bareland at the bottom"
    assert all(not c.endswith(".") and c == c.strip() for pp in pairs for c in pp.captions)
    # 8-bit pixels round-trip exactly through the [0, 1] scaling
    png = np.asarray(Image.open(root / "images" / "train" / "A" / "train_000016.png").convert("RGB"))
    assert np.array_equal(p.rgb("before"), png)
    assert list(src.pairs("val")) == []


def test_full_caption_file_parses():
    records = parse_caption_json(shared_path("levircc-captions.json"))
    assert len(records) == 10077
    counts = {s: sum(r.split == s for r in records) for s in ("train", "val", "test")}
    assert counts == {"train": 6815, "val": 1333, "test": 1929}
    assert sum(r.changed for r in records) == 5038
    assert sum(len(r.captions) for r in records) == 50385
    assert not any(c.endswith(" .") or c.startswith(" ") for r in records for c in r.captions)


def test_missing_image_is_named(tmp_path):
    src = LevirCCSource(tmp_path, captions_file=shared_path("levircc-captions.json"))
    assert len(src) == 10077
    with pytest.raises(InputError, match=r"images/test/A/test_000001.png: image listed .* is missing"):
        next(iter(src.pairs()))


def test_skip_missing(mini_copy):
    (mini_copy / "images" / "train" / "B" / "train_000051.png").unlink()
    with pytest.raises(InputError, match="train_000051.png"):
        list(LevirCCSource(mini_copy).pairs())
    src = LevirCCSource(mini_copy, on_missing="skip")
    assert len(src) == 2 and [p.pair_id for p in src.pairs()] == [
        "levircc_train_000016",
        "levircc_train_000054",
    ]


def test_different_sizes_in_one_pair(mini_copy):
    Image.new("RGB", (128, 128)).save(mini_copy / "images" / "train" / "B" / "train_000016.png")
    with pytest.raises(
        InputError, match=r"A/train_000016.png is 256x256x3 but .*B/train_000016.png is 128x128x3"
    ):
        next(iter(LevirCCSource(mini_copy).pairs()))


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"imgs": []}, "expected a JSON object with an 'images' list"),
        ({"images": [{"split": "train", "sentences": []}]}, r"images\[0\]: missing 'filename'"),
        ({"images": [{"filename": "a.png", "split": "holdout", "sentences": []}]}, r"'split' is 'holdout'"),
        ({"images": [{"filename": "a.png", "split": "train"}]}, r"missing 'sentences'"),
        (
            {"images": [{"filename": "a.png", "split": "train", "sentences": [{"id": 1}]}]},
            r"sentences\[0\] needs",
        ),
    ],
)
def test_wrong_caption_schema(tmp_path, doc, expected):
    path = tmp_path / "LevirCCcaptions.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=expected) as err:
        LevirCCSource(tmp_path)
    assert "LevirCCcaptions.json" in str(err.value)


def test_not_json_and_absent(tmp_path):
    with pytest.raises(InputError, match="caption file not found"):
        LevirCCSource(tmp_path)
    (tmp_path / "LevirCCcaptions.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        LevirCCSource(tmp_path)
