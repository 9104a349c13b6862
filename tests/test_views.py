"""Augmented views of real labelled pairs: true to their labels, written once, never over a user's folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import shared_path
from tests.test_realdev import make_labelled
from textitsr.embedding.archive_change import pixel_changes
from textitsr.errors import InputError, OutputError
from textitsr.evaluation.realdev import LabelledFolderSource
from textitsr.synth.views import VIEW_KINDS, VIEWS_FILE, make_view, view_folders, write_views


def _dihedral_index(original: np.ndarray, view: np.ndarray) -> int | None:
    """Which rotation/flip of `original` (same pixel values) `view` is, if any."""
    for k in range(8):
        turned = np.rot90(original, k % 4)
        turned = turned[:, ::-1] if k >= 4 else turned
        if turned.shape == view.shape and np.array_equal(turned, view):
            return k
    return None


def _standardised(image: np.ndarray) -> np.ndarray:
    x = image.astype(float)
    return (x - x.mean()) / (x.std() + 1e-6)


def _centred(image: np.ndarray) -> np.ndarray:
    x = image.astype(float)
    return x - np.median(x, axis=(0, 1))


def _pair_with_new_square() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    before = rng.integers(20, 50, (64, 64, 3), dtype=np.uint8)  # dark ground: a restretch moves it little
    after = before.copy()
    after[5:20, 40:58] = 255  # a new bright roof in one corner
    return before, after


def test_a_view_turns_both_dates_alike_and_keeps_the_change_where_it_was() -> None:
    before, after = _pair_with_new_square()
    changed = np.any(before != after, axis=2)
    for kind in VIEW_KINDS:
        for seed in range(4):
            b, a = make_view(before, after, kind, np.random.default_rng(seed))
            assert b.shape == a.shape == before.shape and b.dtype == np.uint8
            if kind == "colour":  # grey or swapped bands only: the change is exactly where it was, turned
                assert _dihedral_index(changed, np.any(b != a, axis=2)) is not None
            # the new roof sits in one quarter of the image, turned with both dates alike (each date
            # less its median: a season view hazes or darkens one date as a whole)
            diff = np.abs(_centred(a) - _centred(b)).sum(2)
            halves = np.split(diff, 2)
            quarters = sorted(float(q.mean()) for half in halves for q in np.split(half, 2, axis=1))
            assert quarters[-1] > 3 * quarters[-2], (kind, seed, quarters)


def test_a_photometric_view_stretches_each_date_on_its_own() -> None:
    before, _ = _pair_with_new_square()
    b, a = make_view(before, before.copy(), "photometric", np.random.default_rng(0))
    assert not np.array_equal(b, a)  # an unchanged pair, two different stretches
    assert np.corrcoef(b.reshape(-1).astype(float), a.reshape(-1).astype(float))[0, 1] > 0.9


def test_a_season_view_changes_each_dates_appearance_but_not_its_place() -> None:
    _, roofed = _pair_with_new_square()
    for seed in range(6):
        b, a = make_view(roofed, roofed.copy(), "season", np.random.default_rng(seed))
        assert np.abs(b.astype(int) - a.astype(int)).mean() > 5  # an unchanged pair, two looks
        # no mis-registration: the roof is where it was on both dates, so the standardised dates agree
        assert np.corrcoef(_standardised(b).reshape(-1), _standardised(a).reshape(-1))[0, 1] > 0.85


def test_unknown_view_kind_is_refused() -> None:
    before, after = _pair_with_new_square()
    with pytest.raises(InputError, match="view kind 'sepia'"):
        make_view(before, after, "sepia", np.random.default_rng(0))


def test_unknown_view_kind_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="view kind 'sepia'"):
        write_views(_pool(tmp_path / "pool"), tmp_path / "v", "sepia")
    assert not (tmp_path / "v").exists()


def _pool(root: Path) -> Path:
    types = {"a": ["buildings_built"], "b": ["none"], "c": ["water_expanded"]}
    folder = make_labelled(root, types, {"a": 40, "b": 0, "c": 20})
    (folder / "pairs.jsonl").write_text(
        "".join(json.dumps({"name": n, "source": "s", "change_types": k}) + "\n" for n, k in types.items())
    )
    return folder


def test_views_of_a_pool_folder_keep_names_labels_and_captions(tmp_path: Path) -> None:
    pool = _pool(tmp_path / "pool")
    out = write_views(pool, tmp_path / "views" / "colour", "colour")
    original, view = LabelledFolderSource(pool), LabelledFolderSource(out)
    assert view.change_types == original.change_types
    assert [p.captions for p in view.pairs()] == [p.captions for p in original.pairs()]
    # the unchanged pair stays unchanged (same bands or grey on both dates), the others changed
    diff = {k.split("_")[-1]: v for k, v in pixel_changes(view.pairs()).items()}
    assert diff["b"] == 0.0 < diff["c"] and diff["a"] > 0.05


def test_views_are_reused_and_rewritten_when_the_pool_changes(tmp_path: Path) -> None:
    pool = _pool(tmp_path / "pool")
    out = write_views(pool, tmp_path / "v", "colour")
    stamp = (out / VIEWS_FILE).stat().st_mtime_ns
    assert write_views(pool, tmp_path / "v", "colour") == out
    assert (out / VIEWS_FILE).stat().st_mtime_ns == stamp  # same pool, same kind: not written again
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(pool / "before" / "d.png")
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(pool / "after" / "d.png")
    with (pool / "pairs.jsonl").open("a") as f:
        f.write(json.dumps({"name": "d", "source": "s", "change_types": ["other"]}) + "\n")
    write_views(pool, tmp_path / "v", "colour")
    assert (out / "before" / "d.png").is_file()


def test_views_never_replace_a_folder_the_tool_did_not_write(tmp_path: Path) -> None:
    pool = _pool(tmp_path / "pool")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not a folder textitsr wrote"):
        write_views(pool, mine, "resolution")
    assert (mine / "notes.txt").read_text() == "keep me"


def test_a_pool_folder_with_a_missing_after_image_is_named(tmp_path: Path) -> None:
    pool = _pool(tmp_path / "pool")
    (pool / "after" / "c.png").unlink()
    with pytest.raises(InputError, match=r"after: no c\.png"):
        write_views(pool, tmp_path / "v", "photometric")
    assert not (tmp_path / "v").exists()


def test_views_of_realdev_load_as_the_same_pairs(tmp_path: Path) -> None:
    realdev = shared_path("realdev")
    views = view_folders([realdev], tmp_path, ("resolution",))["resolution"]
    original, view = LabelledFolderSource(realdev), LabelledFolderSource(views[0])
    assert len(view) == len(original) and view.change_types == original.change_types
    names = sorted(p.name for p in (views[0] / "before").iterdir())
    assert names == sorted(p.name for p in (realdev / "before").iterdir())


def test_views_that_do_not_match_the_pool_are_refused() -> None:
    """A pool folder changed between reading it and writing its views must not train misaligned."""
    from textitsr.embedding.cache import FeatureCache
    from textitsr.training.real_mix import MixedData

    def cache(n: int) -> FeatureCache:
        return FeatureCache(
            pair_ids=[f"p{i}" for i in range(n)], texts=["a"], caption_text=np.zeros(n, np.int64),
            caption_offsets=np.arange(n + 1, dtype=np.int64), changed=np.ones(n, np.int8),
            before_global=np.zeros((n, 4), np.float32), after_global=np.zeros((n, 4), np.float32),
            text_features=np.zeros((1, 3), np.float32), change_type=["other"] * n,
        )

    with pytest.raises(InputError, match="3 pairs but a view of it has 4"):
        MixedData(cache(2), ["s"] * 2, cache(1), ["s"], cache(3), ["s"] * 3, (cache(3), cache(4)))
    data, _ = MixedData(cache(2), ["s"] * 2, cache(1), ["s"], cache(3), ["s"] * 3, (cache(3),)).fold(set(), 3)
    assert data.train_idx.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 5, 6, 7]  # pairs, their view, the view again
