"""Caption paraphrases: the same change said in other words, for the captions of augmented views.

Why: the real pool has three captions per pair, written by a handful of people, and the text side's
probes and projection learn their wording as much as their meaning. An analyst types other words
("homes are erected on the vacant land" for "houses are built on the bare land"). A paraphrase swaps
words and phrases for ones of the same meaning in remote-sensing captions (whole words only, never
across a change of meaning: "built" never becomes "destroyed", "lake" never becomes "river"), so a
view's captions stay true for its pair. Judged under the leave-source-out protocol
(`benchmarks/real.py`, variant option `para=1`), views with paraphrased captions lost 0.6 mR to views
with their pair's own captions, so the default recipe does not use them.
"""

from __future__ import annotations

import re

import numpy as np

#: Groups of interchangeable phrases (lower case; each phrase may replace any other of its group).
#: Kept to substitutions that hold in any caption they occur in.
SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("are built", "are constructed", "are erected"),
    ("is built", "is constructed", "is erected"),
    ("appear", "emerge", "show up"),
    ("appears", "emerges", "shows up"),
    ("disappear", "vanish", "are gone"),
    ("disappears", "vanishes", "is gone"),
    ("are demolished", "are torn down", "are knocked down"),
    ("is demolished", "is torn down", "is knocked down"),
    ("are removed", "are taken away", "are cleared away"),
    ("is removed", "is taken away", "is cleared away"),
    ("are destroyed", "are wrecked", "are ruined"),
    ("is destroyed", "is wrecked", "is ruined"),
    ("houses", "homes", "residences"),
    ("house", "home", "residence"),
    ("buildings", "structures"),
    ("many", "lots of", "numerous", "plenty of"),
    ("several", "some", "a number of"),
    ("large", "big", "huge"),
    ("small", "little", "tiny"),
    ("bare land", "empty land", "vacant land", "barren land"),
    ("bareland", "empty land", "vacant land"),
    ("bare ground", "empty ground", "barren ground"),
    ("cut down", "felled", "chopped down"),
    ("forest", "woodland"),
    ("flooded", "inundated", "under water", "submerged"),
    ("area", "region", "zone"),
    ("near", "close to", "next to"),
    ("beside", "next to", "alongside"),
    ("along", "alongside"),
    ("farmland", "cropland", "agricultural land"),
    ("becomes", "turns into", "is turned into"),
    ("is replaced by", "gives way to", "is taken over by"),
    ("are replaced by", "give way to", "are taken over by"),
    ("remains the same", "stays the same", "is unchanged", "does not change"),
    ("remain the same", "stay the same", "are unchanged", "do not change"),
    ("is unchanged", "stays the same", "remains unchanged"),
    ("are unchanged", "stay the same", "remain unchanged"),
    ("there is no change", "nothing has changed", "nothing changes", "no change is visible"),
    ("no change", "no difference", "nothing new"),
    ("the two images look the same", "both images look alike", "the two dates look identical"),
    ("road", "roadway"),
    ("roads", "roadways"),
    ("streets", "lanes"),
    ("burnt", "burned", "scorched"),
    ("covers", "spreads over", "blankets"),
    ("grows", "expands", "gets larger"),
    ("larger", "bigger", "wider"),
    ("residential", "housing"),
)

_WORD = r"(?<![a-z\-]){}(?![a-z\-])"
_TABLE: list[tuple[re.Pattern[str], tuple[str, ...]]] = sorted(
    ((re.compile(_WORD.format(re.escape(p))), group) for group in SYNONYMS for p in group),
    key=lambda item: -len(item[0].pattern),
)


def paraphrase(caption: str, rng: np.random.Generator, rate: float = 0.6) -> str:
    """`caption` with each matching phrase replaced, with probability `rate`, by another of its
    group; longest phrases first, and a replaced span is never rewritten again."""
    text = caption.strip()
    lowered = text.lower()
    if len(lowered) != len(text):  # a character whose lower case is longer: match on it as is
        lowered = text
    taken = np.zeros(len(lowered) + 1, dtype=bool)
    edits: list[tuple[int, int, str]] = []
    for pattern, group in _TABLE:
        for match in pattern.finditer(lowered):
            start, end = match.span()
            if taken[start:end].any() or rng.random() >= rate:
                continue
            choices = [p for p in group if p != match.group(0)]
            if not choices:
                continue
            taken[start:end] = True
            edits.append((start, end, choices[int(rng.integers(len(choices)))]))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text
