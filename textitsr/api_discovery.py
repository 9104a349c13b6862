"""Find a running `textitsr api` for a store, so a one-shot `textitsr search` can ask it.

A server announces itself in a small JSON file named after the store's resolved path, under the
user's cache folder; the CLI reads it, checks the process is alive and that `/health` names the same
store, and sends its query there. Standard library only: this runs before anything heavy is imported.

Nothing in that folder is trusted: the file must be a small regular file owned by this user, the URL a
plain `http://` loopback address, the pid a live process, and every reply is bounded in time and size
and checked for shape. Requests never follow a redirect, so the token goes to that loopback port only.
Whenever anything is in doubt the answer is "no server" and the CLI searches the store itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import ipaddress
import json
import math
import os
import signal
import stat
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from textitsr.errors import InputError
from textitsr.safe_read import JsonDepthError, loads_bounded

#: Environment variable holding the API's bearer token (so it stays out of the process list).
TOKEN_ENV = "TEXTITSR_API_TOKEN"

#: Seconds the CLI waits for a server's `/health` before falling back to loading the model itself.
PROBE_TIMEOUT_S = 0.5
#: Seconds a whole search request may take (connect, send, every byte of the answer).
SEARCH_TIMEOUT_S = 60.0
#: Largest discovery file read (a real one is ~200 bytes).
MAX_DISCOVERY_BYTES = 4096
#: Largest `/health` answer read.
MAX_HEALTH_BYTES = 64 * 1024
#: Largest search answer read (1,000 hits with their captions fit easily).
MAX_REPLY_BYTES = 16 * 2**20
#: Linux caps pids at 2**22; anything larger in the file is not a process.
MAX_PID = 2**22


class _Doubt(Exception):
    """Something about the server or its answer is not as expected: search locally instead."""


def discovery_file(store: Path) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "textitsr" / "api"
    key = hashlib.sha1(str(Path(store).resolve()).encode()).hexdigest()[:16]
    return base / f"{key}.json"


@contextlib.contextmanager
def announce(store: Path, url: str) -> Iterator[None]:
    """Advertise `url` as serving `store` for as long as the block runs.

    The file is withdrawn however the block ends; SIGTERM (the polite kill) is turned into the same
    exit path as Ctrl-C while the block runs, so a stopped server leaves no stale announcement.
    """
    path = discovery_file(store)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"url": url, "pid": os.getpid(), "store": str(Path(store).resolve())}))
        tmp.replace(path)
    except OSError:  # a read-only home only costs the CLI its shortcut
        yield
        return
    with _sigterm_as_interrupt():
        try:
            yield
        finally:
            withdraw(path)


def withdraw(path: Path) -> None:
    """Remove this process's announcement (another server's newer one stays)."""
    with contextlib.suppress(OSError, ValueError, _Doubt):
        if _read_discovery(path).get("pid") == os.getpid():
            path.unlink()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: the caller owns signal handling
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _read_discovery(path: Path) -> dict[str, Any]:
    """The announcement, read without following a link, blocking on a FIFO or reading past 4 KiB."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise _Doubt(f"{path}: {err}") from err
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _Doubt(f"{path}: not a regular file")
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            raise _Doubt(f"{path}: owned by another user")
        if info.st_size > MAX_DISCOVERY_BYTES:
            raise _Doubt(f"{path}: {info.st_size} bytes")
        raw = os.read(fd, MAX_DISCOVERY_BYTES + 1)
    finally:
        os.close(fd)
    try:
        data = loads_bounded(raw, max_depth=2, max_bytes=MAX_DISCOVERY_BYTES)
    except (ValueError, JsonDepthError) as err:
        raise _Doubt(f"{path}: {err}") from err
    if not isinstance(data, dict):
        raise _Doubt(f"{path}: not a JSON object")
    return data


def _loopback_url(url: Any) -> tuple[str, int]:
    """(host, port) of a plain `http://HOST:PORT` URL whose host is a loopback address."""
    if not isinstance(url, str) or len(url) > 200:
        raise _Doubt("url is not a short string")
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError as err:
        raise _Doubt(f"url {url!r}: {err}") from err
    if parts.scheme != "http" or parts.username or parts.password or parts.path not in ("", "/") \
            or parts.query or parts.fragment or port is None or not parts.hostname:
        raise _Doubt(f"url {url!r}: expected http://LOOPBACK-ADDRESS:PORT")
    try:
        if not ipaddress.ip_address(parts.hostname).is_loopback:
            raise _Doubt(f"url {url!r}: not a loopback address")
    except ValueError as err:
        raise _Doubt(f"url {url!r}: expected a numeric loopback address") from err
    return parts.hostname, port


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid <= MAX_PID:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True  # alive, but someone else's: the ownership check already refused such files
    except (OSError, OverflowError):
        return False
    return True


