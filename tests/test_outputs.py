"""Outputs are never destructive: only new, empty or textitsr-written folders are written, and an
output may not be (or lie inside) an input. Each case once deleted or overwrote a user's files."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import cli_main

from textitsr.atomic import atomic_dir, atomic_write_text
from textitsr.errors import InputError
from textitsr.outputs import (
    ANNEAL_WORKSPACE,
    CHECKPOINT,
    STORE,
    WORLD,
    check_output_dir,
    check_output_file,
    recognise,
)


def notes(folder: Path) -> Path:
    """A user's folder that is not textitsr's."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("my field notes")
    return folder


def one_error_line(code: int, err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_train_refuses_a_folder_of_notes_and_keeps_it(tiny_archive, tmp_path, monkeypatch, capsys) -> None:
    out = notes(tmp_path / "notes")
    code, err = cli_main(
        monkeypatch, capsys, "train", "--root", tiny_archive.world, "--out", out, "--epochs", "1"
    )
    one_error_line(code, err, str(out), "did not write")
    assert (out / "notes.txt").read_text() == "my field notes"


@pytest.mark.parametrize("where", ["same", "inside", "holding"])
def test_train_out_may_not_overlap_the_dataset(tiny_archive, tmp_path, monkeypatch, capsys, where) -> None:
    world = tiny_archive.world
    out = {"same": world, "inside": world / "model", "holding": world.parent}[where]
    before = sorted(p.name for p in world.iterdir())
    code, err = cli_main(monkeypatch, capsys, "train", "--root", world, "--out", out, "--epochs", "1")
    one_error_line(code, err, "overlaps the input")
    assert sorted(p.name for p in world.iterdir()) == before


def test_index_refuses_notes_and_a_store_inside_the_data(tiny_archive, tmp_path, monkeypatch, capsys) -> None:
    out = notes(tmp_path / "notes")
    args = ("index", "--checkpoint", tiny_archive.checkpoint, "--root", tiny_archive.world)
    code, err = cli_main(monkeypatch, capsys, *args, "--out", out)
    one_error_line(code, err, "not a store")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    code, err = cli_main(monkeypatch, capsys, *args, "--out", tiny_archive.world / "store")
    one_error_line(code, err, "overlaps the input")
    assert not (tiny_archive.world / "store").exists()


def test_ingest_out_that_is_a_folder_or_under_a_file_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    series = Path(__file__).parent  # never read: the output is checked first
    code, err = cli_main(monkeypatch, capsys, "ingest", series, "--out", tmp_path)
    one_error_line(code, err, "is a folder")
    (tmp_path / "file.txt").write_text("x")
    code, err = cli_main(monkeypatch, capsys, "ingest", series, "--out", tmp_path / "file.txt" / "c.parquet")
    one_error_line(code, err, "is a file")


def test_demo_data_refuses_notes(tmp_path, monkeypatch, capsys) -> None:
    out = notes(tmp_path / "notes")
    code, err = cli_main(monkeypatch, capsys, "demo-data", "--out", out, "--train-pairs", "2")
    one_error_line(code, err, "refusing")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_annotate_workspace_must_be_new_empty_or_a_workspace(
    tiny_archive, tmp_path, monkeypatch, capsys
) -> None:
    out = notes(tmp_path / "notes")
    code, err = cli_main(
        monkeypatch, capsys, "annotate", "--store", tiny_archive.store, "--out", out, "--no-update"
    )
    one_error_line(code, err, "ANNEAL workspace")
    code, err = cli_main(
        monkeypatch,
        capsys,
        "annotate",
        "--store",
        tiny_archive.store,
        "--out",
        tiny_archive.store / "ws",
        "--no-update",
    )
    one_error_line(code, err, "overlaps the input")


def test_atomic_dir_never_replaces_a_folder_it_did_not_write(tmp_path) -> None:
    out = notes(tmp_path / "x")
    with pytest.raises(InputError, match="not a folder textitsr wrote"), atomic_dir(out) as tmp:
        (tmp / "new").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]  # no temp folder left either
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    (tmp_path / "f").write_text("a file")
    with pytest.raises(InputError, match="not a folder"), atomic_dir(tmp_path / "f"):
        pass
    with pytest.raises(InputError, match="is a folder"):
        atomic_write_text(out, "text")


