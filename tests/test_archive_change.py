"""Archive-relative change reading: a pair that changed more than its archive usually does reads as
less likely unchanged, on the shipped model and the shipped real Landsat series."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from textitsr.embedding.archive_change import (
    MIN_ARCHIVE_PAIRS,
    SMALL_ARCHIVE_PAIRS,
    SMALL_ARCHIVE_SPREAD,
    Z_CLIP,
    calibrate_change,
    pixel_change,
    relative_change,
    type_slice,
)
from textitsr.models.probes import type_reading


def test_relative_change_compares_each_pair_with_its_own_archive() -> None:
    # archive a: a quiet series with one big change; archive b: a sensor whose pairs all differ more
    a = np.array([0.020, 0.022, 0.018, 0.021, 0.019, 0.020, 0.023, 0.019, 0.080])
    b = np.array([0.090, 0.100, 0.110, 0.095, 0.105, 0.100, 0.098, 0.102, 0.097])
    assert len(a) >= MIN_ARCHIVE_PAIRS and len(b) >= MIN_ARCHIVE_PAIRS
    z = relative_change(np.concatenate([a, b]), np.array(["a"] * len(a) + ["b"] * len(b)))
    assert z[8] == Z_CLIP  # a's change stands out of a (clipped)...
    assert abs(z[9:]).max() < Z_CLIP and np.median(z[9:]) == pytest.approx(0.0)  # ...b's are b's usual
    assert z[:8].max() < 2.0  # the quiet ones within two deviations of their median
    together = relative_change(np.concatenate([a, b]))  # one archive: b's pairs all stand out
    assert together[9:].min() > together[:8].max()


def test_a_small_archive_reads_only_a_change_far_beyond_its_spread_floor() -> None:
    quiet = [0.020, 0.021, 0.019, 0.022]
    small = relative_change(np.array([*quiet, 0.080]))  # five pairs: the spread is floored
    assert len(small) < SMALL_ARCHIVE_PAIRS
    median = np.log(0.021)
    assert small[-1] == pytest.approx((np.log(0.080) - median) / SMALL_ARCHIVE_SPREAD) and small[-1] < Z_CLIP
    assert abs(small[:-1]).max() < 0.2  # the quiet pairs read as the archive's usual
    full = relative_change(np.array([*quiet, 0.020, 0.021, 0.019, 0.080]))  # eight: its own spread
    assert full[-1] == Z_CLIP


def test_too_few_pairs_or_unknown_changes_give_no_reading() -> None:
    small = relative_change(np.array([0.01, 0.5][: MIN_ARCHIVE_PAIRS - 1]))
    assert np.isnan(small).all()
    z = relative_change(np.array([0.02, np.nan, 0.03, 0.025, 0.022, 0.027, 0.021, 0.024, 0.026, 0.2]))
    assert np.isnan(z[1]) and z[-1] > 0
    emb = np.full((2, 10), 0.3, np.float32)
    np.testing.assert_array_equal(calibrate_change(emb, small, slice(0, 8)), emb)  # no reading: unchanged
    assert np.isnan(pixel_change(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8)))


def test_calibration_moves_only_the_none_share_and_keeps_the_vector(default_model, landsat_pairs) -> None:
    part = type_slice(default_model)
    assert part is not None
    pairs = landsat_pairs[:6]
    with torch.inference_mode():
        emb = default_model.encode_pairs(
            np.stack([p.rgb("before") for p in pairs]), np.stack([p.rgb("after") for p in pairs])
        ).numpy()
    z = np.array([2.0, -2.0, 0.0, 1.0, -1.0, 3.0])
    out = calibrate_change(emb, z, part)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), np.linalg.norm(emb, axis=1), rtol=1e-5)
    rest = np.ones(emb.shape[1], bool)
    rest[part] = False
    np.testing.assert_array_equal(out[:, rest], emb[:, rest])  # contrastive and caption parts kept
    for row, zi in enumerate(z):
        before, after = type_reading(emb[row], part), type_reading(out[row], part)
        if zi > 0:
            assert after["none"] < before["none"]
        elif zi < 0:
            assert after["none"] > before["none"]
        else:
            assert after["none"] == pytest.approx(before["none"], abs=1e-6)
        # the change types keep their ratios to each other
        ratio = {t: after[t] / before[t] for t in before if t != "none" and before[t] > 1e-4}
        assert max(ratio.values()) == pytest.approx(min(ratio.values()), rel=1e-3)
    np.testing.assert_array_equal(calibrate_change(emb, z, part, weight=0.0), emb)


def test_fine_tuned_heads_and_plain_heads_are_left_alone(default_model) -> None:
    import copy

    tuned = copy.deepcopy(default_model)
    tuned.pair_head.mix.copy_(torch.eye(len(tuned.pair_head.mix)) * 0.5 + 0.01)
    assert type_slice(tuned) is None  # its type part no longer reads as sqrt(p)
    emb = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    assert calibrate_change(emb, np.ones(4), None) is emb


def test_index_build_reads_each_pair_against_its_shard(default_model, landsat_pairs) -> None:
    """The built shard stores each pair's pixel change and its change relative to the shard, and the
    stored embeddings read the pairs that changed most in the series as least likely unchanged."""
    from dataclasses import replace

    from textitsr.index.build import BuildConfig, embed_pairs

    part = type_slice(default_model)
    config = BuildConfig(prefetch=False, precision="fp32", backbone_runtime="eager")
    plain = embed_pairs(default_model, landsat_pairs, replace(config, archive_change_weight=0.0))
    read = embed_pairs(default_model, landsat_pairs, config)
    stats = [json.loads(r["change_stats"]) for r in read.rows]
    changes = np.array([s["pixel_change"] for s in stats])
    relative = np.array([s["relative_pixel_change"] for s in stats])
    expected = [pixel_change(p.rgb("before"), p.rgb("after")) for p in landsat_pairs]
    np.testing.assert_allclose(changes, expected, rtol=1e-6)
    np.testing.assert_allclose(relative, relative_change(changes), atol=1e-9)
    assert {s["archive_pairs"] for s in stats} == {len(landsat_pairs)}
    assert "ndvi_delta" in stats[0]  # the spectral statistics are still there
    most, least = int(np.argmax(relative)), int(np.argmin(relative))
    assert relative[most] > 0 > relative[least]
    none = [type_reading(e, part)["none"] for e in read.pair_embeddings]
    none_plain = [type_reading(e, part)["none"] for e in plain.pair_embeddings]
    assert none[most] < none_plain[most] and none[least] > none_plain[least]


def test_a_shard_too_small_for_statistics_is_read_pair_by_pair(default_model, landsat_pairs) -> None:
    from textitsr.index.build import BuildConfig, embed_pairs

    config = BuildConfig(prefetch=False, precision="fp32", backbone_runtime="eager")
    few = landsat_pairs[: MIN_ARCHIVE_PAIRS - 1]
    read = embed_pairs(default_model, few, config)
    stats = [json.loads(r["change_stats"]) for r in read.rows]
    assert all("pixel_change" in s and "relative_pixel_change" not in s and "archive_pairs" not in s
               for s in stats)
    with torch.inference_mode():
        alone = default_model.encode_pairs(
            np.stack([p.rgb("before") for p in few]), np.stack([p.rgb("after") for p in few])
        ).numpy()
    np.testing.assert_allclose(read.pair_embeddings, alone, atol=1e-5)


def _sensor_folder(root, landsat_pairs) -> dict[str, str]:
    """A pairs folder of ten real Landsat and ten real NAIP date pairs whose pairs.jsonl names each
    pair's sensor; returns {pair id: sensor}."""
    from PIL import Image

    from textitsr.data.real_scenes import series_sources

    naip = [p for src in series_sources() for p in src.pairs() if not p.pair_id.startswith("landsat")]
    chosen = [("landsat", p) for p in landsat_pairs[:10]] + [("naip", p) for p in naip[:10]]
    for side in ("before", "after"):
        (root / side).mkdir(parents=True)
    records, sensors = [], {}
    for i, (sensor, pair) in enumerate(chosen):
        name = f"{sensor}{i:02d}"
        Image.fromarray(pair.rgb("before")).save(root / "before" / f"{name}.png")
        Image.fromarray(pair.rgb("after")).save(root / "after" / f"{name}.png")
        records.append(json.dumps({"name": name, "source": sensor, "change_types": ["none"]}))
        sensors[f"folder_{name}"] = sensor
    (root / "pairs.jsonl").write_text("\n".join(records) + "\n")
    return sensors


