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
