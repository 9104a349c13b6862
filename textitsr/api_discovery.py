"""Find a running `textitsr api` for a store, so a one-shot `textitsr search` can ask it.

A server announces itself in a small JSON file named after the store's resolved path, under the
user's cache folder; the CLI reads it, checks the process is alive and that `/health` names the same
store, and sends its query there. Standard library only: this runs before anything heavy is imported.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from textitsr.errors import InputError

#: Environment variable holding the API's bearer token (so it stays out of the process list).
TOKEN_ENV = "TEXTITSR_API_TOKEN"

#: Seconds the CLI waits for a server before falling back to loading the model itself.
PROBE_TIMEOUT_S = 0.5


def discovery_file(store: Path) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "textitsr" / "api"
    key = hashlib.sha1(str(Path(store).resolve()).encode()).hexdigest()[:16]
    return base / f"{key}.json"


@contextlib.contextmanager
def announce(store: Path, url: str) -> Iterator[None]:
    """Advertise `url` as serving `store` for as long as the block runs."""
    path = discovery_file(store)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"url": url, "pid": os.getpid(), "store": str(Path(store).resolve())}))
        tmp.replace(path)
    except OSError:  # a read-only home only costs the CLI its shortcut
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()


def running_api(store: Path) -> str | None:
    """URL of a live API server for this store, or None."""
    path = discovery_file(store)
    try:
        info = json.loads(path.read_text())
        os.kill(int(info["pid"]), 0)
        url = str(info["url"])
        with urllib.request.urlopen(f"{url}/health", timeout=PROBE_TIMEOUT_S) as resp:
            health = json.load(resp)
    except (OSError, ValueError, KeyError, TypeError, urllib.error.URLError):
        return None
    return url if health.get("store") == str(Path(store).resolve()) else None


def search_text(url: str, query: str, k: int, token: str | None = None) -> list[dict[str, Any]]:
    """POST /search/text; the server's 4xx message becomes an InputError."""
    body = json.dumps({"query": query, "k": k}).encode()
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{url}/search/text", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return json.load(resp)["hits"]
    except urllib.error.HTTPError as err:
        try:
            detail = json.load(err).get("detail")
        except ValueError:
            detail = err.reason
        raise InputError(f"{url}: {detail}") from err