def test_a_folder_naming_each_pairs_sensor_is_read_per_sensor(default_model, landsat_pairs, tmp_path) -> None:
    """Mixed sensors in one folder: with pairs.jsonl naming the sensor, each sensor's pairs read as
    they do indexed alone, and `evaluate` reads them the way the index does; without it, one archive."""
    from dataclasses import replace

    from textitsr.data.folder import FolderSource
    from textitsr.embedding.archive_change import ArchiveChanges
    from textitsr.index.build import BuildConfig, embed_pairs

    sensors = _sensor_folder(tmp_path / "mixed", landsat_pairs)
    pairs = list(FolderSource(tmp_path / "mixed").pairs())
    assert {p.pair_id: p.archive for p in pairs} == sensors
    config = BuildConfig(prefetch=False, precision="fp32", backbone_runtime="eager")

    def relative(shard) -> dict[str, float]:
        return {r["pair_id"]: json.loads(r["change_stats"])["relative_pixel_change"] for r in shard.rows}

    mixed = embed_pairs(default_model, pairs, config)
    by_sensor = relative(mixed)
    for sensor in ("landsat", "naip"):
        own = [p for p in pairs if p.archive == sensor]
        alone = embed_pairs(default_model, own, config)
        assert relative(alone) == pytest.approx({p.pair_id: by_sensor[p.pair_id] for p in own}, abs=1e-9)
        assert np.median(list(relative(alone).values())) == pytest.approx(0.0, abs=1e-9)
        assert {json.loads(r["change_stats"])["archive_pairs"] for r in alone.rows} == {len(own)} == {10}
        rows = [i for i, r in enumerate(mixed.rows) if r["pair_id"] in relative(alone)]
        np.testing.assert_allclose(mixed.pair_embeddings[rows], alone.pair_embeddings, atol=1e-5)
    plain = embed_pairs(default_model, pairs, replace(config, archive_change_weight=0.0))
    reading = ArchiveChanges.read(pairs, [p.pair_id for p in pairs])
    np.testing.assert_allclose(reading.calibrate(default_model, plain.pair_embeddings), mixed.pair_embeddings,
                               atol=1e-5)
    (tmp_path / "mixed" / "pairs.jsonl").unlink()  # no listing: the whole shard is one archive
    pooled = relative(embed_pairs(default_model, list(FolderSource(tmp_path / "mixed").pairs()), config))
    assert max(abs(pooled[pid] - by_sensor[pid]) for pid in sensors) > 0.2


def test_archive_sizes_count_the_pairs_each_reading_stands_on() -> None:
    from textitsr.embedding.archive_change import archive_keys, archive_sizes

    keys = archive_keys(["naip", None, "naip", "landsat", None, "naip"])
    sizes = archive_sizes(np.array([0.1, 0.2, np.nan, 0.3, 0.1, 0.2]), keys)
    assert sizes.tolist() == [2, 2, 2, 1, 2, 2]  # a pair of unknown change does not count
    assert archive_sizes(np.array([0.1, np.nan, 0.3])).tolist() == [2, 2, 2]
    assert archive_sizes(np.zeros(0), archive_keys([])).tolist() == []
