"""The JSONL annotation log: round trip, resume, torn lines, bad records."""

from __future__ import annotations

import json

import pytest

from textitsr.active.annotations import LOG_NAME, AnnotationLog, pair_key
from textitsr.active.oracle import SimulatedOracle
from textitsr.errors import InputError


def test_round_trip_and_resume(tmp_path):
    log = AnnotationLog(tmp_path / "work")
    assert log.path == tmp_path / "work" / LOG_NAME
    assert log.current_round() == 0 and log.pending() == []

    r = log.propose([("p1", "p2"), ("p3", "p4"), ("p5", "p6")], strategy="mgue")
    assert r == 1
    log.label("p2", "p1", "similar", who="ana")  # order within a pair does not matter
    log.label("p3", "p4", "skip", who="ana")

    # a new process (app restart) sees the same state and resumes the round where it stopped
    again = AnnotationLog(tmp_path / "work")
    assert again.current_round() == 1
    assert again.pending() == [("p5", "p6")]
    labelled = again.labelled()
    assert [(a.key, a.label, a.who, a.round) for a in labelled] == [(("p1", "p2"), "similar", "ana", 1)]
    assert again.skipped() == [("p3", "p4")]

    again.label("p5", "p6", "dissimilar")
    again.label("p1", "p2", "dissimilar")  # changed mind: the later answer wins
    assert again.pending() == []
    assert {a.key: a.similar for a in again.labelled()} == {("p1", "p2"): False, ("p5", "p6"): False}
    assert len(again.annotations()) == 4  # full history is kept

    again.record_update("ckpt/round-1", n_labels=2, metrics={"pair_map20": 41.5})
    assert AnnotationLog(tmp_path / "work").updates()[0]["metrics"] == {"pair_map20": 41.5}
    assert AnnotationLog(tmp_path / "work").propose([("p7", "p8")], "bcgue") == 2


def test_torn_last_line_is_ignored_and_appends_continue(tmp_path):
    log = AnnotationLog(tmp_path / "log.jsonl")
    log.propose([("a", "b")], "random")
    with open(log.path, "ab") as fh:
        fh.write(b'{"kind": "label", "a": "a", "b"')  # crash mid-append
    assert len(log.records()) == 1
    log.label("a", "b", "similar")
    lines = log.path.read_text().splitlines()
    assert json.loads(lines[-1])["label"] == "similar"
    assert [a.label for a in log.labelled()] == ["similar"]


def test_bad_records_and_labels_are_refused(tmp_path):
    log = AnnotationLog(tmp_path / "log.jsonl")
    with pytest.raises(InputError, match="label: expected one of similar, dissimilar, skip"):
        log.label("a", "b", "maybe")
    with pytest.raises(InputError, match="two different items"):
        log.label("a", "a", "similar")
    with pytest.raises(InputError, match="at least one item pair"):
        log.propose([], "mgue")
    log.path.write_text('{"kind": "vote"}\n{"kind": "batch", "round": 1, "pairs": []}\n')
    with pytest.raises(InputError, match=r"log.jsonl:1: expected a batch/label/update record"):
        log.records()


def test_pair_key_and_oracle():
    assert pair_key("b", "a") == pair_key("a", "b") == ("a", "b")
    oracle = SimulatedOracle({"x": "buildings", "y": "buildings", "z": "roads", "n": None})
    assert oracle("x", "y") and not oracle("x", "z")
    with pytest.raises(InputError, match="no ground-truth change_type"):
        oracle("x", "n")
