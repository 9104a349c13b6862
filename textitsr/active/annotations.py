"""The annotation log: one JSON object per line, appended as the analyst works; rounds resume from it.

Three kinds of record, all with `round` and `when` (UTC ISO time):

- `{"kind": "batch", "pairs": [[a, b], ...], "strategy": ...}` a round's proposed item pairs;
- `{"kind": "label", "a": ..., "b": ..., "label": "similar"|"dissimilar"|"skip", "who": ...}`;
- `{"kind": "update", "checkpoint": ..., "n_labels": ..., "metrics": {...}}` a fine-tune.

Items are archive pair ids (strings), so the log survives re-embedding and store rebuilds.

Unlike other files, the log is appended to (O_APPEND, one write per record, fsync) rather than
rewritten through `textitsr.atomic`: appends from two app sessions then cannot lose each other's
lines, and a crash can at worst tear the last line, which the reader ignores.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from textitsr.config import MAX_ANNOTATION_LOG_BYTES
from textitsr.errors import InputError

LABELS = ("similar", "dissimilar", "skip")
LOG_NAME = "annotations.jsonl"


@dataclass(frozen=True)
class Annotation:
    """One answer of the analyst about the item pair (a, b)."""

    a: str
    b: str
    label: str
    who: str
    when: str
    round: int

    @property
    def key(self) -> tuple[str, str]:
        return pair_key(self.a, self.b)

    @property
    def similar(self) -> bool:
        return self.label == "similar"


def pair_key(a: str, b: str) -> tuple[str, str]:
    """Unordered pair identity: (a, b) and (b, a) are the same question."""
    return (a, b) if a <= b else (b, a)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _record_problem(rec: Any) -> str | None:
    """What is wrong with one parsed log record (None: nothing), checked before any field is used."""
    if not isinstance(rec, dict) or rec.get("kind") not in ("batch", "label", "update"):
        return "expected a batch/label/update record"
    if not _is_int(rec.get("round", 0)) or rec.get("round", 0) < 0:
        return "expected `round` to be a whole number >= 0"
    kind = rec["kind"]
    if kind == "batch":
        pairs = rec.get("pairs")
        ok = isinstance(pairs, list) and all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs
        )
        return None if ok else "expected a batch's `pairs` to be a list of [id, id] string pairs"
    if kind == "label":
        if not all(isinstance(rec.get(k), str) for k in ("a", "b")):
            return "expected a label's `a` and `b` to be pair ids (strings)"
        if rec.get("label") not in LABELS:
            return f"expected a label's `label` to be one of {', '.join(LABELS)}"
        if not all(isinstance(rec.get(k, ""), str) for k in ("who", "when")):
            return "expected a label's `who` and `when` to be strings"
        return None
    metrics = rec.get("metrics", {})
    if not _is_int(rec.get("n_labels", 0)) or not isinstance(metrics, dict):
        return "expected an update's `n_labels` to be a whole number and `metrics` an object"
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in metrics.values()):
        return "expected an update's `metrics` to be numbers"
    return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class AnnotationLog:
    """Append-only JSONL log of proposed batches, labels and model updates (see module doc)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        self.path = path / LOG_NAME if path.is_dir() or path.suffix == "" else path

    def _append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size and not self._ends_with_newline():
                line = b"\n" + line  # a torn last line stays alone on its line
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"

    def propose(self, pairs: list[tuple[str, str]], strategy: str, round: int | None = None) -> int:
        """Record a new round's batch; returns its round number (1-based)."""
        if not pairs:
            raise InputError("batch: expected at least one item pair to propose")
        round = self.current_round() + 1 if round is None else round
        self._append(
            {
                "kind": "batch",
                "round": round,
                "strategy": strategy,
                "when": _now(),
                "pairs": [[str(a), str(b)] for a, b in pairs],
            }
        )
        return round

    def label(self, a: str, b: str, label: str, who: str = "analyst", round: int | None = None) -> Annotation:
        """Record the analyst's answer about (a, b); a later answer about the same pair wins."""
        if label not in LABELS:
            raise InputError(f"label: expected one of {', '.join(LABELS)}, got {label!r}")
        if a == b:
            raise InputError(f"label: an item pair needs two different items, got {a!r} twice")
        ann = Annotation(str(a), str(b), label, who, _now(), self.current_round() if round is None else round)
        self._append(
            {
                "kind": "label",
                "a": ann.a,
                "b": ann.b,
                "label": label,
                "who": who,
                "when": ann.when,
                "round": ann.round,
            }
        )
        return ann

    def record_update(self, checkpoint: str, n_labels: int, metrics: dict[str, float]) -> None:
        """Record that the model was fine-tuned on `n_labels` labels (metrics plotted over rounds)."""
        self._append(
            {
                "kind": "update",
                "round": self.current_round(),
                "when": _now(),
                "checkpoint": str(checkpoint),
                "n_labels": int(n_labels),
                "metrics": {k: float(v) for k, v in metrics.items()},
            }
        )

    def records(self) -> list[dict[str, Any]]:
        """All records in order; a torn line (crash mid-append) is skipped, any other bad line raises
        an InputError naming the file and line (a log is read whole, so its size is bounded)."""
        if not self.path.exists():
            return []
        if not self.path.is_file():
            raise InputError(f"{self.path}: not a regular file; expected the annotation log (JSON lines)")
        size = self.path.stat().st_size
        if size > MAX_ANNOTATION_LOG_BYTES:
            raise InputError(
                f"{self.path}: {size / 2**20:.0f} MB is over the {MAX_ANNOTATION_LOG_BYTES / 2**20:.0f} MB "
                "limit for an annotation log (textitsr.config.MAX_ANNOTATION_LOG_BYTES)"
            )
        out = []
        for i, raw in enumerate(self.path.read_bytes().split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"{self.path}:{i}: not UTF-8 text; expected one JSON record") from None
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                # a crash mid-append tears one line; its successor then starts on a fresh line
                continue
            except RecursionError:
                raise InputError(f"{self.path}:{i}: JSON nested too deeply; expected a flat record") from None
            problem = _record_problem(rec)
            if problem:
                raise InputError(f"{self.path}:{i}: {problem}, got {line[:80]!r}")
            out.append(rec)
        return out

    def annotations(self) -> list[Annotation]:
        """Every label record, in order (including skips and overridden answers)."""
        return [
            Annotation(
                r["a"], r["b"], r["label"], r.get("who", ""), r.get("when", ""), int(r.get("round", 0))
            )
            for r in self.records()
            if r["kind"] == "label"
        ]

    def latest(self) -> dict[tuple[str, str], Annotation]:
        """The last answer per unordered item pair."""
        return {ann.key: ann for ann in self.annotations()}

    def labelled(self) -> list[Annotation]:
        """The current similar/dissimilar answers (skips and superseded answers dropped)."""
        return [a for a in self.latest().values() if a.label != "skip"]

    def skipped(self) -> list[tuple[str, str]]:
        return [k for k, a in self.latest().items() if a.label == "skip"]

    def current_round(self) -> int:
        rounds = [int(r["round"]) for r in self.records() if r["kind"] == "batch"]
        return max(rounds, default=0)

    def batch(self, round: int | None = None) -> list[tuple[str, str]]:
        """The item pairs proposed in a round (default: the current one)."""
        round = self.current_round() if round is None else round
        for rec in reversed(self.records()):
            if rec["kind"] == "batch" and int(rec["round"]) == round:
                return [(str(a), str(b)) for a, b in rec["pairs"]]
        return []

    def pending(self) -> list[tuple[str, str]]:
        """Pairs of the current round not answered yet: where a resumed session picks up."""
        answered = set(self.latest())
        return [p for p in self.batch() if pair_key(*p) not in answered]

    def updates(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["kind"] == "update"]
