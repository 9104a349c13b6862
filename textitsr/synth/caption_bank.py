"""Captions for generated change pairs, in LEVIR-CC's words where LEVIR-CC has them.

Why: the model must learn the language analysts (and LEVIR-CC annotators) use, not one template per
change type. The 50,385 real LEVIR-CC captions are tagged once by keywords (what appears, what
disappears); a generated pair of a given change type draws real captions whose tags match that type
exactly and whose count and place words do not contradict what was changed, mixed with templated
sentences that state the type, the rough count and the place ("in the top left"). Types LEVIR-CC
hardly covers (water, vegetation growth) are written from templates only.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from textitsr.errors import InputError

BUILDING = (
    r"(houses?|buildings?|villas?|residential|apartments?|mansions?|structures?|factor(?:y|ies)|warehouses?"
    r"|blocks?|bungalows?|cottages?|longhouses?|rooms?|towers?|malls?|containers?|constructions|facilities)"
)
#: Things that are none of the change types: a caption naming them as changed fits no type exactly.
OTHER = (
    r"(parking lots?|construction sites?|fields?|tracks?|footpaths?|squares?|floors?|playgrounds?|courts?"
    r"|dams?|grounds?|parks?|bridges?|ditch(?:es)?|cars?|vehicles?|lots?)"
)
#: A noun right after one of these names a place ("built on the grass"), not what changed.
_LOCATIVE = (
    r"\b(on|in|at|beside|near|around|among|along|by|of|into|from|through|across|between|within|over"
    r"|under|behind|to|inside)\s+(the\s+|a\s+|an\s+|this\s+|some\s+)?(\w+\s+)?$"
)
ROAD = (
    r"(roads?|streets?|paths?|lanes?|highways?|roundabouts?|driveways?|crossroads?|intersections?"
    r"|bypass(?:es)?|trails?)"
)
VEGETATION = r"(trees?|woods?|forests?|plants?|vegetation|grass(land)?|shrubs?|bushes|greenery)"
WATER = r"(lakes?|ponds?|water|rivers?|reservoirs?)"
NEW = (
    r"(built|constructed|appears?|appeared|added|emerges?|erected|established|paved|new|completed|rebuilt"
    r"|set up|situated|arises?|occur)"
)
GONE = (
    r"(removed|disappears?|disappeared|demolished|torn down|cut|cleared|gone|destroyed|dried|vanish(ed|es)?"
    r"|knocked down)"
)
GROWN = r"(grows?|grown|planted|lusher|turns? green|more trees)"

#: Tags a change type's captions must carry, exactly (sets of "noun_new"/"noun_gone").
TYPE_TAGS: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "buildings_built": frozenset({"building_new"}),
    "buildings_demolished": frozenset({"building_gone"}),
    "road_built": frozenset({"road_new"}),
    "vegetation_cleared": frozenset({"vegetation_gone"}),
    "vegetation_grown": frozenset({"vegetation_new"}),
    "water_expanded": frozenset({"water_new"}),
    "water_receded": frozenset({"water_gone"}),
    "road_and_buildings_built": frozenset({"road_new", "building_new"}),
    "vegetation_cleared_for_buildings": frozenset({"vegetation_gone", "building_new"}),
}

_COUNT_WORDS = {
    1: r"\b(a|an|one|single)\b",
    2: r"\b(two|pair|both)\b",
    3: r"\b(three)\b",
    5: r"\b(several|some|few|four|five|six)\b",
    9: r"\b(many|rows?|lots|large number|dense|neatly|residential area|a number of|numerous|lines of)\b",
}
_PLACE_WORDS = {
    "top": r"\b(top|upper|above)\b",
    "bottom": r"\b(bottom|lower|below)\b",
    "left": r"\b(left)\b",
    "right": r"\b(right)\b",
    "center": r"\b(center|centre|middle)\b",
}


def caption_tags(caption: str) -> frozenset[str]:
    """What a caption says appeared or disappeared, e.g. {'vegetation_gone', 'building_new'}.

    Clauses are split on "and"/commas; "X replaced by Y" means X gone and Y new. A clause that names
    things without a verb ("... and many villas around") takes the previous clause's verb.
    """
    tags: set[str] = set()
    nouns = {"building": BUILDING, "road": ROAD, "vegetation": VEGETATION, "water": WATER, "other": OTHER}

    def named(pat: str, text: str) -> bool:
        return any(not re.search(_LOCATIVE, text[: m.start()]) for m in re.finditer(rf"\b{pat}\b", text))

    def mark(text: str, verb: str) -> None:
        for name, pat in nouns.items():
            if named(pat, text):
                tags.add(f"{name}_new" if verb == "grown" and name == "vegetation" else f"{name}_{verb}")

    text = re.sub(r"swimming pools?|pools?", "", caption.lower())
    text = re.sub(
        r"\b(an?\s+)?(rows?|lines?|groups?|number|parts?|some|many|most|half|ring|circle|piece)\s+of\b",
        " ",
        text,
    )
    clauses, verbs = [], []
    for clause in re.split(r"\band\b|,|\bwhile\b|\bwith\b", text):
        passive = re.split(r"replaced by|replace[sd]? by|turned into|turns? into", clause)
        active = re.split(r"\breplac(?:e|es|ing|ed)\b|in replace of|instead of", clause)
        if len(passive) > 1:
            mark(passive[0], "gone")
            mark("".join(passive[1:]), "new")
            clauses.append("")
            verbs.append("new")
            continue
        if len(active) > 1:
            mark(active[0], "new")
            mark("".join(active[1:]), "gone")
            clauses.append("")
            verbs.append("new")
            continue
        verb = (
            "gone" if re.search(rf"\b{GONE}", clause) else "new" if re.search(rf"\b{NEW}\b", clause) else ""
        )
        clauses.append(clause)
        verbs.append("grown" if verb != "gone" and re.search(rf"\b{GROWN}", clause) else verb)
    for i, clause in enumerate(clauses):  # "a road and some trees disappear": the verb comes later
        verb = (
            verbs[i]
            or next((v for v in verbs[i + 1 :] if v), "")
            or next((v for v in verbs[:i][::-1] if v), "")
        )
        if verb:
            mark(clause, verb)
    return frozenset(t for t in tags if not t.endswith("_grown"))


def count_fits(bucket: int | None, said: int | None) -> bool:
    """Whether a caption's count class `said` (0: an unspecified plural) fits the true `bucket`."""
    if bucket is None or said is None:
        return True
    return said == bucket or (said == 0 and bucket > 1)


