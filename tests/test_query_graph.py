"""The exported query graph: same vectors as PyTorch, and a one-shot `textitsr search` that imports
neither torch nor transformers once the graph exists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from textitsr.config import REPO_ROOT

#: Runs the real CLI in a fresh process and reports which heavy modules it imported.
ONE_SHOT = """
import json, sys
from textitsr import cli
sys.argv = ["textitsr", "search", sys.argv[1], "--store", sys.argv[2], "-k", "5", "--json"]
try:
    cli.main()
except SystemExit as exc:
    assert not exc.code, exc.code
print(json.dumps({"torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules}))
"""


def one_shot(store: Path, query: str, cache: Path) -> tuple[list[dict], dict]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TEXTITSR_CACHE_DIR=str(cache), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", ONE_SHOT, query, str(store)], env=env, check=True,
                         capture_output=True, text=True, timeout=300).stdout
    text, modules = out.rsplit("\n", 2)[0], json.loads(out.strip().splitlines()[-1])
    return json.loads(text), modules


def test_query_graph_matches_pytorch(tiny_archive, tmp_path: Path, monkeypatch) -> None:
    from textitsr.embedding.query_graph import PROBE_TEXTS, QueryGraph, export_query_graph
    from textitsr.models.checkpoint import checkpoint_id
    from textitsr.models.text_side import load_text_side

    monkeypatch.setenv("TEXTITSR_CACHE_DIR", str(tmp_path))
    side = load_text_side(tiny_archive.checkpoint)
    cid = checkpoint_id(tiny_archive.checkpoint)
    folder = export_query_graph(side, cid)
    graph = QueryGraph.find(cid)
    assert folder is not None and graph is not None and graph.checkpoint_id == cid
    texts = [*PROBE_TEXTS, "Trees were cut down; a parking lot — 40 cars — replaced them!"]
    want = side.encode_texts(texts).numpy()
    got = graph.encode_texts(texts)
    assert got.shape == want.shape and (got * want).sum(axis=1).min() > 0.9999
    assert QueryGraph.find("0123456789abcdef") is None


def test_one_shot_search_without_torch(tiny_archive, tmp_path: Path) -> None:
    from textitsr.service import SearchService

    query = "many new buildings were built"
    first, heavy = one_shot(tiny_archive.store, query, tmp_path)  # no graph yet: PyTorch, then export
    assert heavy["torch"] and (tmp_path / "query").is_dir()
    second, light = one_shot(tiny_archive.store, query, tmp_path)
    assert light == {"torch": False, "transformers": False}
    assert [h["pair_id"] for h in second] == [h["pair_id"] for h in first]
    assert np.allclose([h["score"] for h in second], [h["score"] for h in first], atol=1e-4)
    torch_hits = SearchService.open(tiny_archive.store, text_only=True).search_text(query, k=5)
    assert [h.pair_id for h in torch_hits] == [h["pair_id"] for h in second]


@pytest.mark.parametrize("bad", ["../x", "a/b", ""])
def test_graph_folder_refuses_odd_checkpoint_ids(bad: str) -> None:
    from textitsr.embedding.query_graph import graph_dir
    from textitsr.errors import InputError

    with pytest.raises(InputError, match="checkpoint id"):
        graph_dir(bad)
