"""The discovery file and the server behind it are trusted for nothing: any doubt means a local search.

Hostile files are read in a child process with a time and memory limit, so a regression fails the
test instead of hanging or exhausting the machine running the suite.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from textitsr import api_discovery
from textitsr.api_discovery import discovery_file, running_api, search_text
from textitsr.errors import InputError

REPO = Path(__file__).resolve().parents[1]

Reply = Callable[[BaseHTTPRequestHandler], None]


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "store"
    folder.mkdir()
    discovery_file(folder).parent.mkdir(parents=True)
    return folder


class FakeServer:
    """A loopback HTTP server whose answers a test scripts, recording what it was sent."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.routes: dict[str, Reply] = {"/health": self.json_reply({"store": str(store.resolve())})}
        self.requests: list[tuple[str, str, str | None]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def handle_any(self) -> None:
                fake.requests.append((self.command, self.path, self.headers.get("authorization")))
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                fake.routes.get(self.path.split("?")[0], fake.json_reply({"detail": "no"}, 404))(self)

            do_GET = do_POST = handle_any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @staticmethod
    def json_reply(doc: object, status: int = 200) -> Reply:
        return FakeServer.raw_reply(json.dumps(doc).encode(), status)

    @staticmethod
    def raw_reply(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
        def reply(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(status)
            for name, value in {"content-length": str(len(body)), **(headers or {})}.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(body)

        return reply

    def announce(self, url: str | None = None, pid: object = None) -> None:
        info = {"url": url or self.url, "pid": os.getpid() if pid is None else pid,
                "store": str(self.store.resolve())}
        discovery_file(self.store).write_text(json.dumps(info))

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(store: Path) -> Iterator[FakeServer]:
    fake = FakeServer(store)
    yield fake
    fake.close()


def hit(rank: int) -> dict[str, object]:
    return {"rank": rank, "score": 0.5, "pair_id": f"p{rank}", "source": "s", "split": None,
            "bounds": [0.0, 0.0, 1.0, 1.0], "dates": ["2020-01-01", None], "captions": [],
            "change_type": None}


def running_api_in_child(store: Path, timeout_s: float = 20) -> str:
    """`running_api(store)` in a child process limited to 512 MiB and `timeout_s`; its printed result."""
    code = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (512 * 2**20, 512 * 2**20))
        from textitsr.api_discovery import running_api
        print(repr(running_api({str(store)!r})))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"running_api hung for {timeout_s} s")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_a_live_announced_loopback_server_is_found(server: FakeServer) -> None:
    server.announce()
    assert running_api(server.store) == server.url
    server.routes["/search/text"] = FakeServer.json_reply({"hits": [hit(1), hit(2)]})
    assert [h["pair_id"] for h in search_text(server.url, "a road", 3)] == ["p1", "p2"]


@pytest.mark.parametrize("url", ["file://{health_dir}", "http://example.invalid:80", "https://127.0.0.1:{port}",
                                 "http://user:pw@127.0.0.1:{port}", "http://127.0.0.1:{port}/api",
                                 "http://localhost:{port}", "http://10.1.2.3:{port}", "ftp://127.0.0.1:{port}"])
def test_only_plain_http_loopback_urls_are_trusted(server: FakeServer, tmp_path: Path, url: str) -> None:
    health_dir = tmp_path / "served"
    health_dir.mkdir()
    (health_dir / "health").write_text(json.dumps({"store": str(server.store.resolve())}))
    server.announce(url.format(health_dir=health_dir, port=server.httpd.server_address[1]))
    assert running_api(server.store) is None


def test_the_token_never_follows_a_redirect(server: FakeServer, store: Path) -> None:
    elsewhere = FakeServer(store)
    try:
        elsewhere.routes["/search/text"] = FakeServer.json_reply({"hits": [hit(1)]})
        server.routes["/search/text"] = FakeServer.raw_reply(
            b"", 307, {"location": f"{elsewhere.url}/search/text"})
        server.announce()
        assert search_text(server.url, "a road", 3, token="s3cret") is None  # search locally
        assert elsewhere.requests == []
    finally:
        elsewhere.close()
    assert search_text("http://example.invalid:80", "a road", 3, token="s3cret") is None


def test_a_refused_token_means_a_local_search_not_an_error(server: FakeServer) -> None:
    server.routes["/search/text"] = FakeServer.json_reply({"detail": "missing or wrong bearer token"}, 401)
    server.announce()
    assert search_text(server.url, "a road", 3, token=None) is None
    assert server.requests[-1][2] is None


def test_the_servers_own_4xx_about_the_query_is_still_an_input_error(server: FakeServer) -> None:
    server.routes["/search/text"] = FakeServer.json_reply({"detail": [{"msg": "query: too long"}]}, 422)
    with pytest.raises(InputError, match="query: too long"):
        search_text(server.url, "a road", 3)


@pytest.mark.parametrize("reply", [
    FakeServer.raw_reply(b"<html>not json</html>"),
    FakeServer.json_reply([1, 2, 3]),
    FakeServer.json_reply({"hits": "many"}),
    FakeServer.json_reply({"hits": [hit(i) for i in range(1, 2000)]}),  # far more than k
    FakeServer.json_reply({"hits": [{"rank": 1}]}),
    FakeServer.json_reply({"hits": [{**hit(1), "score": "NaN"}]}),
    FakeServer.json_reply({"hits": [{**hit(1), "bounds": [1, 2]}]}),
    FakeServer.raw_reply(b"[" * 100_000),
    FakeServer.json_reply({"detail": "boom"}, 500),
    FakeServer.raw_reply(b"{}", 200, {"content-length": str(2 * 2**30)}),
], ids=["html", "list", "hits-str", "too-many-hits", "missing-fields", "string-score", "short-bounds",
        "deep-json", "server-error", "2GB-declared"])
def test_hostile_search_replies_mean_a_local_search(server: FakeServer, reply: Reply) -> None:
    server.routes["/search/text"] = reply
    assert search_text(server.url, "a road", 3) is None


def test_a_server_that_trickles_its_answer_is_abandoned(server: FakeServer, monkeypatch) -> None:
    def trickle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.end_headers()
        for _ in range(100):
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(0.1)

    monkeypatch.setattr(api_discovery, "SEARCH_TIMEOUT_S", 0.5)
    server.routes["/search/text"] = trickle
    started = time.monotonic()
    assert search_text(server.url, "a road", 3) is None
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("reply", [
    FakeServer.raw_reply(b"x" * (api_discovery.MAX_HEALTH_BYTES + 10)),
    FakeServer.raw_reply(b"{}", 200, {"content-length": str(2 * 2**30)}),
    FakeServer.json_reply({"store": None}),
    FakeServer.raw_reply(b"[" * 50_000),
], ids=["big", "2GB-declared", "other-store", "deep-json"])
def test_hostile_health_answers_mean_no_server(server: FakeServer, reply: Reply) -> None:
    server.routes["/health"] = reply
    server.announce()
    assert running_api(server.store) is None


@pytest.mark.parametrize("pid", [2**64, -1, 0, True, "123", 1.5, 2**22 + 1])
def test_impossible_pids_mean_no_server(server: FakeServer, pid: object) -> None:
    server.announce(pid=pid)
    assert running_api_in_child(server.store) == "None"


def test_a_fifo_in_place_of_the_discovery_file_does_not_hang(store: Path) -> None:
    os.mkfifo(discovery_file(store))
    assert running_api_in_child(store) == "None"


def test_a_link_to_dev_zero_is_not_read(store: Path) -> None:
    discovery_file(store).symlink_to("/dev/zero")
    assert running_api_in_child(store) == "None"


def test_a_deeply_nested_or_huge_discovery_file_is_refused(store: Path) -> None:
    path = discovery_file(store)
    path.write_text("[" * 200_000 + "]" * 200_000)
    assert running_api_in_child(store) == "None"
    path.write_text(json.dumps({"url": "http://127.0.0.1:1", "pid": os.getpid(), "pad": "x" * 10_000}))
    assert running_api(store) is None


def test_a_discovery_file_owned_by_another_user_is_not_trusted(server: FakeServer) -> None:
    server.announce()
    if os.getuid() != 0:
        pytest.skip("making a file owned by another user needs root")
    os.chown(discovery_file(server.store), 65534, 65534)
    assert running_api(server.store) is None
    os.chown(discovery_file(server.store), 0, 0)
    assert running_api(server.store) == server.url


def test_the_server_withdraws_its_announcement_on_sigterm(store: Path, tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        from fastapi import FastAPI
        import textitsr.api as api
        api.SearchService.open = staticmethod(lambda store, checkpoint=None: None)
        api.create_app = lambda service, config: FastAPI()
        api.serve_api({str(store)!r}, config=api.ApiConfig(port=0))
        print("exited cleanly")
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    path = discovery_file(store)
    try:
        deadline = time.monotonic() + 60
        while not path.exists() and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert path.exists(), child.stderr.read() if child.poll() is not None else "no announcement"
        time.sleep(0.5)  # let uvicorn finish starting
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert not path.exists(), err[-2000:]
    assert "Traceback" not in err
