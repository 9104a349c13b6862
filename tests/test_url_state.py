"""A search survives a reload and can be shared: the text search page keeps its state in the URL."""

from __future__ import annotations

import datetime as dt

import pytest

from textitsr.app import config
from textitsr.app.url_state import UrlField, restored_values, url_params
from textitsr.config import REPO_ROOT

FIELDS = (UrlField.text("query", "q"), UrlField.integer("k", "k"), UrlField.names("sources", "sources"),
          UrlField.flag("where_map", "where"), UrlField.date_range("date_range", "dates"))


def test_url_parameters_round_trip_and_bad_ones_are_dropped() -> None:
    state = {"query": "a new road, then houses", "k": 7, "sources": ["geotiff", "levircc"], "where_map": True,
             "date_range": (dt.date(2010, 1, 1), dt.date(2020, 6, 30))}
    params = url_params(state, FIELDS)
    assert params == {"q": "a new road, then houses", "k": "7", "sources": "geotiff,levircc", "where": "1",
                      "dates": "2010-01-01/2020-06-30"}
    assert restored_values(params, FIELDS) == {**state, "date_range": state["date_range"]}
    hostile = {"q": "x" * 10_000, "k": "lots", "where": "maybe", "dates": "2020-01-01/2010-01-01"}
    assert restored_values(hostile, FIELDS) == {"query": "x" * 2_000}
    assert url_params({"query": "", "sources": []}, FIELDS) == {}


@pytest.mark.slow
def test_a_shared_link_shows_the_same_search(tiny_archive, monkeypatch) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv(config.ENV_STORE, str(tiny_archive.store))
    monkeypatch.setenv(config.ENV_CHECKPOINT, str(tiny_archive.checkpoint))
    monkeypatch.setenv(config.ENV_BASEMAP, "none")
    at = AppTest.from_file(str(REPO_ROOT / "pages" / "1_Text_search.py"), default_timeout=120)
    at.query_params.update({"q": "a new road was built", "k": "4"})
    at.run()
    assert not at.exception and not at.error
    assert at.text_input(key="query").value == "a new road was built" and at.slider(key="k").value == 4
    assert sum("score **" in m.value for m in at.markdown) == 4
    at.slider(key="k").set_value(6).run()
    assert at.query_params["k"] == "6" and at.query_params["q"] == "a new road was built"
    at.text_input(key="query").set_value("the forest was cleared").run()
    assert at.query_params["q"] == "the forest was cleared"
