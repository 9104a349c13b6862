"""Sentences that only say nothing changed lean on the change reading: on the shipped model, through
PyTorch and the exported query graph alike, and on the shipped real Landsat series they rank pairs by
how little each changed against its archive."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from textitsr.embedding.encode import encode_texts
from textitsr.embedding.no_change_queries import emphasise_no_change, names_only_change, query_type_part
from textitsr.models.probes import type_reading

SENTENCES = ["there is no change", "Nothing has changed between 2019 and 2020.", "the forest is unchanged",
             "new buildings are built along the road"]


def test_change_only_sentences_are_told_from_descriptions() -> None:
    assert names_only_change("there is no change")
    assert names_only_change("The two images look the same!")
    assert names_only_change("Nothing has changed between 2019 and 2020.")
    assert not names_only_change("the fields, the village blocks and the tidal flats look the same")
    assert not names_only_change("no new buildings")
    assert not names_only_change("")
    assert not names_only_change("2019 - 2020")


def test_no_change_sentences_lean_on_their_type_part(default_model) -> None:
    from textitsr.models.text_side import load_text_side
    from textitsr.training.default_model import DEFAULT_MODEL_DIR

    part = query_type_part(default_model)
    assert part is not None
    with torch.inference_mode():
        raw = default_model.encode_texts(SENTENCES).numpy()
    read = encode_texts(default_model, SENTENCES)
    np.testing.assert_allclose(np.linalg.norm(read, axis=1), 1.0, atol=1e-5)
    share, raw_share = (read[:, part] ** 2).sum(axis=1), (raw[:, part] ** 2).sum(axis=1)
    assert (share[:2] > 0.5).all() and (raw_share < 0.2).all()
    for row in (0, 1):  # the reading itself is the model's: only its weight in the score grows
        before, after = type_reading(raw[row], part), type_reading(read[row], part)
        assert after["none"] > 0.9 and after["none"] == pytest.approx(before["none"], abs=1e-5)
    np.testing.assert_allclose(read[2:], raw[2:], atol=1e-6)  # they name a scene: read as before
    np.testing.assert_allclose(encode_texts(load_text_side(DEFAULT_MODEL_DIR), SENTENCES), read, atol=1e-5)
    assert emphasise_no_change(SENTENCES, raw, part, emphasis=0.0) is raw


def test_a_fine_tuned_pair_head_turns_the_reading_off(default_model) -> None:
    tuned = copy.deepcopy(default_model)
    tuned.pair_head.mix.copy_(torch.eye(len(tuned.pair_head.mix)) * 0.5 + 0.01)
    assert query_type_part(tuned) is None
    with torch.inference_mode():
        plain = tuned.encode_texts(SENTENCES[:1]).numpy()
    np.testing.assert_array_equal(encode_texts(tuned, SENTENCES[:1]), plain)
    with pytest.raises(ValueError, match="2 texts but 1 embeddings"):
        emphasise_no_change(SENTENCES[:2], np.zeros((1, 4)), slice(0, 2))


def test_a_no_change_query_ranks_a_series_by_its_archive_change(default_model, landsat_pairs) -> None:
    """On 180 real Landsat pairs read as one archive, "no change" queries rank the pairs closer to how
    little each changed against the series than the same sentences read on their own."""
    from textitsr.index.build import BuildConfig, embed_pairs

    read = embed_pairs(default_model, landsat_pairs, BuildConfig(prefetch=False, precision="fp32",
                                                                  backbone_runtime="eager"))
    z = np.array([json.loads(r["change_stats"])["relative_pixel_change"] for r in read.rows])
    for query in ("there is no change", "the two images look the same"):
        with torch.inference_mode():
            plain = default_model.encode_texts([query]).numpy()[0]
        leaning = encode_texts(default_model, [query])[0]
        rho_plain = spearmanr(-(read.pair_embeddings @ plain), z)[0]
        rho = spearmanr(-(read.pair_embeddings @ leaning), z)[0]
        assert rho > 0.85 and rho > rho_plain + 0.03, (query, rho, rho_plain)


def test_the_query_graph_reads_no_change_sentences_as_pytorch_does(tmp_path: Path, monkeypatch) -> None:
    """The exported graph records the type part and reads after the graph as PyTorch does; a graph an
    earlier version wrote is not used, and is written again."""
    from textitsr.embedding.query_graph import SPEC, QueryGraph, graph_dir, prepare_query_graph
    from textitsr.models.text_side import load_text_side
    from textitsr.training.default_model import DEFAULT_MODEL_DIR

    monkeypatch.setenv("TEXTITSR_CACHE_DIR", str(tmp_path))
    side = load_text_side(DEFAULT_MODEL_DIR)
    assert prepare_query_graph(side, "shipped") == graph_dir("shipped")
    graph = QueryGraph.find("shipped")
    assert graph is not None and graph.type_part == query_type_part(side)
    got, want = graph.encode_texts(SENTENCES), encode_texts(side, SENTENCES)
    assert (got * want).sum(axis=1).min() > 0.9999
    spec_file = graph_dir("shipped") / SPEC
    spec = json.loads(spec_file.read_text("utf-8"))
    spec_file.write_text(json.dumps({k: v for k, v in spec.items() if k not in ("version", "type_part")}))
    assert QueryGraph.find("shipped") is None  # an earlier graph would skip the reading
    prepare_query_graph(side, "shipped")
    assert json.loads(spec_file.read_text("utf-8"))["version"] == spec["version"]
