"""Checkpoints: safetensors + config.json round trip, stable ids, and clear errors for bad folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from textitsr.errors import CheckpointError
from textitsr.models import ModelConfig, TextITSR, checkpoint_id, load_checkpoint, save_checkpoint
from textitsr.models.checkpoint import CONFIG_FILE, WEIGHTS_FILE, model_card, read_checkpoint_config

TEXTS = ["a new road was built", "two houses near the river"]


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (
        rng.integers(0, 256, (3, 40, 40, 3), dtype=np.uint8),
        rng.integers(0, 256, (3, 40, 40, 3), dtype=np.uint8),
    )


def tiny_config(tiny_hf_models, fusion: str = "tff", **kw) -> ModelConfig:
    return ModelConfig(
        image_encoder=str(tiny_hf_models.vit),
        text_encoder=str(tiny_hf_models.bert),
        fusion=fusion,
        embed_dim=16,
        fusion_width=16,
        fusion_layers=1,
        fusion_heads=2,
        **kw,
    )


def perturbed(model: TextITSR) -> TextITSR:
    """Weights unlike a fresh init, so a round trip that silently re-initialises would be caught."""
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
        model.logit_scale.fill_(3.3)
    return model


@pytest.fixture
def saved(tmp_path, tiny_hf_models) -> tuple[TextITSR, Path]:
    torch.manual_seed(0)
    model = perturbed(TextITSR(tiny_config(tiny_hf_models)))
    return model, save_checkpoint(model, tmp_path / "ckpt", extra={"epochs": 3, "mR": 41.5})


def rewrite_config(folder: Path, edit) -> None:
    config = json.loads((folder / CONFIG_FILE).read_text())
    edit(config)
    (folder / CONFIG_FILE).write_text(json.dumps(config))


@pytest.mark.parametrize(
    "fusion", ["tff", "concat-transformer", "concat-transformer:sequence", "gff:before+after+diff"]
)
def test_round_trip_gives_identical_embeddings(fusion, tmp_path, tiny_hf_models, images) -> None:
    torch.manual_seed(1)
    model = perturbed(TextITSR(tiny_config(tiny_hf_models, fusion)))
    folder = save_checkpoint(model, tmp_path / "ckpt")
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    loaded = load_checkpoint(folder)
    assert loaded.config == model.config
    assert loaded.logit_scale.item() == pytest.approx(3.3)
    assert torch.equal(loaded.encode_pairs(*images), model.encode_pairs(*images))
    assert torch.equal(loaded.encode_texts(TEXTS), model.encode_texts(TEXTS))
    assert not loaded.training


def test_concat_transformer_layout_is_stored_and_old_checkpoints_keep_theirs(
    tmp_path, tiny_hf_models, images
) -> None:
    """A bare "concat-transformer" now means the channel layout and is saved spelled out; a
    checkpoint written before that (bare spec, sequence weights) still loads as the sequence layout
    and embeds exactly as it did."""
    from textitsr.models.fusion import ChannelConcatTransformerFusion, ConcatTransformerFusion

    fresh = TextITSR(tiny_config(tiny_hf_models, "concat-transformer"))
    assert isinstance(fresh.fusion, ChannelConcatTransformerFusion)
    assert fresh.config.fusion == "concat-transformer:channel"
    torch.manual_seed(2)
    old = perturbed(TextITSR(tiny_config(tiny_hf_models, "concat-transformer:sequence")))
    folder = save_checkpoint(old, tmp_path / "old")
    assert read_checkpoint_config(folder)["model"]["fusion"] == "concat-transformer:sequence"
    rewrite_config(folder, lambda c: c["model"].update(fusion="concat-transformer"))  # as written before
    loaded = load_checkpoint(folder)
    assert isinstance(loaded.fusion, ConcatTransformerFusion)
    assert loaded.config.fusion == "concat-transformer:sequence"
    assert torch.equal(loaded.encode_pairs(*images), old.encode_pairs(*images))


@pytest.mark.slow
def test_round_trip_with_default_backbones(tmp_path, images) -> None:
    torch.manual_seed(0)
    model = perturbed(TextITSR(ModelConfig(fusion="gff:concat+diff", embed_dim=32)))
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "ckpt"))
    assert loaded.config.image_encoder == "efficientnet-lite0" and loaded.config.text_encoder == "minilm-l6"
    assert torch.equal(loaded.encode_pairs(*images), model.encode_pairs(*images))
    assert torch.equal(loaded.encode_texts(TEXTS), model.encode_texts(TEXTS))
    # frozen backbones are rebuilt from their names, not stored: the file stays small
    assert (tmp_path / "ckpt" / WEIGHTS_FILE).stat().st_size < 20_000_000


def test_config_json_records_versions_dims_and_extra(saved) -> None:
    model, folder = saved
    config = read_checkpoint_config(folder)
    assert config["format_version"] == 1 and config["textitsr_version"]
    assert config["model"] == model.config.to_dict()
    assert config["dims"] == {"image_dim": 32, "num_tokens": 16, "image_size": 32, "text_dim": 32}
    assert config["extra"] == {"epochs": 3, "mR": 41.5}
    card = model_card(folder)
    assert card["fusion"] == "tff" and card["embed_dim"] == 16 and card["training"] == config["extra"]
    assert card["checkpoint_id"] == checkpoint_id(folder)


def test_checkpoint_id_is_stable_and_tracks_weights(saved, tmp_path) -> None:
    model, folder = saved
    first = checkpoint_id(folder)
    assert len(first) == 16 and int(first, 16) >= 0
    again = save_checkpoint(model, tmp_path / "again", extra={"other": "summary"})
    assert checkpoint_id(again) == first  # same weights + config; `extra` does not count
    with torch.no_grad():
        model.text_head.net[1].bias.add_(1.0)
    assert checkpoint_id(save_checkpoint(model, tmp_path / "changed")) != first


def test_save_replaces_an_existing_checkpoint(saved) -> None:
    model, folder = saved
    with torch.no_grad():
        model.logit_scale.fill_(1.0)
    save_checkpoint(model, folder)
    assert load_checkpoint(folder).logit_scale.item() == pytest.approx(1.0)
    assert sorted(p.name for p in folder.parent.iterdir()) == ["ckpt"]  # no temp folders left


def test_unfrozen_backbone_blocks_are_saved(tmp_path, tiny_hf_models, images) -> None:
    model = perturbed(TextITSR(tiny_config(tiny_hf_models, "gff:diff", unfreeze_image_blocks=1)))
    assert any(k.startswith("image_encoder.") for k in model.trainable_state_dict())
    assert not any(k.startswith("text_encoder.") for k in model.trainable_state_dict())
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "ckpt"))
    assert torch.equal(loaded.encode_pairs(*images), model.encode_pairs(*images))


def test_missing_folder_or_files(tmp_path, saved) -> None:
    with pytest.raises(CheckpointError, match="folder not found"):
        load_checkpoint(tmp_path / "nowhere")
    _, folder = saved
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"missing {WEIGHTS_FILE}"):
        load_checkpoint(folder)
    with pytest.raises(CheckpointError, match="missing"):
        checkpoint_id(folder)


def test_corrupt_json(saved) -> None:
    _, folder = saved
    (folder / CONFIG_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON") as err:
        load_checkpoint(folder)
    assert str(folder) in str(err.value)


def test_version_mismatch(saved) -> None:
    _, folder = saved
    rewrite_config(folder, lambda c: c.update(format_version=99))
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_checkpoint(folder)


def test_unknown_model_field(saved) -> None:
    _, folder = saved
    rewrite_config(folder, lambda c: c["model"].update(colour="red"))
    with pytest.raises(CheckpointError, match="colour"):
        load_checkpoint(folder)


def test_missing_backbone_is_named(saved, tmp_path) -> None:
    _, folder = saved
    gone = str(tmp_path / "deleted-vit")
    rewrite_config(folder, lambda c: c["model"].update(image_encoder=gone))
    with pytest.raises(CheckpointError, match="cannot rebuild backbone") as err:
        load_checkpoint(folder)
    assert gone in str(err.value)


def test_config_that_does_not_match_the_weights(saved) -> None:
    _, folder = saved
    rewrite_config(folder, lambda c: c["model"].update(fusion_width=32))
    with pytest.raises(CheckpointError, match="shapes differ") as err:
        load_checkpoint(folder)
    assert "expected" in str(err.value)
    rewrite_config(folder, lambda c: c["model"].update(fusion_width=16, fusion="gff:diff"))
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(folder)


def test_backbone_with_other_shapes(saved) -> None:
    _, folder = saved
    rewrite_config(folder, lambda c: c["dims"].update(image_dim=1280))
    with pytest.raises(CheckpointError, match="image_dim: saved 1280, backbone gives 32"):
        load_checkpoint(folder)


def test_corrupt_weights_file(saved) -> None:
    _, folder = saved
    data = (folder / WEIGHTS_FILE).read_bytes()
    (folder / WEIGHTS_FILE).write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="unreadable safetensors"):
        load_checkpoint(folder)


def test_save_keeps_named_entries_and_a_failed_save_changes_nothing(saved, monkeypatch) -> None:
    import textitsr.models.checkpoint as checkpoint_module

    model, folder = saved
    (folder / "last").mkdir()
    (folder / "last" / "state.json").write_text('{"epoch": 2}')
    (folder / "stray.txt").write_text("a user's file: kept, never the checkpoint's to replace")
    first = checkpoint_id(folder)
    with torch.no_grad():
        model.logit_scale.fill_(1.0)
    save_checkpoint(model, folder, extra={"epochs": 4}, keep=["last"])
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_FILE, "last", WEIGHTS_FILE, "stray.txt"]
    assert (folder / "last" / "state.json").read_text() == '{"epoch": 2}'
    assert load_checkpoint(folder).logit_scale.item() == pytest.approx(1.0)
    second = checkpoint_id(folder)
    assert second != first

    def broken_save_file(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module, "save_file", broken_save_file)
    with torch.no_grad():
        model.logit_scale.fill_(2.0)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model, folder, extra={"epochs": 5}, keep=["last"])
    assert checkpoint_id(folder) == second and read_checkpoint_config(folder)["extra"] == {"epochs": 4}
    assert (folder / "last" / "state.json").read_text() == '{"epoch": 2}'
    assert sorted(p.name for p in folder.parent.iterdir()) == ["ckpt"]  # no temp folders left
