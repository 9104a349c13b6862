"""Generic pairs folder: the simplest way to bring your own before/after images.

Layout::

    ROOT/before/<name>.<png|jpg|tif>    ROOT/after/<name>.<same ext>     (matching file names)
    ROOT/captions.csv     header "filename,caption[,split]"; several rows per file allowed   (optional)
    ROOT/captions.jsonl   {"filename": ..., "captions": [...], "split": ...} per line          (optional)
    ROOT/pairs.jsonl      {"name": ..., "source": ...} per line (or "dataset"): the sensor or
                          series each pair comes from, read as its archive                     (optional)

Captions are optional (pairs without any get an empty list, e.g. for archives to be pseudo-captioned
by `describe.py`). A caption row for a file that is not in before/ is an error, as is an image in one
folder without its partner (or `on_missing="skip"`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from textitsr.data.captioned import CaptionedPairSource, PairFiles
from textitsr.data.imageio import IMAGE_SUFFIXES
from textitsr.data.pairs import SPLITS
from textitsr.errors import InputError


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(
            f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); expected a UTF-8 encoded file"
        ) from err
    except OSError as err:
        raise InputError(f"{path}: cannot be read ({err.strerror or err})") from err


def _read_csv(path: Path) -> list[tuple[str, str, str | None, int]]:
    rows = []
    with io.StringIO(_read_utf8(path), newline="") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip().lower() for c in reader.fieldnames or []]
        if "filename" not in cols or "caption" not in cols:
            raise InputError(
                f"{path}: header {reader.fieldnames}; expected columns 'filename,caption[,split]'"
            )
        reader.fieldnames = cols
        for line, row in enumerate(reader, start=2):
            name, text = (row.get("filename") or "").strip(), (row.get("caption") or "").strip()
            if not name:
                raise InputError(f"{path}:{line}: empty 'filename'")
            rows.append((name, text, (row.get("split") or "").strip() or None, line))
    return rows


def jsonl_objects(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of every non-blank line of a JSON-lines file."""
    for line, text in enumerate(_read_utf8(Path(path)).splitlines(), start=1):
        if not text.strip():
            continue
        try:
            yield line, json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}:{line}: not valid JSON ({err})") from err


def _read_jsonl(path: Path) -> list[tuple[str, str, str | None, int]]:
    rows = []
    for line, obj in jsonl_objects(path):
        caps = (
            obj.get("captions", [obj["caption"]] if "caption" in obj else None)
            if isinstance(obj, dict)
            else None
        )
        if (
            not isinstance(obj, dict)
            or not isinstance(obj.get("filename"), str)
            or not isinstance(caps, list)
        ):
            raise InputError(f'{path}:{line}: expected {{"filename": "...", "captions": ["...", ...]}}')
        for cap in caps:
            if not isinstance(cap, str):
                raise InputError(f"{path}:{line}: captions must be strings, got {cap!r}")
            rows.append((obj["filename"], cap.strip(), obj.get("split"), line))
        if not caps:
            rows.append((obj["filename"], "", obj.get("split"), line))
    return rows


#: The pairs.jsonl fields that name a pair's archive, first present wins.
ARCHIVE_FIELDS = ("source", "dataset")


def read_archives(path: Path, names: list[str]) -> dict[str, str]:
    """{image name: archive} of the pairs.jsonl records that name the sensor, series or dataset a
    pair comes from (`ARCHIVE_FIELDS`); a record may name the image with or without its suffix."""
    known, by_stem = set(names), {Path(n).stem: n for n in names}
    out = {}
    for line, obj in jsonl_objects(path):
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            raise InputError(f'{path}:{line}: expected {{"name": "<image name>", "source": "...", ...}}')
        name = obj["name"] if obj["name"] in known else by_stem.get(obj["name"])
        for key in ARCHIVE_FIELDS:
            value = obj.get(key)
            if value is None:
                continue
            if not isinstance(value, str) or not value.strip():
                raise InputError(f'{path}:{line}: "{key}" must be a non-empty string, got {value!r}')
            if name is not None:
                out[name] = value.strip()
            break
    return out


class FolderSource(CaptionedPairSource):
    """Pairs from ROOT/before + ROOT/after with optional captions.csv / captions.jsonl and the
    optional pairs.jsonl that names each pair's source."""

    name = "folder"

    def _load_files(self) -> list[PairFiles]:
        before_dir, after_dir = self.root / "before", self.root / "after"
        for d in (before_dir, after_dir):
            if not d.is_dir():
                raise InputError(
                    f"{d}: folder not found; expected ROOT/before/ and ROOT/after/ with matching names"
                )
        before = {p.name for p in before_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        after = {p.name for p in after_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        unmatched = sorted(before ^ after)
        if unmatched and self.on_missing != "skip":
            name = unmatched[0]
            have, lacks = (before_dir, after_dir) if name in before else (after_dir, before_dir)
            raise InputError(
                f"{lacks / name}: missing (its partner {have / name} exists); expected matching names"
            )
        names = sorted(before & after)
        if not names:
            raise InputError(
                f"{self.root}: no image pairs in before/ and after/ (expected {', '.join(IMAGE_SUFFIXES)})"
            )
        captions, splits = self._read_captions(names)
        listing = self.root / "pairs.jsonl"
        archives = read_archives(listing, names) if listing.is_file() else {}
        return [
            PairFiles(before_dir / n, after_dir / n, tuple(captions[n]), splits[n], archive=archives.get(n))
            for n in names
        ]

    def _read_captions(self, names: list[str]) -> tuple[dict[str, list[str]], dict[str, str | None]]:
        """Captions and split of every image name, from captions.csv and/or captions.jsonl."""
        captions: dict[str, list[str]] = {n: [] for n in names}
        splits: dict[str, str | None] = {n: None for n in names}
        csv_path, jsonl_path = self.root / "captions.csv", self.root / "captions.jsonl"
        rows = []
        if csv_path.is_file():
            rows += [(csv_path, *r) for r in _read_csv(csv_path)]
        if jsonl_path.is_file():
            rows += [(jsonl_path, *r) for r in _read_jsonl(jsonl_path)]
        for path, name, text, split, line in rows:
            if name not in captions:
                raise InputError(f"{path}:{line}: '{name}' is not an image in before/ and after/")
            if split is not None:
                if split not in SPLITS:
                    raise InputError(f"{path}:{line}: split {split!r}; expected one of {SPLITS}")
                splits[name] = split
            if text:
                captions[name].append(text)
        return captions, splits
