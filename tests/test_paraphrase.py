"""Caption paraphrases: other words for the same change, never another change."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_path
from textitsr.evaluation.realdev import LabelledFolderSource
from textitsr.synth.paraphrase import SYNONYMS, paraphrase
from textitsr.synth.views import write_views

#: Words that name a kind of change; a paraphrase must keep each caption's kinds.
BUILD = r"\b(built|constructed|erected)\b"
DESTROY = r"\b(demolished|torn down|knocked down|destroyed|wrecked|ruined)\b"


def test_a_caption_is_said_in_other_words_and_keeps_its_change() -> None:
    caption = "many new houses are built on the bare land near the road"
    seen = {paraphrase(caption, np.random.default_rng(seed)) for seed in range(20)}
    assert len(seen) > 5  # many wordings
    for text in seen:
        assert re.search(BUILD, text) and not re.search(DESTROY, text), text
        assert "new" in text and "road" in text  # "new" has no synonym; "road" stays or becomes "roadway"
    for seed in range(10):  # at rate 1 every listed phrase gives way to another of its group
        text = paraphrase(caption, np.random.default_rng(seed), rate=1.0)
        assert not re.search(r"\b(many|houses|are built|bare land|near|road)\b", text), text


def test_paraphrases_replace_whole_words_only() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        text = paraphrase("the small pond disappears and the houses disappear", rng, rate=1.0)
        assert "disemerge" not in text and "disshow" not in text and "pond" in text
        assert not re.search(r"\b(appear|appears|emerge|emerges)\b", text), text


def test_a_paraphrase_is_reproducible_and_rate_zero_keeps_the_caption() -> None:
    caption = "the forest is cut down and the area becomes farmland"
    assert paraphrase(caption, np.random.default_rng(5)) == paraphrase(caption, np.random.default_rng(5))
    assert paraphrase(caption, np.random.default_rng(5), rate=0.0) == caption


def test_no_phrase_stands_for_two_changes() -> None:
    """A phrase in two groups would let a paraphrase drift from one meaning to another."""
    for group in SYNONYMS:
        building = [p for p in group if re.search(BUILD, p)]
        destroying = [p for p in group if re.search(DESTROY, p)]
        assert not (building and destroying), group


def test_paraphrased_views_have_the_same_images_and_other_captions(tmp_path: Path) -> None:
    realdev = shared_path("realdev")
    plain = write_views(realdev, tmp_path / "plain", "colour")
    para = write_views(realdev, tmp_path / "para", "colour", paraphrased=True)
    for name in sorted(p.name for p in (plain / "before").iterdir())[:5]:
        for side in ("before", "after"):
            assert (plain / side / name).read_bytes() == (para / side / name).read_bytes()
    original, view = LabelledFolderSource(realdev), LabelledFolderSource(para)
    assert view.change_types == original.change_types
    before = [p.captions for p in original.pairs()]
    after = [p.captions for p in view.pairs()]
    assert [len(c) for c in after] == [len(c) for c in before]
    pairs_of_captions = zip(after, before, strict=True)
    changed = sum(a != b for caps_a, caps_b in pairs_of_captions for a, b in zip(caps_a, caps_b, strict=True))
    assert changed > 0.4 * sum(len(c) for c in before)
    assert json.loads((para / "views.json").read_text())["paraphrased"] is True
    assert "paraphrased" not in json.loads((plain / "views.json").read_text())


def test_a_pool_with_broken_pairs_jsonl_is_named_and_no_view_is_written(tmp_path: Path) -> None:
    from tests.test_views import _pool
    from textitsr.errors import InputError

    pool = _pool(tmp_path / "pool")
    text = (pool / "pairs.jsonl").read_text()
    (pool / "pairs.jsonl").write_text(text[: len(text) // 2])  # cut off mid-record
    with pytest.raises(InputError, match=r"pool/pairs\.jsonl:\d+: not valid JSON"):
        write_views(pool, tmp_path / "v", "colour", paraphrased=True)
    assert not (tmp_path / "v").exists()
