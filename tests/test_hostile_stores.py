"""Stores, checkpoints and tile caches written by someone else: no symlink followed, no FIFO opened,
no JSON nested deep enough to crash the parser, and `textitsr check` finds every inconsistency the
search and the API would trip over, one line each."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import cli_main
from PIL import Image
from test_store_validation import edit_manifest, two_shard_store

from textitsr.app.static_files import publish_tree
from textitsr.errors import CheckpointError, StoreError
from textitsr.index.integrity import check_store
from textitsr.index.store import Store, read_manifest
from textitsr.index.tiles import TileIndex
from textitsr.models.checkpoint import read_checkpoint_config

REPO = Path(__file__).resolve().parents[1]
DEEP = "[" * 100_000 + "]" * 100_000


def in_child(code: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter; a hang fails the test instead of the suite."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                              text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung for {timeout_s} s")


def test_publishing_tiles_across_file_systems_never_copies_a_link_target(tmp_path: Path, monkeypatch) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOKEN=hunter2")
    tiles = tmp_path / "store" / "tiles" / "k" / "3" / "1"
    tiles.mkdir(parents=True)
    (tiles / "2.webp").write_bytes(b"RIFF tile")
    (tiles / "3.webp").symlink_to(secret)
    (tiles / "4.webp").symlink_to("/proc/self/environ")
    os.mkfifo(tiles / "5.webp")

    def no_links(*args, **kwargs):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    static = tmp_path / "static"
    publish_tree(tmp_path / "store" / "tiles", tmp_path / "store", static_dir=static)
    published = {p.name: p for p in static.rglob("*") if p.is_file()}
    assert set(published) == {"2.webp"} and published["2.webp"].read_bytes() == b"RIFF tile"
    assert not any(p.is_symlink() for p in static.rglob("*"))


@pytest.mark.parametrize("name", ["metadata.parquet", "pair_embeddings.npy", "thumbnails.parquet"])
def test_a_fifo_as_a_shard_file_does_not_hang_check_or_open(tmp_path: Path, name: str) -> None:
    two_shard_store(tmp_path / "s")
    path = tmp_path / "s/shards/a-00000" / name
    path.unlink()
    os.mkfifo(path)
    done = in_child(f"""
        from textitsr.index.integrity import check_store
        from textitsr.index.store import Store
        from textitsr.errors import StoreError
        print("\\n".join(check_store({str(tmp_path / "s")!r})))
        try:
            Store.open({str(tmp_path / "s")!r})
        except StoreError as err:
            print("open:", err)
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{name}: a FIFO, expected a regular file" in done.stdout
    assert "open:" in done.stdout


def test_a_shard_file_linked_out_of_the_store_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    two_shard_store(tmp_path / "s")
    two_shard_store(tmp_path / "other")
    path = tmp_path / "s/shards/b-00000/thumbnails.parquet"
    path.unlink()
    path.symlink_to(tmp_path / "other/shards/b-00000/thumbnails.parquet")
    with pytest.raises(StoreError, match="thumbnails.parquet: a symlink, expected a regular file"):
        Store.open(tmp_path / "s")
    code, err = cli_main(monkeypatch, capsys, "check", tmp_path / "s")
    assert code == 1 and "a symlink, expected a regular file" in err and len(err.strip().splitlines()) == 1


def test_deeply_nested_json_is_a_clear_error_not_a_recursion_error(tmp_path: Path) -> None:
    two_shard_store(tmp_path / "s")
    (tmp_path / "s/manifest.json").write_text(DEEP)
    with pytest.raises(StoreError, match="nested 100000 levels deep"):
        read_manifest(tmp_path / "s")
    checkpoint = tmp_path / "model"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(DEEP)
    (checkpoint / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="nested 100000 levels deep"):
        read_checkpoint_config(checkpoint)
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    (tiles / "index.json").write_text('{"scenes": ' + DEEP + "}")
    with pytest.raises(StoreError, match="corrupt tile index.*nested"):
        TileIndex.read(tiles)


