"""Every bad input of the reliability review is one clear line (CLI) or one InputError (library and
app) naming the file or field, instead of a traceback or a silently wrong result."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_main

from textitsr.errors import InputError


def write_scene(path: Path, seed: int, size: int = 256) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=3,
        dtype="uint8",
        crs="EPSG:32614",
        transform=from_origin(500000, 4000000, 10, 10),
    ) as dst:
        dst.write(np.random.default_rng(seed).integers(0, 255, (3, size, size), dtype=np.uint8))
    return path


@pytest.fixture
def truncated_series(tmp_path: Path) -> Path:
    """Two scenes of one place; the second cut in half (its header still reads fine)."""
    series = tmp_path / "series"
    series.mkdir()
    write_scene(series / "site_2001.tif", 1)
    cut = write_scene(series / "site_2002.tif", 2)
    with cut.open("r+b") as fh:
        fh.truncate(cut.stat().st_size // 2)
    return series


def one_line(code: int, err: str, *needles: str) -> str:
    """Exit 1 and exactly one error line, the last one (progress bars may come before it)."""
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert code == 1 and errors == lines[-1:] and "Traceback" not in err, err
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def test_truncated_geotiff_in_ingest_is_one_line(truncated_series, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "c.parquet"
    code, err = cli_main(monkeypatch, capsys, "ingest", truncated_series, "--out", out, "--tile-size", "64")
    one_line(code, err, "site_2002.tif", "truncated")
    assert not out.exists()


def test_truncated_geotiff_in_index_leaves_no_store(
    tiny_archive, truncated_series, tmp_path, monkeypatch, capsys
) -> None:
    (tmp_path / "mine").mkdir()  # an empty folder given by the user stays, empty
    for out in (tmp_path / "store", tmp_path / "mine"):
        code, err = cli_main(monkeypatch, capsys, "index", "--checkpoint", tiny_archive.checkpoint,
                             "--root", truncated_series, "--out", out, "--tile-size", "64")
        one_line(code, err, "site_2002.tif", "truncated")
    assert not (tmp_path / "store").exists()
    assert (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())


def test_truncated_geotiff_in_train_is_one_line(truncated_series, tmp_path, monkeypatch, capsys) -> None:
    code, err = cli_main(
        monkeypatch,
        capsys,
        "train",
        "--root",
        truncated_series,
        "--out",
        tmp_path / "m",
        "--epochs",
        "1",
        "--cache-dir",
        tmp_path / "cache",
    )
    one_line(code, err, "site_2002.tif")


@pytest.mark.parametrize("name", ["captions.csv", "captions.jsonl"])
def test_non_utf8_caption_files_are_named(tmp_path, name: str) -> None:
    from PIL import Image

    from textitsr.data.folder import FolderSource

    for side in ("before", "after"):
        (tmp_path / side).mkdir()
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / side / "a.png")
    text = (
        "filename,caption\na.png,caf\xe9 built\n"
        if name.endswith("csv")
        else '{"filename": "a.png", "captions": ["caf\xe9"]}\n'
    )
    (tmp_path / name).write_bytes(text.encode("latin-1"))
    with pytest.raises(InputError, match=rf"{name}: not UTF-8 text"):
        list(FolderSource(tmp_path).pairs())


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--max-nodata", "-1"], "max_nodata=-1.0"),
        (["--max-nodata", "nan"], "max_nodata=nan"),
        (["--split", "bogus"], "split 'bogus'"),
    ],
)
def test_out_of_range_options_are_refused(tmp_path, monkeypatch, capsys, args, needle) -> None:
    series = tmp_path / "series"
    series.mkdir()
    write_scene(series / "site_2001.tif", 1, size=64)
    write_scene(series / "site_2002.tif", 2, size=64)
    code, err = cli_main(
        monkeypatch, capsys, "ingest", series, "--out", tmp_path / "c.parquet", "--tile-size", "32", *args
    )
    one_line(code, err, needle)


def test_index_and_evaluate_refuse_an_unknown_split(tiny_archive, tmp_path, monkeypatch, capsys) -> None:
    code, err = cli_main(
        monkeypatch,
        capsys,
        "index",
        "--checkpoint",
        tiny_archive.checkpoint,
        "--root",
        tiny_archive.world,
        "--split",
        "bogus",
        "--out",
        tmp_path / "s",
    )
    one_line(code, err, "split 'bogus'")
    assert not (tmp_path / "s").exists()
    code, err = cli_main(
        monkeypatch,
        capsys,
        "evaluate",
        "--checkpoint",
        tiny_archive.checkpoint,
        "--root",
        tiny_archive.world,
        "--split",
        "bogus",
    )
    one_line(code, err, "split 'bogus'")


@pytest.mark.parametrize("value", ["-5", "0"])
def test_upload_limit_must_be_positive(value: str) -> None:
    from textitsr.app.config import load_config

    with pytest.raises(InputError, match=rf"TEXTITSR_MAX_UPLOAD_MB={value}"):
        load_config({"TEXTITSR_MAX_UPLOAD_MB": value})


def test_service_filters_refuse_a_string_of_sources_and_latitudes_past_the_poles(tiny_archive) -> None:
    from textitsr.service import SearchFilters, SearchService

    service = SearchService.open(tiny_archive.store)
    with pytest.raises(InputError, match="sources='synthetic': expected a list"):
        service.search_text("new buildings", filters=SearchFilters(sources="synthetic"))
    with pytest.raises(InputError, match=r"latitudes in \[-90, 90\]"):
        service.search_text("new buildings", filters=SearchFilters(bbox=(-98.0, 30.0, -97.0, 95.0)))
    with pytest.raises(InputError, match=r"longitudes in \[-180, 180\]"):
        service.catalog.footprints(SearchFilters(bbox=(-190.0, 30.0, -97.0, 31.0)))
    with pytest.raises(InputError, match="bbox"):
        service.search_text("new buildings", filters=SearchFilters(bbox=(float("nan"), 30.0, -97.0, 31.0)))
    hits = service.search_text("new buildings", k=3, filters=SearchFilters(sources=["synthetic"]))
    assert len(hits) == 3


def test_long_paths_and_symlink_loops_in_the_app_are_input_errors(tmp_path) -> None:
    from textitsr.app.uploads import check_scene_path

    roots = [tmp_path]
    with pytest.raises(InputError, match="at most"):
        check_scene_path("a" * 300 + ".tif", roots)
    with pytest.raises(InputError, match="no such file"):
        check_scene_path("/".join(["abcdefghij"] * 31) + ".tif", roots)  # 300+ chars, short names
    (tmp_path / "loop.tif").symlink_to(tmp_path / "loop.tif")
    with pytest.raises(InputError, match="loop.tif"):
        check_scene_path("loop.tif", roots)
    (tmp_path / "a.tif").symlink_to(tmp_path / "b.tif")
    (tmp_path / "b.tif").symlink_to(tmp_path / "a.tif")
    with pytest.raises(InputError, match="a.tif"):
        check_scene_path("a.tif", roots)


def test_truncated_upload_is_refused_by_reading_its_pixels(truncated_series) -> None:
    from textitsr.app.uploads import validate_upload

    good = (truncated_series / "site_2001.tif").read_bytes()
    assert validate_upload("site_2001.tif", good, 10 * 2**20)["width"] == 256
    cut = (truncated_series / "site_2002.tif").read_bytes()
    with pytest.raises(InputError, match="upload 'site_2002.tif': GDAL cannot read it"):
        validate_upload("site_2002.tif", cut, 10 * 2**20)


def test_checkpoint_files_are_readable_by_others_per_umask(tmp_path) -> None:
    from textitsr.atomic import DIR_MODE, FILE_MODE
    from textitsr.models.checkpoint import save_checkpoint
    from textitsr.models.textitsr import ModelConfig, TextITSR

    folder = save_checkpoint(TextITSR(ModelConfig(fusion="gff:before+after+diff")), tmp_path / "ckpt")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.iterdir()]}
    assert modes == {"ckpt": DIR_MODE, "config.json": FILE_MODE, "model.safetensors": FILE_MODE}
    assert FILE_MODE == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize(
    ("device", "needle"),
    [("bogus", "expected cpu, cuda or auto, got 'bogus'"), ("cuda", "CUDA is not available")],
)
def test_index_refuses_an_unusable_device_before_any_work(tmp_path, monkeypatch, capsys, device, needle):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA (tests/test_cuda.py builds there)")
    code, err = cli_main(monkeypatch, capsys, "index", "--checkpoint", tmp_path / "model", "--root",
                         tmp_path / "world", "--out", tmp_path / "s", "--device", device)
    one_line(code, err, needle)
    assert not (tmp_path / "s").exists()


# ------------------------------------------------------------------ limits and ranges
def write_sparse_scene(path: Path, size: int = 60000) -> Path:
    """A GeoTIFF declaring size x size pixels with no block written: a few hundred KB on disk."""
    import rasterio
    from rasterio.transform import from_origin

    with rasterio.open(
        path, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint8", crs="EPSG:32614",
        transform=from_origin(500000, 4000000, 10, 10), tiled=True, blockxsize=512, blockysize=512,
        compress="deflate", sparse_ok=True,
    ):
        pass
    return path


def test_a_sparse_huge_geotiff_is_refused_by_its_declared_size(tmp_path, monkeypatch, capsys) -> None:
    import time

    from textitsr.app.uploads import validate_upload
    from textitsr.config import MAX_SCENE_PIXELS

    series = tmp_path / "huge"
    series.mkdir()
    first = write_sparse_scene(series / "site_2001.tif")
    write_sparse_scene(series / "site_2002.tif")
    assert first.stat().st_size < 2**20  # small on disk, 3.6 billion pixels declared
    started = time.perf_counter()
    expected = rf"site_2001.tif.*60000 x 60000.*over the limit of {MAX_SCENE_PIXELS:,}"
    with pytest.raises(InputError, match=expected):
        validate_upload("site_2001.tif", first.read_bytes(), max_bytes=2**30)
    code, err = cli_main(monkeypatch, capsys, "ingest", series, "--out", tmp_path / "c.parquet")
    one_line(code, err, "site_2001.tif", "60000 x 60000", "over the limit")
    assert time.perf_counter() - started < 20
    assert not (tmp_path / "c.parquet").exists()
    from textitsr.data.imageio import read_raw  # image tiles of folder/LEVIR-CC datasets: same limit

    with pytest.raises(InputError, match="site_2001.tif: declares 60000 x 60000"):
        read_raw(first)


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('{"kind": "label"}', "`a` and `b`"),
        ('{"kind": "label", "a": 1, "b": "x", "label": "similar"}', "`a` and `b`"),
        ('{"kind": "batch", "round": "two", "pairs": []}', "`round`"),
        ('{"kind": "batch", "round": 1, "pairs": [["a"]]}', "`pairs`"),
        ('{"kind": "update", "round": 1, "n_labels": 4, "metrics": {"mR": "high"}}', "`metrics`"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        (b"\xff\xfe not text", "not UTF-8"),
    ],
)
def test_a_damaged_annotation_log_names_its_file_and_line(tmp_path, line, needle) -> None:
    from textitsr.active.annotations import AnnotationLog

    log = AnnotationLog(tmp_path)
    log.propose([("a", "b")], "mgue")
    raw = line if isinstance(line, bytes) else line.encode()
    with log.path.open("ab") as fh:
        fh.write(raw + b"\n")
    with pytest.raises(InputError, match="annotations.jsonl:2: ") as info:
        log.pending()
    assert needle in str(info.value)


def test_an_oversized_annotation_log_is_refused(tmp_path, monkeypatch) -> None:
    import textitsr.active.annotations as annotations

    log = annotations.AnnotationLog(tmp_path)
    log.propose([("a", "b")], "mgue")
    monkeypatch.setattr(annotations, "MAX_ANNOTATION_LOG_BYTES", 16)
    with pytest.raises(InputError, match="annotations.jsonl: .* over the .* limit for an annotation log"):
        log.records()


@pytest.mark.parametrize(
    "args",
    [
        ["annotate", "--store", "nowhere", "--out", "ws", "--rounds", "-3"],
        ["annotate", "--store", "nowhere", "--out", "ws", "--batch", "0"],
        ["annotate", "--store", "nowhere", "--out", "ws", "--budget", "0"],
        ["train", "--root", "nowhere", "--out", "ckpt", "--epochs", "0"],
        ["train", "--root", "nowhere", "--out", "ckpt", "--lr", "-1"],
        ["index", "--checkpoint", "c", "--root", "r", "--out", "s", "--shard-size", "0"],
        ["index", "--checkpoint", "c", "--root", "r", "--out", "s", "--archive-change-weight", "-1"],
        ["api", "--store", "nowhere", "--port", "70000"],
        ["serve", "--store", "nowhere", "--port", "0"],
    ],
)
def test_options_out_of_range_are_refused_before_any_work(tmp_path, monkeypatch, capsys, args) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = cli_main(monkeypatch, capsys, *args)
    option = args[-2]
    assert code == 2 and "Traceback" not in err, err
    assert f"Invalid value for '{option}'" in err and ("greater than" in err or "less than" in err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, nothing loaded


def test_simulated_rounds_ask_only_pairs_with_a_change_type(tiny_archive, tmp_path) -> None:
    """A store of a synthetic world plus scenes without ground truth (the demo store holds both):
    the simulated analyst is never asked about a pair it cannot judge, round after round."""
    import shutil

    import pyarrow.parquet as pq

    from textitsr.active.anneal import SelectionConfig
    from textitsr.active.oracle import SimulatedOracle
    from textitsr.active.rounds import AnnealSession, simulated_rounds

    store = tmp_path / "store"
    shutil.copytree(tiny_archive.store, store)
    unknown: set[str] = set()
    for meta in sorted(store.glob("shards/*/metadata.parquet")):
        table = pq.read_table(meta)
        ids = table.column("pair_id").to_pylist()
        types = table.column("change_type").to_pylist()
        types = [None if i % 3 else t for i, t in enumerate(types)]  # two thirds without ground truth
        unknown.update(pid for pid, t in zip(ids, types, strict=True) if t is None)
        column = table.schema.get_field_index("change_type")
        table = table.set_column(column, table.schema.field(column), [types])
        pq.write_table(table, meta)
    session = AnnealSession(store, tmp_path / "ws", selection=SelectionConfig(batch=3))
    oracle = SimulatedOracle(dict(zip(session.ids, session.change_types, strict=True)))
    rows = simulated_rounds(session, oracle, rounds=6, update=False)
    assert [r["round"] for r in rows] == [1, 2, 3, 4, 5, 6]
    asked = [a for a in session.log.annotations()]
    assert len(asked) == 18 and all(a.label != "skip" for a in asked)
    assert not {x for a in asked for x in (a.a, a.b)} & unknown
