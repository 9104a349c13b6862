"""SearchService: the queries the app and CLI make, and every kind of bad input named in issue 4."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from textitsr.errors import InputError, StoreError
from textitsr.index.archive import Archive
from textitsr.index.store import Store
from textitsr.service import ArchiveStats, CaptionHit, PairHit, SearchFilters, SearchService


@pytest.fixture(scope="module")
def service(tiny_archive) -> SearchService:
    return SearchService.open(tiny_archive.store)


def copy_store(tiny_archive, tmp_path: Path) -> Path:
    dest = tmp_path / "store"
    shutil.copytree(tiny_archive.store, dest)
    return dest


def folder_digest(root: Path) -> str:
    """Hash of every path and file's bytes under `root`: equal digests = the store is untouched."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_search_text_ranks_the_archive_by_cosine_similarity(service: SearchService) -> None:
    hits = service.search_text("new buildings along the road", k=5)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5] and all(isinstance(h, PairHit) for h in hits)
    ids, emb = service.catalog.pair_ids(), service.store.pair_embeddings()
    sims = emb @ service.encode_query("new buildings along the road")[0]
    assert [h.pair_id for h in hits] == [ids[i] for i in np.argsort(-sims)[:5]]
    assert [h.score for h in hits] == pytest.approx(sorted(sims, reverse=True)[:5], abs=1e-4)
    top = hits[0]
    assert top.source == "synthetic" and top.split in ("train", "val", "test") and len(top.captions) == 5
    assert top.bounds is not None and top.bounds[0] < top.bounds[2] and top.dates[0] < top.dates[1]


@pytest.mark.parametrize("query", ["", "   \n\t "])
def test_empty_query_is_an_input_error(service: SearchService, query: str) -> None:
    with pytest.raises(InputError, match="query"):
        service.search_text(query)


def test_long_and_non_english_queries_work(service: SearchService) -> None:
    long = ("a new road is built across the bare land next to the houses " * 200)[:10_000]
    assert len(service.search_text(long, k=3)) == 3
    for query in ("nuevos edificios junto a la carretera", "道路旁边新建了房屋", "Überflutung 🌊"):
        hits = service.search_text(query, k=4)
        assert len(hits) == 4 and all(np.isfinite(h.score) for h in hits)


@pytest.mark.parametrize("k", [0, -3, 2.5, "10", True])
def test_bad_k_is_an_input_error(service: SearchService, k) -> None:
    with pytest.raises(InputError, match="k="):
        service.search_text("road", k=k)


def test_huge_k_is_clamped_to_the_archive(service: SearchService) -> None:
    hits = service.search_text("road", k=10**9)
    assert len(hits) == len(service) == 40 and len({h.pair_id for h in hits}) == 40


def test_filters(service: SearchService) -> None:
    pair = service.catalog.pair("test_000003")
    hits = service.search_text("road", k=40, filters=SearchFilters(bbox=pair["bounds"]))
    assert "test_000003" in {h.pair_id for h in hits} and len(hits) < 40
    w, s, e, n = pair["bounds"]
    for h in hits:  # every hit's footprint intersects the box
        assert h.bounds[0] <= e and h.bounds[2] >= w and h.bounds[1] <= n and h.bounds[3] >= s
    test_dates = SearchFilters(date_from="2017-01-01", date_to="2020-12-31")  # only the test scene's span
    assert {h.split for h in service.search_text("road", k=40, filters=test_dates)} == {"test"}
    assert service.search_text("road", filters=SearchFilters(date_to="1990-01-01")) == []
    assert service.search_text("road", filters=SearchFilters(sources=("levircc",))) == []
    with pytest.raises(InputError, match="filters"):
        service.search_text("road", filters={"bbox": (0, 0, 1, 1)})


def test_search_pair_by_id_excludes_itself(service: SearchService) -> None:
    hits = service.search_pair("val_000002", k=50)
    assert len(hits) == 39 and "val_000002" not in {h.pair_id for h in hits}
    only_test = service.search_pair("val_000002", k=3, filters=SearchFilters(date_from="2017-01-01"))
    assert {h.split for h in only_test} == {"test"}


