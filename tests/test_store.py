"""The on-disk store: round trip, atomic shard writes, resume, refusals and corruption reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from textitsr.data.pairs import BitemporalPair
from textitsr.errors import InputError, StoreError
from textitsr.index import store as store_mod
from textitsr.index.shards import ShardData, encode_thumbnail, pair_row, write_shard
from textitsr.index.store import Store

DIM = 8


def make_shard(prefix: str, n: int, seed: int = 0) -> ShardData:
    """n realistic pairs (georeferenced, dated, captioned) with random unit embeddings."""
    rng = np.random.default_rng(seed)
    rows, tb, ta, texts, ids = [], [], [], [], []
    for i in range(n):
        img = rng.random((40, 48, 3), dtype=np.float32)
        pair = BitemporalPair(
            pair_id=f"{prefix}_{i}",
            before=img,
            after=1 - img,
            captions=[f"road {i} built", "no change"],
            source="synthetic",
            split="train",
            bounds=(10.0 + i, 50.0, 10.5 + i, 50.5),
            crs="EPSG:32632",
            native_bounds=(0.0, 0.0, 48.0, 40.0),
            dates=("2016-04-18", "2019-05-02"),
            changed=True,
            change_type="road_built",
            location={"kind": "synthetic", "window": [0, 0, 48, 40]},
        )
        rows.append(pair_row(pair, {"ndvi_delta": -0.1 * i}))
        tb.append(encode_thumbnail(pair.rgb("before"), size=32))
        ta.append(encode_thumbnail(pair.rgb("after"), size=32))
        texts += pair.captions
        ids += [pair.pair_id] * len(pair.captions)
    emb = rng.standard_normal((n, DIM)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    cap = rng.standard_normal((len(texts), DIM)).astype(np.float32)
    cap /= np.linalg.norm(cap, axis=1, keepdims=True)
    return ShardData(rows, emb, tb, ta, texts, ids, cap)


def new_store(root: Path, dtype: str = "float16") -> Store:
    return Store.create(root, checkpoint_id="ckpt-a", embed_dim=DIM, dtype=dtype, checkpoint="/m")


def test_round_trip_of_two_shards(tmp_path: Path) -> None:
    store = new_store(tmp_path / "s", dtype="float32")
    a, b = make_shard("a", 3, seed=1), make_shard("b", 2, seed=2)
    store.add_shard("a-00000", a)
    store.add_shard("b-00000", b)

    reopened = Store.open(tmp_path / "s", checkpoint_id="ckpt-a")
    assert reopened.manifest["n_pairs"] == 5 and reopened.manifest["n_captions"] == 10
    meta = reopened.metadata()
    assert meta["pair_id"].tolist() == ["a_0", "a_1", "a_2", "b_0", "b_1"]
    assert meta.loc[1, "west"] == 11.0 and meta.loc[1, "date_after"] == "2019-05-02"
    assert list(meta.loc[0, "captions"]) == ["road 0 built", "no change"]
    assert json.loads(meta.loc[2, "change_stats"]) == {"ndvi_delta": pytest.approx(-0.2)}
    assert json.loads(meta.loc[0, "location"])["window"] == [0, 0, 48, 40]
    np.testing.assert_array_equal(
        reopened.pair_embeddings(), np.vstack([a.pair_embeddings, b.pair_embeddings])
    )
    assert reopened.captions()["pair_id"].tolist()[:2] == ["a_0", "a_0"]
    before, after = reopened.thumbnails("b-00000", "b_1")
    assert before.shape == (27, 32, 3) and before.dtype == np.uint8  # longest side shrunk to 32
    assert after.shape == before.shape


def test_float16_store_keeps_embeddings_close(tmp_path: Path) -> None:
    store = new_store(tmp_path / "s")
    shard = make_shard("a", 4)
    store.add_shard("a-00000", shard)
    assert np.load(tmp_path / "s/shards/a-00000/pair_embeddings.npy").dtype == np.float16
    np.testing.assert_allclose(Store.open(tmp_path / "s").pair_embeddings(), shard.pair_embeddings, atol=1e-3)


def test_failed_shard_write_leaves_last_good_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = new_store(tmp_path / "s")
    store.add_shard("a-00000", make_shard("a", 2))
    manifest_before = (tmp_path / "s/manifest.json").read_text()

    calls = {"n": 0}
    real_save = np.save

    def dying_save(*args, **kwargs):  # the build is killed between two files of a shard
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_save(*args, **kwargs)

    monkeypatch.setattr(store_mod.np, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        store.add_shard("b-00000", make_shard("b", 2))
    monkeypatch.undo()

    assert (tmp_path / "s/manifest.json").read_text() == manifest_before
    assert sorted(p.name for p in (tmp_path / "s/shards").iterdir()) == ["a-00000"]  # no half shard
    reopened = Store.open(tmp_path / "s")
    reopened.validate()
    assert reopened.metadata()["pair_id"].tolist() == ["a_0", "a_1"]


def test_uncommitted_shard_folder_is_ignored(tmp_path: Path) -> None:
    store = new_store(tmp_path / "s")
    store.add_shard("a-00000", make_shard("a", 2))
    write_shard(tmp_path / "s", "b-00000", make_shard("b", 3))  # written, manifest not yet updated
    reopened = Store.open(tmp_path / "s")
    assert len(reopened) == 2 and not reopened.has_shard("b-00000")
    reopened.add_shard("b-00000", make_shard("b", 3))  # the resumed build rewrites and commits it
    assert len(Store.open(tmp_path / "s")) == 5


def test_duplicate_pair_ids_are_refused_and_store_kept(tmp_path: Path) -> None:
    store = new_store(tmp_path / "s")
    store.add_shard("a-00000", make_shard("a", 2))
    with pytest.raises(StoreError, match="repeats 2 pair id"):
        store.add_shard("again-00000", make_shard("a", 2))
    assert not (tmp_path / "s/shards/again-00000").exists()
    assert len(Store.open(tmp_path / "s")) == 2


def test_store_of_another_model_is_refused(tmp_path: Path) -> None:
    new_store(tmp_path / "s").add_shard("a-00000", make_shard("a", 1))
    with pytest.raises(StoreError, match="ckpt-a.*ckpt-b"):
        Store.open(tmp_path / "s", checkpoint_id="ckpt-b")
    with pytest.raises(StoreError, match="another checkpoint|ckpt-b"):
        Store.create(tmp_path / "s", checkpoint_id="ckpt-b", embed_dim=DIM)
    assert len(Store.open(tmp_path / "s", checkpoint_id="ckpt-b", allow_other_model=True)) == 1


def test_refuses_to_build_into_a_folder_that_is_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a store"):
        Store.create(tmp_path / "x", checkpoint_id="c", embed_dim=DIM)
    assert (tmp_path / "x" / "notes.txt").read_text() == "mine"


def test_corrupt_manifest_is_reported_by_name(tmp_path: Path) -> None:
    new_store(tmp_path / "s")
    (tmp_path / "s/manifest.json").write_text("{ not json")
    with pytest.raises(StoreError, match=r"manifest\.json.*corrupt"):
        Store.open(tmp_path / "s")
    (tmp_path / "s/manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(StoreError, match="not a textitsr store manifest"):
        Store.open(tmp_path / "s")


@pytest.mark.parametrize("victim", ["pair_embeddings.npy", "metadata.parquet", "captions.parquet"])
def test_corrupt_shard_file_is_reported_by_name(tmp_path: Path, victim: str) -> None:
    new_store(tmp_path / "s").add_shard("a-00000", make_shard("a", 3))
    path = tmp_path / "s/shards/a-00000" / victim
    path.write_bytes(path.read_bytes()[:40])  # truncated, as by a full disk
    with pytest.raises(StoreError, match=victim.replace(".", r"\.")):
        Store.open(tmp_path / "s").validate()


def test_missing_store_and_empty_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not found"):
        Store.open(tmp_path / "nowhere")
    empty = new_store(tmp_path / "s")
    empty.validate()
    assert len(empty) == 0 and empty.pair_embeddings().shape == (0, DIM) and len(empty.metadata()) == 0


def test_with_embeddings_copies_the_store_with_new_pair_vectors(tmp_path: Path) -> None:
    store = new_store(tmp_path / "s", dtype="float32")
    store.add_shard("a-00000", make_shard("a", 3, seed=1))
    store.add_shard("b-00000", make_shard("b", 2, seed=2))
    new = np.eye(5, DIM, dtype=np.float32)
    card = {"checkpoint_id": "ckpt-b", "fusion": "gff:diff"}

    copy = store.with_embeddings(tmp_path / "tuned", new, checkpoint=tmp_path / "m2", model=card)

    assert copy.checkpoint_id == "ckpt-b" and copy.manifest["model"] == card
    assert copy.manifest["checkpoint"] == str(tmp_path / "m2")
    np.testing.assert_array_equal(copy.pair_embeddings(), new)
    assert copy.metadata()["pair_id"].tolist() == store.metadata()["pair_id"].tolist()
    np.testing.assert_array_equal(copy.caption_embeddings(), store.caption_embeddings())
    np.testing.assert_array_equal(copy.thumbnails("b-00000", "b_1")[1], store.thumbnails("b-00000", "b_1")[1])
    assert Store.open(tmp_path / "s").checkpoint_id == "ckpt-a"  # the base store is untouched


def test_with_embeddings_refuses_a_wrong_row_count(tmp_path: Path) -> None:
    store = new_store(tmp_path / "s")
    store.add_shard("a-00000", make_shard("a", 3))
    with pytest.raises(StoreError, match="3 pairs"):
        store.with_embeddings(tmp_path / "t", np.zeros((2, DIM)),
                              checkpoint=tmp_path, model={"checkpoint_id": "x"})
    assert not (tmp_path / "t").exists()