def test_a_manifest_symlinked_elsewhere_or_a_fifo_is_refused(tmp_path: Path) -> None:
    two_shard_store(tmp_path / "s")
    os.replace(tmp_path / "s/manifest.json", tmp_path / "elsewhere.json")
    (tmp_path / "s/manifest.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(StoreError, match="manifest.json: a symlink, expected a regular file"):
        read_manifest(tmp_path / "s")
    (tmp_path / "s/manifest.json").unlink()
    os.mkfifo(tmp_path / "s/manifest.json")
    done = in_child(f"""
        from textitsr.index.store import read_manifest
        try:
            read_manifest({str(tmp_path / "s")!r})
        except Exception as err:
            print(type(err).__name__, err)
    """)
    assert "StoreError" in done.stdout and "not a regular file" in done.stdout, done.stderr[-2000:]


def test_a_checkpoint_config_may_be_a_link_but_never_a_fifo(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text(json.dumps({"format_version": 0, "model": {}}))
    checkpoint = tmp_path / "model"
    checkpoint.mkdir()
    (checkpoint / "model.safetensors").write_bytes(b"")
    (checkpoint / "config.json").symlink_to(real)  # git-annex and DVC keep files as links
    with pytest.raises(CheckpointError, match="format_version 0"):
        read_checkpoint_config(checkpoint)
    (checkpoint / "config.json").unlink()
    os.mkfifo(checkpoint / "config.json")
    done = in_child(f"""
        from textitsr.models.checkpoint import read_checkpoint_config
        try:
            read_checkpoint_config({str(checkpoint)!r})
        except Exception as err:
            print(type(err).__name__, err)
    """)
    assert "CheckpointError" in done.stdout and "not a regular file" in done.stdout, done.stderr[-2000:]


def test_check_reports_deeply_nested_json_in_a_metadata_field(tmp_path: Path) -> None:
    two_shard_store(tmp_path / "s")
    path = tmp_path / "s/shards/a-00000/metadata.parquet"
    locations = pq.read_table(path).column("location").to_pylist()
    rewrite_column(path, "location", pa.array([DEEP, *locations[1:]], pa.string()))
    problems = check_store(tmp_path / "s")
    assert len(problems) == 1 and "pair 'a_0'" in problems[0] and "nested 100000 levels deep" in problems[0]


@pytest.mark.parametrize(("change", "expected"), [
    (lambda m: m.update(n_pairs=999), "field 'n_pairs'"),
    (lambda m: m.update(n_captions=3), "field 'n_captions'"),
])
def test_check_compares_the_manifest_totals_with_the_shards(tmp_path: Path, change, expected: str) -> None:
    two_shard_store(tmp_path / "s")
    edit_manifest(tmp_path / "s", change)
    problems = check_store(tmp_path / "s")
    assert len(problems) == 1 and expected in problems[0] and "the sum over its shards" in problems[0]


def rewrite_column(path: Path, column: str, values: pa.Array) -> None:
    table = pq.read_table(path)
    pq.write_table(table.set_column(table.schema.get_field_index(column), column, values), path)


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height)).save(buf, format="PNG")
    return buf.getvalue()


def test_check_decodes_every_thumbnail_within_a_pixel_bound(tmp_path: Path) -> None:
    store = two_shard_store(tmp_path / "s")
    path = tmp_path / "s/shards/a-00000/thumbnails.parquet"
    before = pq.read_table(path).column("before").to_pylist()
    rewrite_column(path, "before", pa.array([b"not a png", png(3000, 3000), before[2]], pa.binary()))
    problems = check_store(tmp_path / "s")
    assert len(problems) == 1
    assert "pair 'a_0' before thumbnail: undecodable thumbnail" in problems[0]
    with pytest.raises(StoreError, match="a_1.*3000 x 3000 px"):
        store.thumbnails("a-00000", "a_1")
    assert store.thumbnails("a-00000", "a_2")[0].shape[2] == 3


def test_check_reports_columns_of_the_wrong_type(tmp_path: Path) -> None:
    two_shard_store(tmp_path / "s")
    rewrite_column(tmp_path / "s/shards/a-00000/metadata.parquet", "west",
                   pa.array(["ten", "eleven", "twelve"], pa.string()))
    rewrite_column(tmp_path / "s/shards/b-00000/captions.parquet", "pair_id",
                   pa.array(list(range(4)), pa.int64()))
    problems = check_store(tmp_path / "s")
    assert any("metadata.parquet: column 'west' is string, expected double" in p for p in problems)
    assert any("captions.parquet: column 'pair_id' is int64, expected string" in p for p in problems)
    with pytest.raises(StoreError, match="column 'west'"):
        Store.open(tmp_path / "s").metadata()


def test_check_reports_captions_of_pairs_the_shard_lacks(tmp_path: Path) -> None:
    two_shard_store(tmp_path / "s")
    rewrite_column(tmp_path / "s/shards/b-00000/captions.parquet", "pair_id",
                   pa.array(["b_0", "b_0", "zz_9", "b_1"], pa.string()))
    problems = check_store(tmp_path / "s")
    assert len(problems) == 1 and "1 caption(s) of pairs not in the shard, e.g. 'zz_9'" in problems[0]


def test_a_sound_store_still_checks_clean(tmp_path: Path) -> None:
    two_shard_store(tmp_path / "s")
    assert check_store(tmp_path / "s") == []
    assert np.isfinite(Store.open(tmp_path / "s").pair_embeddings()).all()
    assert json.loads((tmp_path / "s/manifest.json").read_text())["n_pairs"] == 5