def test_search_pair_by_uploaded_images_finds_that_pair(service: SearchService) -> None:
    before, after = service.catalog.thumbnails("train_000004")
    assert before.dtype == np.uint8 and before.shape == (64, 64, 3)  # tiles smaller than the thumb size
    hits = service.search_pair(before=before, after=after, k=3)
    assert hits[0].pair_id == "train_000004" and hits[0].score > 0.99
    floats = service.search_pair(before=before / 255.0, after=after / 255.0, k=1)
    assert floats[0].pair_id == "train_000004"
    with pytest.raises(InputError, match="before"):
        service.search_pair(before=before)
    with pytest.raises(InputError, match="either pair_id or"):
        service.search_pair("train_000004", before=before, after=after)
    with pytest.raises(InputError, match="RGB image"):
        service.search_pair(before=np.zeros((4, 4, 3)), after=np.zeros((4, 4, 3)))


def test_unknown_pair_id_is_an_input_error(service: SearchService) -> None:
    for call in (
        service.search_pair,
        service.describe_pair,
        service.catalog.pair,
        service.catalog.thumbnails,
        service.catalog.change_stats,
    ):
        with pytest.raises(InputError, match="nope"):
            call("nope")


def test_describe_pair_returns_distinct_archive_sentences(service: SearchService) -> None:
    hits = service.describe_pair("train_000004", k=5)
    assert len(hits) == 5 and all(isinstance(h, CaptionHit) for h in hits)
    assert len({h.text for h in hits}) == 5 and [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert hits[0].score >= hits[-1].score and all(h.pair_id for h in hits)


def test_records_stats_and_footprints(service: SearchService) -> None:
    rec = service.catalog.pair("train_000004")
    assert rec["split"] == "train" and rec["crs"] == "EPSG:32614" and len(rec["captions"]) == 5
    assert rec["location"]["kind"] == "synthetic" and rec["native_bounds"][2] - rec["native_bounds"][0] == 64
    stats = service.catalog.change_stats("train_000004")
    assert stats is not None and "ndvi_delta" in stats
    st = service.catalog.stats()
    assert isinstance(st, ArchiveStats)
    assert st.n_pairs == 40 and st.n_captions == 200 and st.sources == {"synthetic": 40}
    assert st.splits == {"train": 24, "val": 8, "test": 8}
    assert st.date_range == ("2015-10-03", "2020-04-06")
    assert st.model["fusion"] == "gff:before+after+diff" and st.model["checkpoint_id"]
    geo = service.catalog.footprints(SearchFilters(sources=("synthetic",)))
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == 40
    props = geo["features"][0]["properties"]
    assert set(props) >= {"pair_id", "source", "date_before", "date_after", "change_type"}
    json.dumps(geo)  # serialisable as is
    ids, emb = service.catalog.pair_ids(), service.store.pair_embeddings()
    assert len(ids) == 40 and emb.dtype == np.float32 and emb.shape[1] == 256


def test_empty_store_gives_empty_results(tiny_archive, tmp_path: Path) -> None:
    from textitsr.models.checkpoint import checkpoint_id

    Store.create(
        tmp_path / "empty",
        checkpoint_id=checkpoint_id(tiny_archive.checkpoint),
        embed_dim=256,
        checkpoint=str(tiny_archive.checkpoint),
    )
    digest = folder_digest(tmp_path / "empty")
    svc = SearchService.open(tmp_path / "empty")
    assert svc.search_text("road") == [] and svc.catalog.stats().n_pairs == 0
    assert svc.search_text("road", k=10**9) == [] and svc.tile_size() is None
    assert svc.catalog.footprints()["features"] == [] and svc.catalog.stats().date_range == (None, None)
    with pytest.raises(InputError):
        svc.search_text(" ")
    with pytest.raises(InputError, match="k="):
        svc.search_text("road", k=0)
    assert folder_digest(tmp_path / "empty") == digest


def test_corrupt_manifest_and_shard_are_store_errors(tiny_archive, tmp_path: Path) -> None:
    store = copy_store(tiny_archive, tmp_path)
    shard = sorted((store / "shards").iterdir())[1]
    (shard / "pair_embeddings.npy").write_bytes(b"\x93NUMPY garbage")
    digest = folder_digest(store)
    with pytest.raises(StoreError, match=f"{shard.name}.*pair_embeddings.npy"):
        SearchService.open(store)
    assert folder_digest(store) == digest  # refused as it is: nothing "repaired" or deleted
    (store / "manifest.json").write_text('{"format": "textitsr-store", "ver')
    digest = folder_digest(store)
    with pytest.raises(StoreError, match="manifest.json"):
        SearchService.open(store)
    assert folder_digest(store) == digest
    with pytest.raises(StoreError, match="not found"):
        SearchService.open(tmp_path / "missing")


def test_store_of_another_model_is_refused(tiny_archive, tmp_path: Path) -> None:
    store = copy_store(tiny_archive, tmp_path)
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["checkpoint_id"] = "0123456789abcdef"  # as if built before the model was retrained
    (store / "manifest.json").write_text(json.dumps(manifest))
    digest = folder_digest(store)
    with pytest.raises(StoreError, match="another|not comparable"):
        SearchService.open(store)
    assert folder_digest(store) == digest


def test_bad_queries_leave_the_store_untouched_and_the_service_working(tiny_archive, tmp_path: Path) -> None:
    store = copy_store(tiny_archive, tmp_path)
    digest = folder_digest(store)
    svc = SearchService.open(store)
    reference = svc.search_text("new buildings along the road", k=5)
    for bad in (
        lambda: svc.search_text(""),
        lambda: svc.search_text(" \n\t"),
        lambda: svc.search_text(None),  # type: ignore[arg-type]
        lambda: svc.search_text("road", k=0),
        lambda: svc.search_text("road", k=-5),
        lambda: svc.search_pair("train_000004", k=0),
        lambda: svc.describe_pair("train_000004", k=-1),
        lambda: svc.search_pair("no-such-pair"),
        lambda: add_to(svc, [store / "manifest.json"]),
        lambda: add_to(svc, [tmp_path / "a.tif", tmp_path / "b.tif"]),
    ):
        with pytest.raises(InputError):
            bad()
    assert len(svc.search_text("x" * 10_000, k=3)) == 3
    assert len(svc.search_text("新しい建物が道路沿いに建てられた", k=3)) == 3
    assert len(svc.search_text("road", k=10**12)) == 40
    assert svc.search_text("new buildings along the road", k=5) == reference  # still answers the same
    assert folder_digest(store) == digest


def test_a_scene_smaller_than_a_tile_is_refused_with_both_sizes(tiny_archive, tmp_path: Path) -> None:
    store = copy_store(tiny_archive, tmp_path)
    svc = SearchService.open(store)
    assert svc.tile_size() == 64  # the tiny world's tiles
    digest = folder_digest(store)
    scenes = write_scene_pair(tmp_path, size=(192, 192))  # new content: the world's own val scenes are in
    with pytest.raises(InputError, match=r"192x192 px.*256 px tile"):
        add_to(svc, scenes)  # the loader's default tile size
    with pytest.raises(InputError, match="tile_size"):
        add_to(svc, scenes, tile_size="64")
    assert folder_digest(store) == digest and len(svc) == 40
    assert add_to(svc, scenes, tile_size=svc.tile_size()) == 9  # 3 x 3 tiles of 64 px


def add_to(svc: SearchService, paths: list[Path], **options) -> int:
    """Append scenes to the service's store through the archive's writer (what the Archive page does);
    the service sees them at its next call, with no refresh."""
    return Archive(svc.store_root, svc.checkpoint).add_scenes(paths, **options)


def write_scene_pair(folder: Path, size: tuple[int, int] = (96, 128)) -> list[Path]:
    """Two dated 3-band uint8 GeoTIFFs of one UTM place (`size` rows x cols at 1 m), the second with a
    new 'road'."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    base = (rng.random((3, *size)) * 60 + 80).astype(np.uint8)
    changed = base.copy()
    changed[:, 40:52, :] = 200
    paths = []
    for name, data in (("site_2018-05-01.tif", base), ("site_2021-06-01.tif", changed)):
        path = folder / name
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=size[1],
            height=size[0],
            count=3,
            dtype="uint8",
            crs="EPSG:32614",
            transform=from_origin(630000, 3370000, 1, 1),
        ) as ds:
            ds.write(data)
        paths.append(path)
    return paths


def test_add_scenes_appends_tiles_of_a_geotiff_pair(tiny_archive, tmp_path: Path) -> None:
    store = copy_store(tiny_archive, tmp_path)
    svc = SearchService.open(store)
    paths = write_scene_pair(tmp_path)
    seen: list[float] = []
    added = add_to(svc, paths, progress=lambda f, msg: seen.append(f), tile_size=32)
    assert added == 12 and len(svc) == 52 and seen[-1] == 1.0  # 3 x 4 tiles of 32 px
    new = [h for h in svc.search_text("road", k=len(svc)) if h.source == "geotiff"]
    assert len(new) == added and all(h.bounds is not None for h in new)
    assert {h.dates for h in new} == {("2018-05-01", "2021-06-01")}
    with pytest.raises(InputError, match="already in the archive"):  # same content: refused, not re-added
        add_to(svc, paths, tile_size=32)
    assert len(SearchService.open(store)) == 52  # persisted
    with pytest.raises(InputError, match="two GeoTIFF"):
        add_to(svc, paths[:1])
