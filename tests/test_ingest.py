"""`textitsr ingest` and the pieces behind it: source detection, opening, the Parquet catalogue."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import shared_path
from typer.testing import CliRunner

from textitsr.cli import app
from textitsr.data.catalog import write_catalog
from textitsr.data.registry import SOURCE_KINDS, detect_kind, open_source
from textitsr.errors import InputError


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "textitsr.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_ingest_naip_series_bounds(tmp_path):
    """The 'done when' check: the NAIP series becomes pairs with correct lon/lat bounds."""
    naip = shared_path("geo", "naip")
    out = tmp_path / "naip.parquet"
    res = run_cli("ingest", str(naip), "--out", str(out), "--pairing", "0,9")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines() == [f"ingested 12 pairs from geotiff source {naip} -> {out}"]
    t = pq.read_table(out).to_pandas()
    assert len(t) == 12 and set(t["source"]) == {"geotiff"} and set(t["crs"]) == {"EPSG:26914"}
    assert set(t["date_before"]) == {"2009-08-18"} and set(t["date_after"]) == {"2020-08-31"}
    assert t["west"].between(-99.19, -99.12).all() and t["east"].between(-99.19, -99.12).all()
    assert t["south"].between(47.00, 47.04).all() and t["north"].between(47.00, 47.04).all()
    assert (t["west"] < t["east"]).all() and (t["south"] < t["north"]).all()
    assert (t["n_captions"] == 0).all() and t["split"].isna().all()
    assert t["pair_id"].iloc[0] == "m_4709963_se_14_1_20090818_20200831_r0_c0"


def test_ingest_levircc_mini_with_cli_runner(tmp_path):
    out = tmp_path / "l.parquet"
    res = CliRunner().invoke(app, ["ingest", str(shared_path("levircc-mini")), "--out", str(out)])
    assert res.exit_code == 0, res.output
    t = pq.read_table(out).to_pandas()
    assert list(t["pair_id"]) == ["levircc_train_000016", "levircc_train_000051", "levircc_train_000054"]
    assert (t["split"] == "train").all() and (t["n_captions"] == 5).all() and t["changed"].all()
    assert t["west"].isna().all() and len(t["captions"].iloc[0]) == 5


def test_ingest_landsat_false_colour_options(tmp_path):
    out = tmp_path / "ls.parquet"
    files = sorted(shared_path("geo", "landsat").glob("*.tif"))[:2]
    res = CliRunner().invoke(
        app,
        [
            "ingest",
            *map(str, files),
            "--out",
            str(out),
            "--band-names",
            "swir1,nir,red,green",
            "--tile-size",
            "128",
            "--kind",
            "geotiff",
        ],
    )
    assert res.exit_code == 0, res.output
    t = pq.read_table(out).to_pandas()
    assert len(t) == 18 and set(t["bands"]) == {"swir1,nir,red,green"} and set(t["crs"]) == {"EPSG:4326"}
    assert t["west"].min() >= -74.7226 and t["east"].max() <= -74.1589


@pytest.mark.parametrize("case", ["missing", "corrupt"])
def test_ingest_bad_input_prints_one_line(tmp_path, case):
    if case == "missing":
        target = tmp_path / "nowhere"
    else:
        target = tmp_path / "series"
        target.mkdir()
        (target / "a_2001.tif").write_bytes(b"garbage")
        (target / "b_2002.tif").write_bytes(b"garbage")
    out = tmp_path / "x.parquet"
    res = run_cli("ingest", str(target), "--out", str(out))
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(target) in lines[0]
    assert not out.exists()


def test_detect_kind_and_open_source(tmp_path):
    assert detect_kind(shared_path("levircc-mini")) == "levircc"
    assert detect_kind(shared_path("geo", "naip")) == "geotiff"
    assert detect_kind([shared_path("geo", "naip")]) == "geotiff"
    assert detect_kind(sorted(shared_path("geo", "landsat").glob("*.tif"))[:2]) == "geotiff"
    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "world.json").write_text("{}")
    assert detect_kind(tmp_path / "world") == "synthetic"
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "notes.txt").write_text("hi")
    with pytest.raises(InputError, match="odd: unknown layout"):
        detect_kind(tmp_path / "odd")
    with pytest.raises(InputError, match="source kind 'zarr'"):
        open_source(tmp_path / "odd", kind="zarr")
    src = open_source(shared_path("levircc-mini"))
    assert src.name == "levircc" and len(src) == 3
    assert "synthetic" in SOURCE_KINDS


def test_write_catalog_is_atomic_and_refuses_empty(tmp_path):
    src = open_source(shared_path("levircc-mini"))
    out = tmp_path / "cat.parquet"
    assert write_catalog(src, out) == 3
    before = out.read_bytes()
    with pytest.raises(InputError, match="no pairs for split 'test'"):
        write_catalog(src, out, split="test")
    assert out.read_bytes() == before  # a failed run leaves the old catalogue intact
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert np.isnan(pq.read_table(out).to_pandas()["west"]).all()
