"""LEVIR-CC (Liu et al., 2022): 10,077 bitemporal 256x256 RGB pairs of Texas cities, 5 captions each.

Official layout (research use; see the dataset's terms)::

    ROOT/LevirCCcaptions.json        {"images": [{"filename", "filepath"|"split", "changeflag",
                                                  "sentences": [{"raw", "tokens"}, ...]}, ...]}
    ROOT/images/{train,val,test}/A/<filename>   before
    ROOT/images/{train,val,test}/B/<filename>   after

Raw captions of the public copy carry a leading space and a detached " ." ("  there is no difference
."); they are cleaned to "there is no difference". The caption JSON parser here also serves
Dubai-CCD, which uses the same (Karpathy-style) schema.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from textitsr.data.captioned import CaptionedPairSource, PairFiles
from textitsr.data.pairs import SPLITS
from textitsr.errors import InputError

CAPTIONS_FILE = "LevirCCcaptions.json"
_SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass(frozen=True)
class CaptionRecord:
    """One entry of a caption JSON: which image, which split, its cleaned captions, change flag."""

    filename: str
    split: str
    folder: str
    captions: tuple[str, ...]
    changed: bool | None


def clean_caption(raw: str) -> str:
    """Strip the spacing/punctuation artefacts: ' a house is built .' -> 'a house is built'."""
    text = re.sub(r"\s+", " ", raw).strip()
    text = re.sub(r"\s+([.,;:!?])", r"\1", text)
    return text.rstrip(" .")


def parse_caption_json(path: Path) -> list[CaptionRecord]:
    """Parse a LEVIR-CC/Dubai-CCD style caption file, checking the schema field by field."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: caption file not found")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise InputError(f"{path}: expected a JSON object with an 'images' list")
    records = []
    for i, item in enumerate(doc["images"]):
        where = f"{path}: images[{i}]"
        if not isinstance(item, dict):
            raise InputError(f"{where}: expected an object, got {type(item).__name__}")
        filename = item.get("filename")
        if not isinstance(filename, str) or not filename:
            raise InputError(f"{where}: missing 'filename' (expected a file name string)")
        split_raw = item.get("split", item.get("filepath"))
        split = _SPLIT_ALIASES.get(str(split_raw).lower()) if split_raw is not None else None
        if split is None:
            raise InputError(f"{where} ({filename}): 'split' is {split_raw!r}; expected one of {SPLITS}")
        folder = str(item.get("filepath", split))
        sentences = item.get("sentences")
        if not isinstance(sentences, list):
            raise InputError(f"{where} ({filename}): missing 'sentences' (expected a list)")
        captions = []
        for j, sent in enumerate(sentences):
            raw = sent.get("raw") if isinstance(sent, dict) else None
            if raw is None and isinstance(sent, dict) and isinstance(sent.get("tokens"), list):
                raw = " ".join(map(str, sent["tokens"]))
            if not isinstance(raw, str):
                raise InputError(f"{where} ({filename}): sentences[{j}] needs 'raw' text or a 'tokens' list")
            if cleaned := clean_caption(raw):
                captions.append(cleaned)
        flag = item.get("changeflag")
        records.append(
            CaptionRecord(filename, split, folder, tuple(captions), None if flag is None else bool(flag))
        )
    return records


class LevirCCSource(CaptionedPairSource):
    """Pairs of a LEVIR-CC root (or any dataset exported in its layout, e.g. the synthetic world).

    `on_missing="error"` (default) raises an InputError naming the first missing image file;
    `"skip"` leaves pairs whose images are missing out (`len()` then counts only complete pairs).
    """

    name = "levircc"

    def __init__(self, root: Path, captions_file: Path | None = None, on_missing: str = "error") -> None:
        self.captions_file = Path(captions_file) if captions_file else Path(root) / CAPTIONS_FILE
        super().__init__(root, on_missing=on_missing)

    def _load_files(self) -> list[PairFiles]:
        if not self.captions_file.is_file():
            raise InputError(
                f"{self.captions_file}: LEVIR-CC caption file not found (expected {CAPTIONS_FILE})"
            )
        files = []
        for rec in parse_caption_json(self.captions_file):
            base = self.root / "images" / rec.folder
            files.append(
                PairFiles(
                    base / "A" / rec.filename,
                    base / "B" / rec.filename,
                    rec.captions,
                    rec.split,
                    rec.changed,
                    listed_in=self.captions_file.name,
                )
            )
        return files
