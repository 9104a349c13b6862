"""`textitsr train` then `textitsr evaluate --json` on a tiny synthetic world (tiny HF backbones)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import small_world
from typer.testing import CliRunner

from textitsr.cli import app
from textitsr.errors import CheckpointError


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_world(tmp_path_factory.mktemp("cli") / "world", n_train=12, n_val=4, n_test=6)


@pytest.mark.slow
def test_train_then_evaluate_json(world: Path, tmp_path: Path, tiny_hf_models) -> None:
    runner = CliRunner()
    ckpt, cache = tmp_path / "ckpt", tmp_path / "cache"
    result = runner.invoke(
        app,
        [
            "train",
            "--source",
            "synthetic",
            "--root",
            str(world),
            "--fusion",
            "gff:after+diff",
            "--out",
            str(ckpt),
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--device",
            "cpu",
            "--seed",
            "1",
            "--cache-dir",
            str(cache),
            "--image-encoder",
            str(tiny_hf_models.vit),
            "--text-encoder",
            str(tiny_hf_models.bert),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "best val mR" in result.output and (ckpt / "model.safetensors").is_file()

    result = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(ckpt),
            "--source",
            "synthetic",
            "--root",
            str(world),
            "--split",
            "test",
            "--json",
            "--device",
            "cpu",
            "--cache-dir",
            str(cache),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)  # exactly one JSON object on stdout
    for direction in ("text_to_pair", "pair_to_text"):
        assert set(metrics[direction]) == {"r1", "r5", "r10"}
        assert all(0.0 <= v <= 100.0 for v in metrics[direction].values())
        assert metrics[direction]["r1"] <= metrics[direction]["r5"] <= metrics[direction]["r10"]
    recalls = [*metrics["text_to_pair"].values(), *metrics["pair_to_text"].values()]
    assert metrics["mR"] == pytest.approx(sum(recalls) / 6)
    assert metrics["n_pairs"] == 6  # the whole test split is the gallery
    n_change = sum(
        1
        for r in json.loads((world / "world.json").read_text())["pairs"]
        if r["split"] == "test" and r["changed"]
    )
    assert metrics["n_queries"] == 5 * n_change  # every caption of every change pair
    assert set(metrics["map"]) == {"text_to_pair", "pair_to_pair"}  # change-type labels: synthetic
    assert 0.0 < metrics["map"]["text_to_pair"] <= 100.0
    assert "no_change" in metrics

    # Without --json: a readable report.
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(ckpt),
            "--source",
            "synthetic",
            "--root",
            str(world),
            "--device",
            "cpu",
            "--cache-dir",
            str(cache),
        ],
    )
    assert result.exit_code == 0 and "text->pair" in result.stdout and "mR" in result.stdout


def test_evaluate_missing_checkpoint_is_a_clear_error(world: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(tmp_path / "nope"),
            "--root",
            str(world),
            "--source",
            "synthetic",
            "--json",
        ],
    )
    assert isinstance(result.exception, CheckpointError)  # main() turns it into one line + exit 1
    assert "nope" in str(result.exception)


@pytest.mark.slow
def test_same_commands_on_the_official_levircc_layout(world: Path, tmp_path: Path, tiny_hf_models) -> None:
    """`--source levircc --root PATH` trains and evaluates on the official layout (the world's export)."""
    runner = CliRunner()
    root, ckpt, cache = world / "levircc", tmp_path / "ckpt", tmp_path / "cache"
    common = ["--source", "levircc", "--root", str(root), "--device", "cpu", "--cache-dir", str(cache)]
    result = runner.invoke(
        app,
        ["train", *common, "--fusion", "gff:before+after+diff", "--out", str(ckpt), "--epochs", "1",
         "--batch-size", "4", "--image-encoder", str(tiny_hf_models.vit),
         "--text-encoder", str(tiny_hf_models.bert)],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", "--checkpoint", str(ckpt), *common, "--split", "test", "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    images = json.loads((root / "LevirCCcaptions.json").read_text())["images"]
    test = [im for im in images if im["split"] == "test"]
    assert metrics["n_pairs"] == len(test) == 6
    assert metrics["n_queries"] == 5 * sum(im["changeflag"] for im in test)  # changeflag drives the protocol
    assert 0.0 <= metrics["mR"] <= 100.0
