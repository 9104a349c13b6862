"""benchmarks/realpool/build_pool.py: rebuilding real pairs from a git mirror, refusing held-out images."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "realpool" / "build_pool.py"


def _load_build_pool():
    spec = importlib.util.spec_from_file_location("build_pool", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_pool"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def _scene(seed: int, size: int = 300) -> np.ndarray:
    """A textured RGB scene: smooth random field plus blocks, so average hashes are distinct."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC)).copy()
    return img


def _mirror(root: Path) -> tuple[Path, str]:
    """A bare git mirror `<root>/acme+scenes/repo` holding a before/after PNG pair, a GIF and a mask."""
    work = root / "work"
    work.mkdir()
    before, after = _scene(1), _scene(1).copy()
    after[100:180, 120:220] = (30, 60, 200)  # a new "lake"
    Image.fromarray(before).save(work / "before.png")
    Image.fromarray(after).save(work / "after.png")
    mask = np.zeros((300, 300), np.uint8)
    mask[100:180, 120:220] = 1
    Image.fromarray(mask).save(work / "mask.png")
    frames = [Image.fromarray(before), Image.fromarray(after)]
    frames[0].save(work / "series.gif", save_all=True, append_images=frames[1:])
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", str(work)], check=True)
    subprocess.run([*git, "-C", str(work), "add", "."], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-qm", "data"], check=True)
    commit = subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], capture_output=True, text=True)
    bare = root / "mirrors" / "acme+scenes" / "repo"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return root / "mirrors", commit.stdout.strip()


def _manifest(commit: str) -> dict:
    source = {
        "dataset": "synthetic test scenes",
        "repo": "acme/scenes",
        "commit": commit,
        "sensor_resolution": "test",
        "licence": "test",
        "mask_semantics": "water",
    }
    pair = {
        "name": "lake_png",
        "source": "acme",
        "before": {"path": "before.png"},
        "after": {"path": "after.png"},
        "label": {"path": "mask.png", "kind": "mask"},
        "crop_box_xyxy": [20, 20, 276, 276],
        "change_types": ["water_expanded"],
        "captions": ["a lake appears", "water covers the middle", "a new pond is dug"],
    }
    gif = {**pair, "name": "lake_gif", "label": None, "crop_box_xyxy": [0, 0, 300, 300]}
    gif["before"], gif["after"] = {"path": "series.gif"}, {"path": "series.gif", "frame": 1}
    return {"sources": {"acme": source}, "pairs": [pair, gif]}


def _reserved(tmp_path: Path, images: list[np.ndarray]) -> Path:
    rows = []
    for arr in images:
        grey = np.asarray(Image.fromarray(arr).convert("L").resize((16, 16), Image.BILINEAR), np.float32)
        bits = (grey > grey.mean()).flatten().astype(np.uint8)
        rows.append(
            {
                "px_sha1": hashlib.sha1(arr.tobytes() + str(arr.shape).encode()).hexdigest(),
                "ahash16": np.packbits(bits).tobytes().hex(),
            }
        )
    path = tmp_path / "reserved.json"
    path.write_text(json.dumps(rows))
    return path


@needs_git
def test_build_writes_cropped_pairs_masks_and_provenance(tmp_path: Path) -> None:
    build_pool = _load_build_pool()
    mirrors, commit = _mirror(tmp_path)
    reserved = build_pool.Reserved.load(_reserved(tmp_path, [_scene(99)]))  # an unrelated held-out image
    out = tmp_path / "pool"
    rows = build_pool.build(_manifest(commit), mirrors, out, reserved, None)

    assert [r["name"] for r in rows] == ["lake_png", "lake_gif"]
    before = np.asarray(Image.open(out / "before" / "lake_png.png"))
    assert before.shape == (256, 256, 3)
    assert np.array_equal(before, _scene(1)[20:276, 20:276])  # a native crop, no resampling
    mask = np.asarray(Image.open(out / "label" / "lake_png.png"))
    assert set(np.unique(mask)) == {0, 255}
    assert rows[0]["change_fraction"] == pytest.approx(80 * 100 / 256**2, abs=1e-4)
    assert rows[0]["source_commit"] == commit and rows[0]["resampled"] is False
    assert rows[1]["resampled"] is True and rows[1]["mask"] is None
    gif_after = np.asarray(Image.open(out / "after" / "lake_gif.png")).astype(int)
    assert gif_after[128, 140, 2] > gif_after[128, 140, 0] + 80  # frame 1 (with the lake) was read
    written = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert written == rows
    assert "| acme | acme/scenes" in (out / "SOURCES.md").read_text()
    from textitsr.evaluation.realdev import LabelledFolderSource

    pairs = list(LabelledFolderSource(out).pairs())  # the realdev reader takes the pool as it is
    assert [p.change_type for p in pairs] == ["water_expanded", "water_expanded"]
    assert all(len(p.captions) == 3 for p in pairs)


@needs_git
def test_build_refuses_a_pair_whose_crop_is_held_out(tmp_path: Path) -> None:
    build_pool = _load_build_pool()
    mirrors, commit = _mirror(tmp_path)
    held_out = np.ascontiguousarray(_scene(1)[20:276, 20:276])
    reserved = build_pool.Reserved.load(_reserved(tmp_path, [held_out]))
    rows = build_pool.build(_manifest(commit), mirrors, tmp_path / "pool", reserved, None)
    assert "lake_png" not in [r["name"] for r in rows]
    assert not (tmp_path / "pool" / "before" / "lake_png.png").exists()


def test_build_refuses_a_foreign_folder_and_bad_manifest_entries(tmp_path: Path) -> None:
    build_pool = _load_build_pool()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not ours")
    reserved = build_pool.Reserved(frozenset(), np.zeros((1, 256), np.uint8))
    with pytest.raises(build_pool.ManifestError, match="not made by build_pool"):
        build_pool.build({"sources": {}, "pairs": []}, tmp_path, foreign, reserved, None)
    bad = _manifest("0" * 40)
    bad["pairs"][0]["change_types"] = ["flooded"]
    with pytest.raises(build_pool.ManifestError, match="unknown change types"):
        build_pool.build(bad, tmp_path, tmp_path / "new", reserved, None)
    with pytest.raises(build_pool.ManifestError, match="no mirror of acme/scenes"):
        build_pool.build(_manifest("0" * 40), tmp_path, tmp_path / "new2", reserved, None)
