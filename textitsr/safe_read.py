"""Reading files the tool did not necessarily write: regular files only, JSON bounded in depth and size.

A store, a checkpoint or a cache folder may hold a symlink to a secret, a FIFO that blocks the
first read forever, or a few kilobytes of `[[[[...` that end Python's recursive JSON parser in a
RecursionError. Everything read from such folders goes through here first.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

#: Nesting any JSON file of ours needs is far below this.
DEFAULT_MAX_DEPTH = 64
#: Largest JSON document read from a store or checkpoint (manifests, configs, tile indexes).
DEFAULT_MAX_JSON_BYTES = 64 * 2**20

_STRING_OR_BRACKET = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


class JsonDepthError(ValueError):
    """The document nests deeper than allowed."""


class NotRegularFile(OSError):
    """A path that is a link, FIFO, device or folder where a plain file was expected."""


def regular_file(path: Path) -> Path:
    """`path`, provided it is a regular file and not a symlink (raises NotRegularFile, or OSError)."""
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode) \
            else "a folder" if stat.S_ISDIR(info.st_mode) else "a device or socket"
        raise NotRegularFile(f"{path}: {kind}, expected a regular file")
    return Path(path)


def read_regular_bytes(path: Path, max_bytes: int, *, follow_symlinks: bool = False) -> bytes:
    """The bytes of a regular file, at most `max_bytes`; a FIFO or device is never read, and a
    symlink is refused unless `follow_symlinks` (then its target must be a regular file)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags if follow_symlinks else flags | os.O_NOFOLLOW)
    except OSError as err:
        if err.errno == errno.ELOOP and not follow_symlinks:
            raise NotRegularFile(f"{path}: a symlink, expected a regular file") from err
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(f"{path}: not a regular file")
        if info.st_size > max_bytes:
            raise ValueError(f"{path}: {info.st_size} bytes, expected at most {max_bytes}")
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise ValueError(f"{path}: over {max_bytes} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def nesting_depth(raw: bytes) -> int:
    """Deepest bracket nesting of a JSON document, brackets inside strings ignored."""
    depth = deepest = 0
    for match in _STRING_OR_BRACKET.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def loads_bounded(
    raw: bytes | str, *, max_depth: int = DEFAULT_MAX_DEPTH, max_bytes: int | None = None
) -> Any:
    """json.loads that refuses documents nested deeper than `max_depth` or longer than `max_bytes`.

    Raises ValueError (JsonDepthError for depth, json.JSONDecodeError for syntax, ValueError for size).
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if max_bytes is not None and len(data) > max_bytes:
        raise ValueError(f"{len(data)} bytes of JSON, expected at most {max_bytes}")
    depth = nesting_depth(data)
    if depth > max_depth:
        raise JsonDepthError(f"JSON nested {depth} levels deep, expected at most {max_depth}")
    return json.loads(data)


def read_json_file(path: Path, *, max_depth: int = DEFAULT_MAX_DEPTH,
                   max_bytes: int = DEFAULT_MAX_JSON_BYTES, follow_symlinks: bool = False) -> Any:
    """A JSON file that must be a regular file (see `read_regular_bytes`), bounded in size and depth.

    Raises OSError (missing, unreadable, not a regular file) or ValueError (size, depth, syntax,
    encoding); callers turn either into their own error naming the file.
    """
    return loads_bounded(read_regular_bytes(path, max_bytes, follow_symlinks=follow_symlinks),
                         max_depth=max_depth)


class ImageTooLarge(ValueError):
    """An image whose declared size is over the caller's pixel limit (nothing was decoded)."""


def decode_rgb(raw: bytes, formats: tuple[str, ...], max_pixels: int) -> Any:
    """uint8 H x W x 3 array of image bytes in one of `formats` (Pillow names).

    The pixel count is checked on the declared size before anything is decoded (`ImageTooLarge`:
    "W x H px, expected at most N pixels"); anything else Pillow cannot read, decompression bombs
    and huge ancillary chunks included, is a ValueError naming Pillow's error, since hostile bytes
    can make Pillow raise almost anything.
    """
    import io
    import warnings

    import numpy as np
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw), formats=formats) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageTooLarge(f"{width} x {height} px, expected at most {max_pixels} pixels")
                return np.asarray(img.convert("RGB"))
    except ImageTooLarge:
        raise
    except Exception as err:  # noqa: BLE001 - see the docstring
        raise ValueError(f"{type(err).__name__}: {err}") from err
