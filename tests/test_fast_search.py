"""One-shot `textitsr search`: loads only the text side, or asks a running `textitsr api` for the store."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from typer.testing import CliRunner

from textitsr import cli
from textitsr.api import create_app
from textitsr.api_discovery import announce, discovery_file, running_api
from textitsr.errors import InputError
from textitsr.models.checkpoint import load_checkpoint
from textitsr.models.text_side import load_text_side
from textitsr.service import SearchService

runner = CliRunner()


def test_text_side_embeds_like_the_full_model(tiny_archive) -> None:
    texts = ["new buildings along the road", "the pond dries up", "nothing has changed"]
    side = load_text_side(tiny_archive.checkpoint)
    full = load_checkpoint(tiny_archive.checkpoint)
    np.testing.assert_allclose(side.encode_texts(texts).numpy(), full.encode_texts(texts).numpy(), atol=1e-6)
    assert not hasattr(side, "image_encoder")
    with pytest.raises(InputError, match="text queries only"):
        side.encode_pairs(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 8, 8, 3), np.uint8))


def test_text_only_service_answers_text_queries_and_loads_the_image_side_on_demand(tiny_archive) -> None:
    fast = SearchService.open(tiny_archive.store, text_only=True)
    full = SearchService.open(tiny_archive.store)
    query = "a new road is built across the bare land"
    assert [h.pair_id for h in fast.search_text(query, k=6)] == [
        h.pair_id for h in full.search_text(query, k=6)
    ]
    assert [h.text for h in fast.describe_pair("test_000003", k=3)] == [
        h.text for h in full.describe_pair("test_000003", k=3)
    ]
    before, after = full.catalog.thumbnails("test_000003")
    assert fast._full_model is None  # nothing but the text side until images come
    assert [(h.pair_id, round(h.score, 4)) for h in fast.search_pair(before=before, after=after, k=4)] == [
        (h.pair_id, round(h.score, 4)) for h in full.search_pair(before=before, after=after, k=4)
    ]
    assert fast._full_model is not None


@pytest.fixture
def running_server(tiny_archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A real uvicorn server for the tiny store, announced in a private cache folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    service = SearchService.open(tiny_archive.store)
    config = uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    with announce(tiny_archive.store, url):
        yield url, service
    server.should_exit = True
    thread.join(timeout=30)


def test_cli_search_asks_a_running_api_server(tiny_archive, running_server, monkeypatch) -> None:
    url, service = running_server
    assert running_api(tiny_archive.store) == url
    assert running_api(tiny_archive.world) is None  # another folder: no server for it

    def no_model(*args, **kwargs):
        raise AssertionError("the CLI loaded the model although a server was running")

    monkeypatch.setattr(SearchService, "open", no_model)
    result = runner.invoke(cli.app, ["search", "new buildings along the road", "--store",
                                     str(tiny_archive.store), "-k", "4", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    expected = service.search_text("new buildings along the road", 4)
    assert [r["pair_id"] for r in rows] == [h.pair_id for h in expected]
    bad = runner.invoke(cli.app, ["search", "   ", "--store", str(tiny_archive.store)])
    assert bad.exit_code != 0 and "query" in str(bad.exception)


def test_stale_or_foreign_announcements_are_ignored(tiny_archive, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = discovery_file(tiny_archive.store)
    assert running_api(tiny_archive.store) is None  # nothing announced
    path.parent.mkdir(parents=True)
    dead = {"url": "http://127.0.0.1:9", "pid": 2**22 + 12345, "store": str(tiny_archive.store.resolve())}
    path.write_text(json.dumps(dead))
    assert running_api(tiny_archive.store) is None  # no such process
    path.write_text(json.dumps({**dead, "pid": os.getpid()}))
    assert running_api(tiny_archive.store) is None  # nothing listening there
    path.write_text("{not json")
    assert running_api(tiny_archive.store) is None
    with announce(tiny_archive.store, "http://127.0.0.1:9"):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not path.exists()  # withdrawn when the server stops


def test_cli_searches_locally_when_the_server_wants_a_token_it_lacks(tiny_archive, tmp_path: Path,
                                                                     monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("TEXTITSR_API_TOKEN", raising=False)
    from textitsr.api import ApiConfig

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    service = SearchService.open(tiny_archive.store)
    app = create_app(service, ApiConfig(token="only-the-owner-knows"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        with announce(tiny_archive.store, f"http://127.0.0.1:{port}"):
            assert running_api(tiny_archive.store) is not None  # /health needs no token
            result = runner.invoke(cli.app, ["search", "new buildings along the road", "--store",
                                             str(tiny_archive.store), "-k", "4", "--json"])
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert result.exit_code == 0, result.output
    expected = service.search_text("new buildings along the road", 4)
    assert [r["pair_id"] for r in json.loads(result.output)] == [h.pair_id for h in expected]
