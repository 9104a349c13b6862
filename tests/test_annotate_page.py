"""The Annotate page headless (AppTest) on the tiny archive: start a round, answer, the log grows."""

from __future__ import annotations

import pytest

from textitsr.active.annotations import AnnotationLog
from textitsr.app import archives, config
from textitsr.config import REPO_ROOT

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest

PAGE = str(REPO_ROOT / "pages" / "5_Annotate.py")


@pytest.fixture(scope="module")
def page_env(tiny_archive, tmp_path_factory):
    work = tmp_path_factory.mktemp("annotate")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(config.ENV_STORE, str(tiny_archive.store))
        mp.setenv(config.ENV_CHECKPOINT, str(tiny_archive.checkpoint))
        mp.setenv(config.ENV_BASEMAP, "none")
        mp.setenv("TEXTITSR_ANNOTATIONS", str(work))
        yield work


def clean(at: AppTest) -> AppTest:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def button(at: AppTest, key: str):
    return next(b for b in at.button if b.key == key)


def test_annotate_round_similar_dissimilar_skip_and_update(page_env):
    log = AnnotationLog(page_env)
    at = clean(AppTest.from_file(PAGE, default_timeout=120).run())
    assert any("Start a round" in i.value for i in at.info)
    assert [b.key for b in at.button if b.key.startswith("annotate-")] == [
        "annotate-start",
        "annotate-update",
    ]

    at = clean(button(at, "annotate-start").click().run())
    batch = log.batch()
    assert log.current_round() == 1 and len(batch) == 8
    assert len(at.image) == 4  # before/after of both items side by side

    at = clean(button(at, "annotate-similar").click().run())
    assert [a.label for a in log.annotations()] == ["similar"]
    at = clean(button(at, "annotate-dissimilar").click().run())
    at = clean(button(at, "annotate-skip").click().run())
    anns = log.annotations()
    assert [a.label for a in anns] == ["similar", "dissimilar", "skip"]
    assert [a.key for a in anns] == [tuple(sorted(p)) for p in batch[:3]]
    assert len(log.pending()) == 5
    assert "3 of 8 answered" in at.get("progress")[0].proto.text

    at = clean(button(at, "annotate-update").click().run())
    assert len(log.updates()) == 1 and log.updates()[0]["n_labels"] == 2
    assert any("Fine-tuned on 2 labels" in s.value for s in at.success)
    assert (page_env / "store" / "manifest.json").is_file()
    assert len(at.get("plotly_chart")) == 1


TEXT_PAGE = str(REPO_ROOT / "pages" / "1_Text_search.py")


def text_search(query: str, choice: str | None = None) -> tuple[AppTest, list[tuple[str, float]]]:
    """Run the Text search page on `query` in a session that chose `choice` (an archive kind); (page,
    [(pair id, score)] of the result cards)."""
    import re

    at = AppTest.from_file(TEXT_PAGE, default_timeout=120)
    at.session_state["query"] = query
    at.session_state["k"] = 5
    if choice is not None:
        at.session_state[archives.CHOICE_KEY] = choice
    at = clean(at.run())
    cards = [re.search(r"`([^`]+)` — score \*\*(-?[0-9.]+)\*\*", m.value) for m in at.markdown]
    return at, [(c[1], float(c[2])) for c in cards if c]


def test_after_an_update_search_switches_to_the_fine_tuned_model(tiny_archive, tmp_path, monkeypatch):
    from textitsr.service import SearchService

    work = tmp_path / "work"
    monkeypatch.setenv(config.ENV_STORE, str(tiny_archive.store))
    monkeypatch.setenv(config.ENV_CHECKPOINT, str(tiny_archive.checkpoint))
    monkeypatch.setenv("TEXTITSR_ANNOTATIONS", str(work))
    query = "many new buildings were built"
    _, base_hits = text_search(query)

    at = clean(AppTest.from_file(PAGE, default_timeout=120).run())
    switch = at.toggle(key="annotate-use-tuned")
    assert switch.disabled and not switch.value  # nothing fine-tuned yet
    assert "base model" in " ".join(c.value for c in at.sidebar.caption)

    at = clean(button(at, "annotate-start").click().run())
    at = clean(button(at, "annotate-similar").click().run())
    at = clean(button(at, "annotate-dissimilar").click().run())
    at = clean(button(at, "annotate-update").click().run())
    assert any("Turn on “Use the fine-tuned model for search”" in s.value for s in at.success)
    switch = at.toggle(key="annotate-use-tuned")
    assert not switch.disabled and not switch.value
    at = clean(switch.set_value(True).run())
    assert at.session_state[archives.CHOICE_KEY] == archives.FINE_TUNED
    assert "fine-tuned model" in " ".join(c.value for c in at.sidebar.caption)

    page, tuned_hits = text_search(query, archives.FINE_TUNED)  # this analyst's other pages
    assert "fine-tuned model" in " ".join(c.value for c in page.sidebar.caption)
    expected = SearchService.open(work / "store").search_text(query, k=5)
    assert [pid for pid, _ in tuned_hits] == [h.pair_id for h in expected]
    assert [s for _, s in tuned_hits] == pytest.approx([h.score for h in expected], abs=1e-3)
    assert [s for _, s in tuned_hits] != pytest.approx([s for _, s in base_hits], abs=1e-3)
    other, other_hits = text_search(query)  # another analyst's session: still the base model
    assert "base model" in " ".join(c.value for c in other.sidebar.caption)
    assert [pid for pid, _ in other_hits] == [pid for pid, _ in base_hits]

    at = clean(at.toggle(key="annotate-use-tuned").set_value(False).run())
    assert text_search(query)[1] == base_hits
