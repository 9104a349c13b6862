"""Labelled real pairs (realdev layout) and the query-level scores of benchmarks/real.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import shared_path
from textitsr.embedding.archive_change import pixel_changes
from textitsr.errors import InputError
from textitsr.evaluation.realdev import (
    LabelledFolderSource,
    average_precision,
    query_type_ap,
    relevance,
    type_counts,
)


def make_labelled(root: Path, types: dict[str, list[str]], changed_by: dict[str, int]) -> Path:
    """before/ and after/ images (after = before + a constant), captions.csv and pairs.jsonl."""
    rng = np.random.default_rng(0)
    for side in ("before", "after"):
        (root / side).mkdir(parents=True)
    rows = ["filename,caption,split"]
    for name, kinds in types.items():
        before = rng.integers(0, 200, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(before).save(root / "before" / f"{name}.png")
        Image.fromarray(before + np.uint8(changed_by[name])).save(root / "after" / f"{name}.png")
        rows.append(f"{name}.png,{' and '.join(kinds)},val")
    (root / "captions.csv").write_text("\n".join(rows) + "\n")
    (root / "pairs.jsonl").write_text(
        "\n".join(json.dumps({"name": n, "change_types": k}) for n, k in types.items()) + "\n"
    )
    return root


def test_labelled_folder_carries_multi_label_types(tmp_path) -> None:
    types = {"a": ["road_built", "buildings_built"], "b": ["none"], "c": ["buildings_built"]}
    src = LabelledFolderSource(make_labelled(tmp_path, types, {"a": 40, "b": 0, "c": 10}))
    pairs = {p.pair_id.removeprefix("labelled-folder_"): p for p in src.pairs("val")}
    assert pairs["a"].change_type == "buildings_built+road_built" and pairs["a"].changed
    assert pairs["b"].change_type == "none" and pairs["b"].changed is False
    labels = [p.change_type for p in src.pairs()]
    assert type_counts(labels) == {"buildings_built": 2, "none": 1, "road_built": 1}
    assert relevance(labels, "buildings_built").tolist() == [True, False, True]
    # The pixel baseline ranks the most changed pair first.
    diff = {k.removeprefix("labelled-folder_"): v for k, v in pixel_changes(src.pairs()).items()}
    assert diff["a"] > diff["c"] > diff["b"] == 0.0
    assert diff["a"] == pytest.approx(40 / 255)


def test_labels_must_cover_every_pair_and_be_well_formed(tmp_path) -> None:
    root = make_labelled(tmp_path / "x", {"a": ["none"], "b": ["road_built"]}, {"a": 0, "b": 5})
    (root / "pairs.jsonl").write_text(json.dumps({"name": "a", "change_types": ["none"]}) + "\n")
    with pytest.raises(InputError, match="no change_types for pair 'b.png'"):
        LabelledFolderSource(root)
    (root / "pairs.jsonl").write_text(json.dumps({"name": "a", "change_types": "none"}) + "\n")
    with pytest.raises(InputError, match=r"pairs.jsonl:1: expected"):
        LabelledFolderSource(root)
    (root / "pairs.jsonl").write_text(json.dumps({"name": "a", "change_types": ["none", "road_built"]}))
    with pytest.raises(InputError, match="cannot be combined"):
        LabelledFolderSource(root)


def test_average_precision_worked_by_hand() -> None:
    # Ranking: r, x, r, x -> precision at hits 1/1 and 2/3 -> AP 5/6.
    assert average_precision(np.array([4.0, 3, 2, 1]), np.array([1, 0, 1, 0], bool)) == pytest.approx(5 / 6)
    # A constant score ranks relevant items last among ties: no better than the worst ranking.
    assert average_precision(np.zeros(4), np.array([1, 0, 0, 0], bool)) == pytest.approx(1 / 4)
    with pytest.raises(InputError, match="at least one relevant"):
        average_precision(np.zeros(3), np.zeros(3, bool))


def test_query_type_ap_reads_rows_in_query_order() -> None:
    labels = ["a", "b", "a+b"]
    sim = np.array([[3.0, 1, 2], [1, 2, 3], [0, 5, 1]])  # two queries for a, one for b
    aps = query_type_ap(sim, labels, {"a": ("q1", "q2"), "b": ("q3",)})
    assert aps["a"] == pytest.approx([1.0, (1 + 2 / 3) / 2]) and aps["b"] == pytest.approx([1.0])
    with pytest.raises(InputError, match="expected \\(3 queries"):
        query_type_ap(sim[:2], labels, {"a": ("q1", "q2"), "b": ("q3",)})


def test_realdev_loads_with_its_labels() -> None:
    root = shared_path("realdev")
    src = LabelledFolderSource(root)
    pairs = list(src.pairs("val"))
    assert len(pairs) == len(src) == 63 and all(len(p.captions) == 3 for p in pairs)
    counts = type_counts([p.change_type for p in pairs])
    assert counts["none"] == 13 and counts["vegetation_cleared"] == 15 and counts["road_built"] == 6
    assert sum(not p.changed for p in pairs) == 13
    # Pixel difference separates change from no change somewhat, but far from perfectly.
    diff = pixel_changes(iter(pairs))
    ap = average_precision(np.array(list(diff.values())), np.array([p.changed for p in pairs]))
    assert 50 / 63 < ap < 1.0


def _load_real_benchmark():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "real.py"
    spec = importlib.util.spec_from_file_location("real_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_spread_train_pairs_thins_train_only_and_keeps_its_mix() -> None:
    from textitsr.data.pairs import BitemporalPair, PairSourceBase

    class Grouped(PairSourceBase):
        """Train pairs stored grouped by kind (as the generated data is), then a val split."""

        name = "grouped"
        layout = {"train": [f"built_{i}" for i in range(6)] + [f"water_{i}" for i in range(4)],
                  "val": [f"val_{i}" for i in range(3)]}

        def __len__(self) -> int:
            return sum(len(v) for v in self.layout.values())

        def pairs(self, split=None):
            for s in ("train", "val") if split is None else (split,):
                for pid in self.layout.get(s, []):
                    img = np.zeros((4, 4, 3), np.float32)
                    yield BitemporalPair(pid, img, img, split=s)

    real = _load_real_benchmark()
    spread = real.SpreadTrainPairs(Grouped(), 3)
    train = [p.pair_id for p in spread.pairs("train")]
    assert train == ["built_0", "built_3", "water_0", "water_3"]
    assert spread.count("train") == 4 and spread.count("val") == 3 and len(spread) == 7
    assert [p.pair_id for p in spread.pairs("val")] == ["val_0", "val_1", "val_2"]
    assert spread.name == "grouped-every3"
    with pytest.raises(ValueError, match="--train-every"):
        real.SpreadTrainPairs(Grouped(), 0)


def test_variant_options_parse_and_unknown_ones_are_named() -> None:
    real = _load_real_benchmark()
    name, opt = real.parse_variant("para:real=3,types=0.1,captions=0.4,views=3,trainviews=2,para=1")
    assert name == "para" and opt["para"] == 1 and opt["views"] == 3 and opt["captions"] == 0.4
    assert real.parse_variant("plain:real=3")[1]["para"] == 0
    with pytest.raises(SystemExit, match="unknown option 'paraphrase'.*para=0\\|1"):
        real.parse_variant("x:paraphrase=1")