def test_save_checkpoint_into_a_foreign_folder_is_refused(tmp_path) -> None:
    from textitsr.models.checkpoint import save_checkpoint
    from textitsr.models.textitsr import ModelConfig, TextITSR

    out = notes(tmp_path / "ckpt")
    with pytest.raises(InputError, match="not a folder textitsr wrote"):
        save_checkpoint(TextITSR(ModelConfig(fusion="gff:before+after+diff")), out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_recognised_outputs(tiny_archive, tmp_path) -> None:
    assert recognise(tiny_archive.store) is STORE
    assert recognise(tiny_archive.checkpoint) is CHECKPOINT
    assert recognise(tiny_archive.world) is WORLD
    assert recognise(notes(tmp_path / "n")) is None
    assert recognise(tmp_path / "missing") is None
    ws = tmp_path / "ws"
    (ws / "checkpoints").mkdir(parents=True)
    (ws / "annotations.jsonl").write_text("")
    assert recognise(ws) is ANNEAL_WORKSPACE
    (ws / "thesis.docx").write_text("")
    assert recognise(ws) is None  # a workspace holds only what the tool writes there
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "manifest.json").write_text('{"format": "something else"}')
    assert recognise(fake) is None


def test_new_empty_and_own_folders_are_accepted(tiny_archive, tmp_path) -> None:
    assert check_output_dir(tmp_path / "new" / "deeper", (STORE,)) == tmp_path / "new" / "deeper"
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty", (STORE,))
    check_output_dir(tiny_archive.store, (STORE,), inputs=[tiny_archive.world])
    with pytest.raises(InputError, match="not a checkpoint"):
        check_output_dir(tiny_archive.store, (CHECKPOINT,))
    assert check_output_file(tmp_path / "c.parquet") == tmp_path / "c.parquet"
    with pytest.raises(InputError, match="also an input"):
        check_output_file(tmp_path / "c.parquet", inputs=[tmp_path / "c.parquet"])


# ------------------------------------------------------------------ one rule for every output
def write_geotiff(path: Path, size: int = 64, seed: int = 1) -> Path:
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32614",
                   transform=from_origin(500000, 4000000, 10, 10))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.random.default_rng(seed).integers(0, 255, (3, size, size), dtype=np.uint8))
    return path


@pytest.fixture
def series(tmp_path: Path) -> Path:
    folder = tmp_path / "series"
    folder.mkdir()
    write_geotiff(folder / "site_2001.tif", seed=1)
    write_geotiff(folder / "site_2002.tif", seed=2)
    return folder


def test_ingest_refuses_to_overwrite_a_geotiff_or_another_file(series, tmp_path, monkeypatch, capsys) -> None:
    scene = write_geotiff(tmp_path / "SCENE.tif", seed=3)
    before = scene.read_bytes()
    code, err = cli_main(monkeypatch, capsys, "ingest", series, "--out", scene, "--tile-size", "32")
    one_error_line(code, err, str(scene), "not a pair catalogue", "TIFF")
    assert scene.read_bytes() == before
    # the extension does not matter: a GeoTIFF named .parquet is refused too, by its content
    disguised = tmp_path / "scene.parquet"
    disguised.write_bytes(before)
    code, err = cli_main(monkeypatch, capsys, "ingest", series, "--out", disguised, "--tile-size", "32")
    one_error_line(code, err, "not a pair catalogue")
    assert disguised.read_bytes() == before
    inside = series / "c.parquet"
    code, err = cli_main(monkeypatch, capsys, "ingest", series, "--out", inside, "--tile-size", "32")
    one_error_line(code, err, "lies inside the input")
    assert not inside.exists()
    # a catalogue textitsr wrote is rewritten
    out = tmp_path / "c.parquet"
    for _ in range(2):
        code, err = cli_main(monkeypatch, capsys, "ingest", series, "--out", out, "--tile-size", "32")
        assert code == 0, err
    import pyarrow.parquet as pq

    assert pq.read_schema(out).metadata[b"textitsr"] == b"pair-catalog"
    other = tmp_path / "other.parquet"
    pq.write_table(pq.read_table(out).select(["pair_id"]).replace_schema_metadata(None), other)
    code, err = cli_main(monkeypatch, capsys, "ingest", series, "--out", other, "--tile-size", "32")
    one_error_line(code, err, "not a pair catalogue", "another Parquet file")


