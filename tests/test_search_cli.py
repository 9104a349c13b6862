"""`textitsr index` and `textitsr search` as a person or a script would run them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from textitsr import cli

runner = CliRunner()


def run_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str
) -> tuple[int, str, str]:
    """Run the real entry point (library errors -> one line + exit 1)."""
    monkeypatch.setattr(sys, "argv", ["textitsr", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_search_json_lists_ranked_hits(tiny_archive) -> None:
    result = runner.invoke(
        cli.app,
        ["search", "new buildings along the road", "--store", str(tiny_archive.store), "-k", "4", "--json"],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    assert set(rows[0]) == {"rank", "score", "pair_id", "bounds", "dates", "source"}
    assert rows[0]["score"] >= rows[-1]["score"] and len(rows[0]["bounds"]) == 4
    assert rows[0]["source"] == "synthetic" and len(rows[0]["dates"]) == 2


def test_search_prints_a_table(tiny_archive) -> None:
    result = runner.invoke(
        cli.app,
        ["search", "a pond dries up", "--store", str(tiny_archive.store), "-k", "3"],
        env={"COLUMNS": "160"},
    )
    assert result.exit_code == 0, result.output
    for header in ("rank", "score", "pair id", "place (lon, lat)", "dates"):
        assert header in result.stdout
    assert "-97." in result.stdout and " -> 20" in result.stdout  # lon/lat centre and the two dates


def test_bad_input_is_one_line_and_exit_1(tiny_archive, monkeypatch, capsys) -> None:
    code, out, err = run_main(monkeypatch, capsys, "search", "   ", "--store", str(tiny_archive.store))
    assert code == 1 and err.startswith("error: query") and len(err.strip().splitlines()) == 1
    code, _, err = run_main(
        monkeypatch, capsys, "search", "road", "--store", str(tiny_archive.store), "-k", "0"
    )
    assert code == 1 and "k=0" in err
    code, _, err = run_main(monkeypatch, capsys, "search", "road", "--store", "/nonexistent/store")
    assert code == 1 and "/nonexistent/store" in err


def test_index_command_builds_a_searchable_store(tiny_archive, tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "store"
    args = [
        "index",
        "--checkpoint",
        str(tiny_archive.checkpoint),
        "--source",
        "synthetic",
        "--root",
        str(tiny_archive.world),
        "--out",
        str(out),
        "--split",
        "val",
        "--shard-size",
        "5",
    ]
    code, stdout, err = run_main(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "8 pairs in 2 shard(s)" in stdout
    result = runner.invoke(cli.app, ["search", "road", "--store", str(out), "-k", "50", "--json"])
    rows = json.loads(result.stdout)
    assert len(rows) == 8 and {r["pair_id"][:3] for r in rows} == {"val"}
    missing = [str(tmp_path / "missing") if a == str(tiny_archive.world) else a for a in args[:-4]]
    code, _, err = run_main(monkeypatch, capsys, *missing)
    assert code == 1 and "missing" in err


def test_index_command_takes_the_same_source_options_as_ingest(
    tiny_archive, tmp_path: Path, monkeypatch, capsys
) -> None:
    """A GeoTIFF scene pair indexed with a chosen tile size gives one pair per full tile, georeferenced."""
    import rasterio

    scenes = tiny_archive.world / "scenes" / "test"
    with rasterio.open(scenes / "before.tif") as ds:
        expected = (ds.width // 32) * (ds.height // 32)
    out = tmp_path / "scene-store"
    code, stdout, err = run_main(
        monkeypatch, capsys, "index", "--checkpoint", str(tiny_archive.checkpoint), "--source", "geotiff",
        "--root", str(scenes / "before.tif"), "--root", str(scenes / "after.tif"), "--out", str(out),
        "--tile-size", "32", "--band-names", "red,green,blue,nir",
    )
    assert code == 0, err
    assert f"{expected} pairs" in stdout
    result = runner.invoke(cli.app, ["search", "road", "--store", str(out), "-k", "3", "--json"])
    rows = json.loads(result.stdout)
    assert len(rows) == 3 and all(r["bounds"] is not None for r in rows)
