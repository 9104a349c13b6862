"""A simulated analyst for benchmarks and tests: two items are similar iff they share a change type."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from textitsr.data.pairs import PairSource
from textitsr.errors import InputError


class SimulatedOracle:
    """Answers "similar?" for two item ids from their ground-truth change types (synthetic world)."""

    name = "simulated"

    def __init__(self, change_types: Mapping[str, str | None]) -> None:
        self.change_types = dict(change_types)

    @classmethod
    def from_source(cls, source: PairSource, split: str | None = None) -> SimulatedOracle:
        """Read the change types of a source's pairs (pixels are read too; use on small worlds)."""
        return cls({p.pair_id: p.change_type for p in source.pairs(split)})

    @classmethod
    def from_records(cls, records: Iterable[Mapping]) -> SimulatedOracle:
        """From metadata rows carrying `pair_id` and `change_type` (e.g. `SearchService.pair`)."""
        return cls({str(r["pair_id"]): r.get("change_type") for r in records})

    def knows(self, item_id: str) -> bool:
        """Whether this oracle can judge `item_id` (it has a ground-truth change type)."""
        return self.change_types.get(item_id) is not None

    def change_type(self, item_id: str) -> str:
        kind = self.change_types.get(item_id)
        if kind is None:
            raise InputError(
                f"simulated oracle: item {item_id!r} has no ground-truth change_type; "
                "the simulated oracle needs a synthetic world (or another source with change types)"
            )
        return kind

    def __call__(self, a: str, b: str) -> bool:
        return self.change_type(a) == self.change_type(b)