@pytest.mark.parametrize("entry", [".git", ".env", "run.lock", ".out.lock"])
def test_a_folder_holding_only_hidden_or_lock_files_is_not_empty(
    tmp_path, monkeypatch, capsys, entry
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    if entry == ".git":
        (out / entry).mkdir()
        (out / entry / "HEAD").write_text("ref: refs/heads/main\n")
    else:
        (out / entry).write_text("SECRET=1\n")
    listing = sorted(p.name for p in out.iterdir())
    code, err = cli_main(monkeypatch, capsys, "demo-data", "--out", out, "--train-pairs", "2")
    one_error_line(code, err, str(out), "did not write")
    code, err = cli_main(monkeypatch, capsys, "train", "--root", tmp_path / "data", "--out", out)
    one_error_line(code, err, str(out), "did not write")
    code, err = cli_main(monkeypatch, capsys, "annotate", "--store", tmp_path / "store", "--out", out)
    one_error_line(code, err, str(out), "did not write")
    code, err = cli_main(
        monkeypatch, capsys, "make-training-data", "--out", out, "--shared", tmp_path / "shared"
    )
    one_error_line(code, err, str(out), "did not write")
    assert sorted(p.name for p in out.iterdir()) == listing


def test_make_training_data_refuses_a_dataset_with_images_and_any_path_in_shared(
    tmp_path, monkeypatch, capsys
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "levircc-captions.json").write_text('{"images": []}')
    dataset = tmp_path / "LEVIR-CC"
    (dataset / "images" / "train" / "A").mkdir(parents=True)
    (dataset / "images" / "train" / "A" / "train_1.png").write_bytes(b"\x89PNG")
    captions = dataset / "LevirCCcaptions.json"
    captions.write_text('{"images": ["the user\'s captions"]}')
    code, err = cli_main(monkeypatch, capsys, "make-training-data", "--out", dataset, "--shared", shared)
    one_error_line(code, err, str(dataset), "did not write")
    assert captions.read_text() == '{"images": ["the user\'s captions"]}'
    code, err = cli_main(
        monkeypatch, capsys, "make-training-data", "--out", shared / "generated", "--shared", shared
    )
    one_error_line(code, err, "overlaps the input")
    assert sorted(p.name for p in shared.iterdir()) == ["levircc-captions.json"]


def test_an_interrupted_training_data_folder_is_recognised(tmp_path) -> None:
    from textitsr.outputs import check_training_data_out

    out = tmp_path / "data"
    (out / "images" / "synth").mkdir(parents=True)
    (out / "images" / "synth" / "part.json").write_text('{"fingerprint": "x", "records": []}')
    (out / "images" / ".realpairs.abc123.tmp").mkdir()  # the part being written when it was killed
    assert check_training_data_out(out, tmp_path / "shared") == out
    (out / "images" / "train").mkdir()  # a LEVIR-CC split: not a part this tool writes
    with pytest.raises(InputError, match="did not write"):
        check_training_data_out(out, tmp_path / "shared")


def test_retraining_into_a_checkpoint_keeps_the_users_files(tmp_path) -> None:
    from textitsr.models.checkpoint import load_checkpoint, save_checkpoint
    from textitsr.models.textitsr import ModelConfig, TextITSR

    folder = tmp_path / "ckpt"
    model = TextITSR(ModelConfig(fusion="gff:before+after+diff"))
    save_checkpoint(model, folder)
    (folder / "results.csv").write_text("epoch,mR\n1,42\n")
    (folder / "plots").mkdir()
    (folder / "plots" / "loss.png").write_bytes(b"\x89PNG plot")
    (folder / ".git").mkdir()
    import torch

    with torch.no_grad():
        model.logit_scale.fill_(1.0)
    save_checkpoint(model, folder, extra={"epochs": 2})
    assert (folder / "results.csv").read_text() == "epoch,mR\n1,42\n"
    assert (folder / "plots" / "loss.png").read_bytes() == b"\x89PNG plot"
    assert (folder / ".git").is_dir()
    assert load_checkpoint(folder).logit_scale.item() == pytest.approx(1.0)


def test_train_default_refuses_a_users_folder_before_any_work(tmp_path, monkeypatch, capsys) -> None:
    import textitsr.training.default_model as default_model

    def no_work(*args, **kwargs):
        raise AssertionError("training data generated before the output was checked")

    monkeypatch.setattr(default_model, "make_training_data", no_work)
    out = notes(tmp_path / "mine")
    args = ("--shared", tmp_path / "shared", "--data-dir", tmp_path / "cache" / "realtrain")
    code, err = cli_main(monkeypatch, capsys, "train-default", "--out", out, *args)
    one_error_line(code, err, str(out), "did not write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    # the generated data folder is checked up front too
    data = notes(tmp_path / "cache" / "realtrain")
    code, err = cli_main(monkeypatch, capsys, "train-default", "--out", tmp_path / "new", *args)
    one_error_line(code, err, str(data), "did not write")


def test_train_out_holding_only_a_foreign_last_folder_is_refused_up_front(
    tmp_path, monkeypatch, capsys
) -> None:
    from textitsr.outputs import TRAINING_OUT, check_checkpoint_out

    out = tmp_path / "out"
    notes(out / "last")
    code, err = cli_main(monkeypatch, capsys, "train", "--root", tmp_path / "data", "--out", out)
    one_error_line(code, err, str(out), "did not write")
    assert sorted(p.name for p in out.rglob("*")) == ["last", "notes.txt"]
    # a `last/` that is a training state (a run killed before its first checkpoint) is resumed
    (out / "last" / "notes.txt").unlink()
    (out / "last" / "state.json").write_text('{"state": {"epoch": 1}, "model_config": {}}')
    assert recognise(out, (TRAINING_OUT,)) is TRAINING_OUT
    assert check_checkpoint_out(out) == out
