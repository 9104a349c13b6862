"""Hostile or damaged stores are refused with a StoreError naming the file and field, on open or on
the first read, never a TypeError/KeyError, an empty result or a wrong ranking; `textitsr check`
lists every problem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import cli_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_store import DIM, make_shard, new_store

from textitsr.errors import StoreError
from textitsr.index.integrity import check_store
from textitsr.index.shards import write_shard
from textitsr.index.store import Store, read_manifest


def two_shard_store(root: Path) -> Store:
    store = new_store(root, dtype="float32")
    store.add_shard("a-00000", make_shard("a", 3, seed=1))
    store.add_shard("b-00000", make_shard("b", 2, seed=2))
    return store


def edit_manifest(root: Path, change) -> None:
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda m: m.update(checkpoint=123), "checkpoint"),
        (lambda m: m.update(embed_dim="abc"), "embed_dim"),
        (lambda m: m.update(dtype="int8"), "dtype"),
        (lambda m: m.update(checkpoint_id=None), "checkpoint_id"),
        (lambda m: m["shards"][0].pop("name"), r"shards\[0\]\.name"),
        (lambda m: m["shards"][0].update(name="../../outside"), r"shards\[0\]\.name"),
        (lambda m: m["shards"][0].update(name="/etc"), r"shards\[0\]\.name"),
        (lambda m: m["shards"][1].update(name="a-00000"), r"shards\[1\]\.name"),
        (lambda m: m["shards"][0].update(n_pairs="3"), r"shards\[0\]\.n_pairs"),
        (lambda m: m["shards"][0].update(n_pairs=-1), r"shards\[0\]\.n_pairs"),
        (lambda m: m["shards"].append("oops"), r"shards\[2\]"),
        (lambda m: m.update(shards={"a": 1}), "shards"),
        (lambda m: m.update(n_pairs="99"), "n_pairs"),
    ],
)
def test_wrong_manifest_fields_are_named(tmp_path: Path, change, field: str) -> None:
    two_shard_store(tmp_path / "s")
    edit_manifest(tmp_path / "s", change)
    with pytest.raises(StoreError, match=rf"manifest\.json: field '?{field}"):
        Store.open(tmp_path / "s")


def test_shard_folder_linking_outside_the_store_is_refused(tmp_path: Path) -> None:
    two_shard_store(tmp_path / "s")
    outside = tmp_path / "outside"
    shutil.move(tmp_path / "s/shards/a-00000", outside)
    (tmp_path / "s/shards/a-00000").symlink_to(outside)
    with pytest.raises(StoreError, match="links outside"):
        Store.open(tmp_path / "s")


def overwrite_embeddings(root: Path, shard: str, change) -> None:
    path = root / "shards" / shard / "pair_embeddings.npy"
    emb = np.load(path)
    change(emb)
    np.save(path, emb)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e.__setitem__((1, 0), np.nan), "row 1 is not finite"),
        (lambda e: e.__setitem__((0, 3), np.inf), "row 0 is not finite"),
        (lambda e: e.__setitem__(slice(None), np.nan), "row 0 is not finite"),
        (lambda e: e.__setitem__(2, e[2] * 1000), "row 2 has L2 norm 1000"),
    ],
)
def test_non_finite_or_unnormalised_embeddings_are_refused(tmp_path: Path, change, message: str) -> None:
    two_shard_store(tmp_path / "s")
    overwrite_embeddings(tmp_path / "s", "a-00000", change)
    store = Store.open(tmp_path / "s")
    with pytest.raises(StoreError, match=rf"a-00000/pair_embeddings\.npy: embedding {message}"):
        store.pair_embeddings()


def test_embeddings_of_another_shape_dtype_or_row_count_are_refused_on_open(tmp_path: Path) -> None:
    two_shard_store(tmp_path / "s")
    path = tmp_path / "s/shards/b-00000/pair_embeddings.npy"
    np.save(path, np.load(path).astype(np.float16))
    with pytest.raises(StoreError, match="dtype float16, the manifest says float32"):
        Store.open(tmp_path / "s")
    np.save(path, np.eye(3, DIM, dtype=np.float32))
    with pytest.raises(StoreError, match=r"shape \(3, 8\), expected \(2, 8\)"):
        Store.open(tmp_path / "s")
    meta = tmp_path / "s/shards/a-00000/metadata.parquet"
    pq.write_table(pq.read_table(meta).slice(0, 2), meta)
    with pytest.raises(StoreError, match="metadata.parquet: 2 rows, the manifest lists 3"):
        Store.open(tmp_path / "s")


def test_writing_bad_embeddings_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    new_store(tmp_path / "s")
    data = make_shard("a", 3)
    data.pair_embeddings[1] = np.nan
    with pytest.raises(StoreError, match="pair embeddings: embedding row 1 is not finite"):
        write_shard(tmp_path / "s", "a-00000", data)
    data = make_shard("a", 3)
    data.caption_embeddings *= 3
    with pytest.raises(StoreError, match="caption embeddings: embedding row 0 has L2 norm 3"):
        write_shard(tmp_path / "s", "a-00000", data)
    assert not (tmp_path / "s/shards").exists() or not any((tmp_path / "s/shards").iterdir())


def test_check_lists_every_problem(tmp_path: Path, monkeypatch, capsys) -> None:
    two_shard_store(tmp_path / "s")
    code, _ = cli_main(monkeypatch, capsys, "check", tmp_path / "s")
    assert code == 0
    overwrite_embeddings(tmp_path / "s", "a-00000", lambda e: e.__setitem__((0, 0), np.nan))
    meta = tmp_path / "s/shards/b-00000/metadata.parquet"
    table = pq.read_table(meta)
    location = pa.array(["{not json", *table.column("location").to_pylist()[1:]], pa.string())
    pq.write_table(table.set_column(table.schema.get_field_index("location"), "location", location), meta)
    problems = check_store(tmp_path / "s")
    assert len(problems) == 2
    assert "a-00000/pair_embeddings.npy: embedding row 0 is not finite" in problems[0]
    assert "pair 'b_0'" in problems[1] and "'location' is not valid JSON" in problems[1]
    code, err = cli_main(monkeypatch, capsys, "check", tmp_path / "s")
    assert code == 1 and err.strip().splitlines() == [f"error: {p}" for p in problems]
    code, err = cli_main(monkeypatch, capsys, "check", tmp_path / "nowhere")
    assert code == 1 and "store folder not found" in err


def test_bad_location_json_is_a_store_error_from_the_service(tiny_archive, tmp_path: Path) -> None:
    from textitsr.service import SearchService

    store = tmp_path / "store"
    shutil.copytree(tiny_archive.store, store)
    shard = sorted((store / "shards").iterdir())[0]
    table = pq.read_table(shard / "metadata.parquet")
    first = table.column("pair_id")[0].as_py()
    location = pa.array(["{broken", *table.column("location").to_pylist()[1:]], pa.string())
    pq.write_table(
        table.set_column(table.schema.get_field_index("location"), "location", location),
        shard / "metadata.parquet",
    )
    service = SearchService.open(store)
    with pytest.raises(StoreError, match=rf"pair '{first}'.*'location' is not valid JSON"):
        service.catalog.pair(first)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.dictionaries(
        st.sampled_from(
            ["checkpoint", "embed_dim", "dtype", "shards", "n_pairs", "model", "thumb_size", "name"]
        ),
        json_values,
        max_size=4,
    )
)
def test_any_manifest_either_opens_or_raises_store_error(tmp_path_factory, changes: dict) -> None:
    """Manifest parsing, property-based: whatever the fields hold, the only failure is StoreError."""
    root = tmp_path_factory.mktemp("m") / "s"
    two_shard_store(root)
    edit_manifest(root, lambda m: m.update(changes))
    try:
        read_manifest(root)
        Store.open(root)
    except StoreError:
        pass