def _request(host: str, port: int, method: str, path: str, *, body: bytes | None = None,
             headers: dict[str, str] | None = None, timeout_s: float, max_bytes: int) -> tuple[int, Any]:
    """(status, parsed JSON) of one request to host:port; no redirects, bounded time and size."""
    deadline = time.monotonic() + timeout_s
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        length = resp.getheader("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_bytes):
            raise _Doubt(f"{method} {path}: answer of {length} bytes")
        chunks, size = [], 0
        while True:
            if time.monotonic() > deadline:
                raise _Doubt(f"{method} {path}: no full answer within {timeout_s:g} s")
            chunk = resp.read1(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise _Doubt(f"{method} {path}: answer over {max_bytes} bytes")
            chunks.append(chunk)
        status = resp.status
    except (OSError, http.client.HTTPException) as err:
        raise _Doubt(f"{method} {path}: {err}") from err
    finally:
        conn.close()
    try:
        return status, loads_bounded(b"".join(chunks), max_depth=8, max_bytes=max_bytes)
    except (ValueError, JsonDepthError) as err:
        raise _Doubt(f"{method} {path}: not JSON ({err})") from err


def running_api(store: Path) -> str | None:
    """URL of a live API server for this store, or None when anything about it is in doubt."""
    resolved = str(Path(store).resolve())
    try:
        info = _read_discovery(discovery_file(store))
        host, port = _loopback_url(info.get("url"))
        if not _pid_alive(info.get("pid")):
            return None
        status, health = _request(host, port, "GET", "/health", timeout_s=PROBE_TIMEOUT_S,
                                  max_bytes=MAX_HEALTH_BYTES)
    except _Doubt:
        return None
    if status != 200 or not isinstance(health, dict) or health.get("store") != resolved:
        return None
    return f"http://{host if ':' not in host else f'[{host}]'}:{port}"


def search_text(url: str, query: str, k: int, token: str | None = None) -> list[dict[str, Any]] | None:
    """POST /search/text to a server `running_api` found: its hits, or None to search locally.

    A 4xx about the query (empty, too long, k out of range) is the server's answer and becomes an
    InputError; a refused token, a server error, a stall or an answer of the wrong shape means None.
    """
    try:
        host, port = _loopback_url(url)
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        body = json.dumps({"query": query, "k": k}).encode()
        status, answer = _request(host, port, "POST", "/search/text", body=body, headers=headers,
                                  timeout_s=SEARCH_TIMEOUT_S, max_bytes=MAX_REPLY_BYTES)
        if status in (400, 404, 413, 422) and isinstance(answer, dict):
            raise InputError(f"{url}: {_detail(answer.get('detail'))}")
        if status != 200 or not isinstance(answer, dict):
            return None
        return _checked_hits(answer.get("hits"), k)
    except _Doubt:
        return None


def _detail(detail: Any) -> str:
    """The server's message in one bounded line (FastAPI's 422 detail is a list of errors)."""
    if isinstance(detail, list):
        detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail[:5])
    return " ".join(str(detail).split())[:500]


def _checked_hits(hits: Any, k: int) -> list[dict[str, Any]]:
    """The hits a `textitsr search` prints, each checked for the fields and types it uses."""
    if not isinstance(hits, list) or len(hits) > k:
        raise _Doubt("hits: expected a list of at most k results")
    return [_checked_hit(h) for h in hits]


def _checked_hit(hit: Any) -> dict[str, Any]:
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    ok = (
        isinstance(hit, dict)
        and isinstance(hit.get("rank"), int) and not isinstance(hit.get("rank"), bool)
        and number(hit.get("score"))
        and isinstance(hit.get("pair_id"), str) and len(hit["pair_id"]) <= 512
        and isinstance(hit.get("source"), str) and len(hit["source"]) <= 512
        and (hit.get("bounds") is None or (
            isinstance(hit["bounds"], list) and len(hit["bounds"]) == 4 and all(map(number, hit["bounds"]))))
        and isinstance(hit.get("dates"), list) and len(hit["dates"]) == 2
        and all(d is None or (isinstance(d, str) and len(d) <= 64) for d in hit["dates"])
    )
    if not ok:
        raise _Doubt("hits: a result without the expected fields")
    return hit
