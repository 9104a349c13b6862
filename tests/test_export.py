"""GeoParquet export: what geopandas and DuckDB read from `textitsr export`, and the output rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_store import DIM, make_shard, new_store

from tests.conftest import cli_main
from textitsr.errors import OutputError
from textitsr.index.export import Selection, export_geoparquet, rows_geoparquet


@pytest.fixture
def store(tmp_path: Path):
    """A two-shard store of 5 georeferenced, dated, captioned pairs (float32 embeddings)."""
    s = new_store(tmp_path / "store", dtype="float32")
    s.add_shard("a-00000", make_shard("a", 3, seed=1))
    s.add_shard("b-00000", make_shard("b", 2, seed=2))
    return s


def test_geopandas_reads_footprints_dates_and_crs(store, tmp_path: Path) -> None:
    import geopandas as gpd
    from pyproj import CRS

    out = tmp_path / "pairs.parquet"
    assert export_geoparquet(store.root, out) == 5
    gdf = gpd.read_parquet(out)
    assert gdf.crs is not None and gdf.crs.equals(CRS("OGC:CRS84"))
    assert gdf.geometry.name == "geometry" and list(gdf["pair_id"]) == ["a_0", "a_1", "a_2", "b_0", "b_1"]
    assert gdf.geometry.iloc[1].bounds == pytest.approx((11.0, 50.0, 11.5, 50.5))
    assert gdf.total_bounds == pytest.approx((10.0, 50.0, 12.5, 50.5))
    assert str(gdf["date_before"].iloc[0]) == "2016-04-18" and str(gdf["date_after"].iloc[0]) == "2019-05-02"
    assert list(gdf["captions"].iloc[0]) == ["road 0 built", "no change"]
    assert gdf["caption"].iloc[0] == "road 0 built" and gdf["source"].iloc[0] == "synthetic"
    assert "embedding" not in gdf and "score" not in gdf
    geo = json.loads(pq.read_schema(out).metadata[b"geo"])
    assert geo["version"].startswith("1.") and geo["columns"]["geometry"]["encoding"] == "WKB"


def test_duckdb_queries_the_file_by_bbox_and_wkb(store, tmp_path: Path) -> None:
    import duckdb
    import shapely

    out = tmp_path / "pairs.parquet"
    export_geoparquet(store, out, embeddings=True)
    con = duckdb.connect()
    rows = con.execute(
        "SELECT pair_id, geometry, date_after, len(embedding) FROM read_parquet(?) "
        "WHERE bbox.xmin >= 10.9 AND bbox.xmax <= 11.6 ORDER BY pair_id", [str(out)]
    ).fetchall()
    assert [r[0] for r in rows] == ["a_1", "b_1"]
    assert shapely.from_wkb(bytes(rows[0][1])).bounds == pytest.approx((11.0, 50.0, 11.5, 50.5))
    assert str(rows[0][2]) == "2019-05-02" and rows[0][3] == DIM
    emb = np.array(con.execute("SELECT embedding FROM read_parquet(?) WHERE pair_id = 'a_2'",
                               [str(out)]).fetchone()[0], dtype=np.float32)
    assert emb == pytest.approx(store.pair_embeddings()[2], abs=1e-6)


def test_duckdb_spatial_extension_where_it_loads(store, tmp_path: Path) -> None:
    """DuckDB's own GeoParquet reader (spatial extension) where one is installed for this DuckDB;
    no extension is downloaded here."""
    import duckdb

    out = tmp_path / "pairs.parquet"
    export_geoparquet(store, out)
    con = duckdb.connect(config={"autoinstall_known_extensions": "false"})
    try:
        con.execute("LOAD spatial")
    except duckdb.Error as err:
        pytest.skip(f"no DuckDB spatial extension for this DuckDB version: {err}")
    n = con.execute("SELECT count(*) FROM read_parquet(?) WHERE ST_Intersects(geometry, "
                    "ST_MakeEnvelope(10.9, 50.1, 11.2, 50.2))", [str(out)]).fetchone()[0]
    assert n == 1


def test_selection_keeps_rank_order_and_scores(store, tmp_path: Path) -> None:
    import geopandas as gpd

    out = tmp_path / "hits.parquet"
    n = export_geoparquet(store, out, selection=Selection(["b_1", "a_0"], [0.9, 0.4], "new road"),
                          embeddings=True)
    gdf = gpd.read_parquet(out)
    assert n == 2 and list(gdf["pair_id"]) == ["b_1", "a_0"] and list(gdf["rank"]) == [1, 2]
    assert list(gdf["score"]) == pytest.approx([0.9, 0.4])
    assert np.asarray(gdf["embedding"].iloc[0]) == pytest.approx(store.pair_embeddings()[4], abs=1e-6)
    assert json.loads(pq.read_schema(out).metadata[b"textitsr"])["query"] == "new road"


def test_output_rules(store, tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="inside the store"):
        export_geoparquet(store, store.root / "x.parquet")
    with pytest.raises(OutputError, match="ending in .parquet"):
        export_geoparquet(store, tmp_path / "x.csv")
    other = tmp_path / "other.parquet"
    pq.write_table(pq.read_table(store.root / "shards" / "a-00000" / "metadata.parquet"), other)
    before = other.read_bytes()
    with pytest.raises(OutputError, match="not a GeoParquet export textitsr wrote"):
        export_geoparquet(store, other)
    assert other.read_bytes() == before
    out = tmp_path / "pairs.parquet"
    export_geoparquet(store, out)
    assert export_geoparquet(store, out, selection=Selection(["a_1"], [0.5])) == 1  # its own export: replaced
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_cli_export_and_its_errors(store, tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "pairs.parquet"
    code, err = cli_main(monkeypatch, capsys, "export", store.root, out, "--embeddings")
    assert code == 0, err
    assert pq.read_metadata(out).num_rows == 5
    code, err = cli_main(monkeypatch, capsys, "export", tmp_path / "nothing", tmp_path / "y.parquet")
    assert code == 1 and err.startswith("error: ") and "store folder not found" in err
    assert err.count("\n") == 1


def test_app_download_rows_as_geoparquet(store) -> None:
    import io

    import geopandas as gpd

    data = rows_geoparquet(store.metadata().iloc[[3, 0]], scores=[0.7, 0.2], query="q")
    gdf = gpd.read_parquet(io.BytesIO(data))
    assert list(gdf["pair_id"]) == ["b_0", "a_0"] and list(gdf["rank"]) == [1, 2]
    assert gdf.geometry.iloc[0].bounds == pytest.approx((10.0, 50.0, 10.5, 50.5))


def test_cli_export_of_a_query(tiny_archive, tmp_path: Path, monkeypatch, capsys) -> None:
    import geopandas as gpd

    out = tmp_path / "hits.parquet"
    code, err = cli_main(monkeypatch, capsys, "export", tiny_archive.store, out, "--query",
                         "many new buildings were built", "-k", "4")
    assert code == 0, err
    gdf = gpd.read_parquet(out)
    assert list(gdf["rank"]) == [1, 2, 3, 4] and gdf["score"].is_monotonic_decreasing
    assert gdf.crs.to_string() == "OGC:CRS84" and gdf.geometry.notna().all()