def count_bucket(count: int | None) -> int | None:
    """The count word class of a number of objects: 1, 2, 3, 5 (several) or 9 (many)."""
    if count is None:
        return None
    return 1 if count <= 1 else 2 if count == 2 else 3 if count == 3 else 5 if count <= 6 else 9


def caption_count(caption: str) -> int | None:
    """The count class of the first building noun's count word ("two new villas" -> 2); 0 for a
    plural without one ("new villas"); None when no building is named."""
    m = re.search(rf"(\b\w+\s+)?(\b\w+\s+)?\b{BUILDING}\b", caption)
    if not m:
        return None
    before = "".join(g for g in m.groups()[:2] if g)
    words = [(mm.start(), k) for k, pat in _COUNT_WORDS.items() for mm in [re.search(pat, before)] if mm]
    if words:
        return min(words)[1]
    plural = m.group(3).endswith("s") or m.group(3) == "residential"
    return 0 if plural else None


def place_of(mask: np.ndarray) -> str | None:
    """Where a change mask lies, in LEVIR-CC words ("in the top left"); None when it spreads widely."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    h, w = mask.shape
    cy, cx = ys.mean() / h, xs.mean() / w
    spread = max(np.ptp(ys) / h, np.ptp(xs) / w)
    if spread > 0.7:
        return None
    row = "top" if cy < 0.38 else "bottom" if cy > 0.62 else ""
    col = "left" if cx < 0.38 else "right" if cx > 0.62 else ""
    if row and col:
        return f"in the {row} {col}"
    if row or col:
        return f"at the {row or col}"
    return "in the center"


def caption_place_ok(caption: str, place: str | None) -> bool:
    """False when the caption names a place that contradicts `place`."""
    said = {k for k, pat in _PLACE_WORDS.items() if re.search(pat, caption)}
    if not said:
        return True
    if place is None:
        return False
    where = set(place.replace("in the ", "").replace("at the ", "").split())
    opposite = {"top": "bottom", "bottom": "top", "left": "right", "right": "left"}
    return not any(opposite.get(w) in said for w in where) and (said - {"center"}) <= where | {"center"}


_TEMPLATES: dict[str, tuple[str, ...]] = {
    "buildings_built": (
        "{n} {houses} {are} built {place}",
        "{n} new {buildings} {appear} {place}",
        "{n} {houses} {have} been constructed on the bare land {place}",
        "{n} {buildings} {are} added {place}",
    ),
    "buildings_demolished": (
        "{n} {houses} {are} demolished {place}",
        "{n} {buildings} {have} disappeared {place}",
        "{n} {buildings} {are} torn down and only bare ground is left {place}",
        "{n} {houses} {are} removed {place}",
        "{n} {buildings} {are} destroyed {place}",
    ),
    "road_built": (
        "a new road is built {place}",
        "a road appears {place}",
        "a road is constructed across the scene",
        "a new path is paved {place}",
    ),
    "vegetation_cleared": (
        "the trees {place} are cut down",
        "the forest {place} is cleared",
        "some trees are removed {place}",
        "the vegetation {place} is cleared and bare land is left",
        "the woods {place} disappear",
    ),
    "vegetation_grown": (
        "trees grow on the bare land {place}",
        "the vegetation grows {place}",
        "the bare land {place} is covered by trees",
        "more trees are planted {place}",
    ),
    "water_expanded": (
        "the lake becomes larger",
        "the water expands {place}",
        "the pond grows {place}",
        "water covers more of the land {place}",
        "the land {place} is flooded",
    ),
    "water_receded": (
        "the lake becomes smaller",
        "the water recedes {place}",
        "the pond shrinks {place}",
        "the water area {place} dries up",
    ),
    "road_and_buildings_built": (
        "a road is built and {n} {houses} {are} built along it {place}",
        "{n} {houses} and a road appear {place}",
        "a new road with {n} {buildings} is built {place}",
    ),
    "vegetation_cleared_for_buildings": (
        "trees are cut down and {n} {houses} {are} built {place}",
        "{n} {buildings} {appear} where the trees were {place}",
        "the woods {place} are replaced by {n} {houses}",
    ),
    "none": (
        "there is no difference",
        "the two scenes seem identical",
        "the scene is the same as before",
        "no change has occurred",
        "almost nothing has changed",
        "the buildings and roads remain the same",
        "nothing has changed except the lighting",
        "the scene is unchanged apart from the colour of the vegetation",
        "the trees and the fields remain unchanged",
        "no new buildings or roads appear",
    ),
}
_NUMBERS = {1: "a", 2: "two", 3: "three", 4: "four", 5: "five", 6: "several", 7: "many"}


def template_caption(change_type: str, count: int | None, place: str | None, rng: np.random.Generator) -> str:
    """One templated LEVIR-CC-style sentence for a change of `change_type`."""
    if change_type not in _TEMPLATES:
        raise InputError(f"change type {change_type!r}: expected one of {sorted(_TEMPLATES)}")
    one = count == 1
    n = _NUMBERS.get(min(count or 6, 7), "several")
    words = {
        "n": n if n != "a" else "a",
        "place": place or "",
        "are": "is" if one else "are",
        "have": "has" if one else "have",
        "appear": "appears" if one else "appear",
        "houses": "house" if one else rng.choice(["houses", "villas"]),
        "buildings": "building" if one else "buildings",
    }
    text = str(rng.choice(_TEMPLATES[change_type])).format(**words)
    return re.sub(r"\s+", " ", text).strip()


class CaptionBank:
    """LEVIR-CC captions grouped by change type (by their tags), for drawing real wording."""

    def __init__(self, by_type: dict[str, list[str]]) -> None:
        self.by_type = {k: sorted(set(v)) for k, v in by_type.items()}

    @classmethod
    def from_levircc(cls, path: Path) -> CaptionBank:
        """Tag every caption of a LEVIR-CC caption file (official schema) once."""
        from textitsr.data.levircc import parse_caption_json

        records = parse_caption_json(Path(path))
        wanted = {tags: name for name, tags in TYPE_TAGS.items()}
        by_type: dict[str, list[str]] = defaultdict(list)
        for rec in records:
            for cap in rec.captions:
                if rec.changed is False:
                    by_type["none"].append(cap)
                    continue
                name = wanted.get(caption_tags(cap))
                if name and name != "none":
                    by_type[name].append(cap)
        return cls(dict(by_type))

    @classmethod
    def empty(cls) -> CaptionBank:
        return cls({})

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in sorted(self.by_type.items())}

    def draw(
        self,
        change_type: str,
        count: int | None,
        place: str | None,
        rng: np.random.Generator,
        n: int = 5,
        n_real: int = 3,
    ) -> list[str]:
        """`n` distinct captions: up to `n_real` real ones that fit (type, count, place), then templates."""
        bucket = count_bucket(count)
        pool = self.by_type.get(change_type, [])
        out: list[str] = []
        if pool:
            for i in rng.permutation(len(pool))[: 40 * n_real]:
                cap = pool[int(i)]
                said = caption_count(cap)
                if count_fits(bucket, said) and caption_place_ok(cap, place):
                    out.append(cap)
                if len(out) >= n_real:
                    break
        tries = 0
        while len(out) < n and tries < 50:
            cap = template_caption(change_type, count, place, rng)
            if cap not in out:
                out.append(cap)
            tries += 1
        return out


def write_bank(bank: CaptionBank, path: Path) -> None:
    """The tagged bank as JSON (to inspect what the keywords picked)."""
    Path(path).write_text(json.dumps(bank.by_type, indent=1) + "\n", encoding="utf-8")
