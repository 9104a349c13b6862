"""Caption language of the synthetic world: LEVIR-CC-style sentences grounded in a tile's change event.

The generator in `textitsr.synth.world` records the facts of each event (what changed, how many
objects, where in the tile, what the ground was before); this module turns them into five varied,
lower-case sentences in the register of the LEVIR-CC captions ("several houses are built on the
bareland at the top left", "a road appears in the woods", "there is no difference"). Phrasing is
drawn from a seeded generator, so the same facts and seed always give the same captions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CAPTIONS_PER_PAIR = 5

#: Where an event sits in its tile, from the event mask (see `place_of_mask`).
PLACES: dict[str, tuple[str, ...]] = {
    "top_left": ("at the top left", "in the upper left corner", "at the top left corner of the scene",
                 "on the upper left"),
    "top_right": ("at the top right", "in the upper right corner", "at the top right corner of the scene",
                  "on the upper right"),
    "bottom_left": ("at the bottom left", "in the lower left corner", "in the lower-left corner of the scene",
                    "on the bottom left"),
    "bottom_right": ("at the bottom right", "in the lower right corner",
                     "in the lower-right corner of the scene", "on the bottom right"),
    "top": ("at the top", "in the upper part of the scene", "at the top of the scene", "on the upper side"),
    "bottom": ("at the bottom", "in the lower part of the scene", "at the bottom of the scene",
               "on the lower side"),
    "left": ("on the left", "on the left side", "on the left side of the scene", "in the left part"),
    "right": ("on the right", "on the right side", "on the right side of the scene", "in the right part"),
    "center": ("in the middle", "in the center of the scene", "in the middle of the scene", "in the center"),
    "whole": ("across the scene", "all over the scene", "throughout the area", "over most of the scene"),
}

#: What the ground under an event was (before) or becomes (after).
COVERS: dict[str, tuple[str, ...]] = {
    "bareland": ("on the bareland", "on the bare ground", "on the open space", "on the wasteland"),
    "grass": ("on the grass", "on the meadow", "on the grassland", "on the lawn"),
    "trees": ("in the woods", "in the forest", "among the trees", "in the woodland"),
}
COVER_NOUNS: dict[str, tuple[str, ...]] = {
    "bareland": ("the bareland", "the bare ground", "the open space"),
    "grass": ("the grass", "the meadow", "the grassland"),
    "trees": ("the trees", "the woods", "the forest"),
}

NO_CHANGE_SENTENCES = (
    "there is no difference",
    "the two scenes seem identical",
    "the scene is the same as before",
    "no change has occurred",
    "almost nothing has changed",
    "nothing has changed",
    "the two images look the same",
    "there is no change in the scene",
    "the scene remains unchanged",
    "no obvious change can be seen",
)

NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


def place_of_mask(mask: np.ndarray) -> str:
    """Name the part of the tile a boolean mask occupies (a key of `PLACES`)."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return "whole"
    h, w = mask.shape
    if (xs.max() - xs.min()) > 0.75 * w and (ys.max() - ys.min()) > 0.75 * h:
        return "whole"
    cx, cy = xs.mean() / w, ys.mean() / h
    col = "left" if cx < 0.38 else "right" if cx > 0.62 else ""
    row = "top" if cy < 0.38 else "bottom" if cy > 0.62 else ""
    if row and col:
        return f"{row}_{col}"
    return row or col or "center"


def _count_phrase(rng: np.random.Generator, n: int, noun: str, definite: bool = False) -> str:
    """'a house' / 'two villas' / 'several buildings' / 'many houses' (LEVIR-CC counting habits)."""
    if n < 1:  # the generator guarantees objects; a count of 0 is a bug upstream, not a phrase
        raise ValueError(f"count of {noun}s: expected >= 1, got {n}")
    plural = noun + "s"
    if n == 1:
        options = [f"the {noun}"] if definite else [f"a {noun}", f"a new {noun}", f"one {noun}"]
    elif n <= 3:
        options = [f"{NUMBERS[n]} {plural}"] + ([f"the {NUMBERS[n]} {plural}"] if definite else [])
    elif n <= 5:
        options = [f"several {plural}", f"some {plural}", f"{NUMBERS[n]} {plural}", f"a few {plural}"]
    else:
        options = [f"many {plural}",
                   f"a group of {plural}", f"lots of {plural}", f"{NUMBERS.get(n, str(n))} {plural}"]
    return str(rng.choice(options))


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return str(rng.choice(list(options)))


def _cover_is(rng: np.random.Generator, cover: str, place: str) -> str:
    """'the forest at the top is' / 'the trees at the top are': the verb agrees with the noun drawn."""
    noun = _pick(rng, COVER_NOUNS[cover])
    return f"{noun} {place} {'are' if noun in ('the trees', 'the woods') else 'is'}"


def _buildings(rng: np.random.Generator, f: dict[str, Any], built: bool) -> list[str]:
    n = int(f["count"])
    noun = lambda: _pick(rng, ("house", "building", "villa", "house"))  # noqa: E731
    be = "is" if n == 1 else "are"
    have = "has" if n == 1 else "have"
    appear = "appears" if n == 1 else "appear"
    place = lambda: _pick(rng, PLACES[f["place"]])  # noqa: E731
    cover = f.get("cover", "bareland")
    on = lambda: _pick(rng, COVERS[cover])  # noqa: E731
    road = bool(f.get("near_road"))
    if built:
        c = lambda: _count_phrase(rng, n, noun())  # noqa: E731
        s = [
            f"{c()} {be} built {place()}",
            f"{c()} {appear} {on()} {place()}",
            f"{c()} {be} constructed {on()}",
            f"{c()} {have} been built {place()}",
            f"{c()} {'shows' if n == 1 else 'show'} up {place()}",
            f"{_cover_is(rng, cover, place())} replaced by {c()}",
        ]
        if road:
            s += [f"{c()} {be} built along the road", f"{c()} {appear} beside the road {place()}"]
            if n >= 3:
                s.append(f"a row of {noun()}s is built along the road")
        return s
    c = lambda: _count_phrase(rng, n, noun(), definite=True)  # noqa: E731
    disappear = "disappears" if n == 1 else "disappear"
    return [
        f"{c()} {place()} {be} demolished",
        f"{c()} {disappear} {place()}",
        f"{c()} {place()} {be} torn down and bareland is left",
        f"{c()} {have} been removed {place()}",
        f"{c()} {be} gone and the ground {place()} is bare",
        f"{_count_phrase(rng, n, noun())} {be} demolished {place()}",
    ] + ([f"{c()} along the road {have} been demolished"] if road else [])


def _road_and_buildings(rng: np.random.Generator, f: dict[str, Any]) -> list[str]:
    """A new road and houses along it; every sentence names both (the place is where the houses are)."""
    n = int(f["count"])
    c = lambda: _count_phrase(rng, n, _pick(rng, ("house", "building", "villa", "house")))  # noqa: E731
    road = lambda: _road_adj(rng, f)  # noqa: E731
    place = lambda: _pick(rng, PLACES[f["place"]])  # noqa: E731
    be, appear = ("is", "appears") if n == 1 else ("are", "appear")
    cover = f.get("cover", "bareland")
    s = [
        f"{road()} and {c()} are built {_pick(rng, COVERS[cover])} {place()}",
        f"{c()} {appear} along the new road {place()}",
        f"{road()} is built and {c()} {be} constructed beside it {place()}",
        f"{c()} and {road()} have been built {place()}",
        f"{_cover_is(rng, cover, place())} replaced by {c()} and a road",
        f"{road()} appears {_pick(rng, ORIENTATIONS[f['orientation']])} with {c()} {place()} along it",
        f"{c()} {be} built {place()} beside a newly built road",
    ]
    if cover == "trees":
        s.append(f"some trees are removed and {road()} and {c()} are built {place()}")
    return s


def _clearing_for_buildings(rng: np.random.Generator, f: dict[str, Any]) -> list[str]:
    """Trees cut down for houses; every sentence names both the vegetation and the buildings."""
    n = int(f["count"])
    c = lambda: _count_phrase(rng, n, _pick(rng, ("house", "building", "villa", "house")))  # noqa: E731
    place = lambda: _pick(rng, PLACES[f["place"]])  # noqa: E731
    be, appear = ("is", "appears") if n == 1 else ("are", "appear")
    return [
        f"the trees {place()} are replaced by {c()}",
        f"the woods {place()} are cut down and {c()} {be} built",
        f"{c()} {be} built where the forest was {place()}",
        f"some trees {place()} are removed and {c()} {be} built",
        f"the forest {place()} is cleared to make room for {c()}",
        f"{c()} {appear} on the cleared woodland {place()}",
        f"the vegetation {place()} is cleared and {c()} {appear}",
    ]


def _road_adj(rng: np.random.Generator, f: dict[str, Any]) -> str:
    options = ["", "new"]
    options.append("concrete" if f.get("material") == "concrete" else "asphalt")
    if f.get("orientation") == "curved":
        options += ["winding", "curved"]
    if f.get("width", 8) >= 9:
        options.append("wide")
    elif f.get("width", 8) <= 6:
        options.append("narrow")
    adj = _pick(rng, options)
    return f"{'an' if adj[:1] in 'aeiou' else 'a'} {adj} road" if adj else "a road"


ORIENTATIONS = {
    "horizontal": ("from left to right", "horizontally across the scene", "across the scene"),
    "vertical": ("from top to bottom", "vertically across the scene", "through the scene"),
    "diagonal": ("diagonally across the scene", "across the scene", "through the scene"),
    "curved": ("across the scene", "through the scene", "in a curve across the scene"),
}
DIRECTIONS = {
    "right": ("to the right", "towards the right side", "to the right edge"),
    "left": ("to the left", "towards the left side", "to the left edge"),
    "down": ("to the bottom", "downwards", "towards the bottom of the scene"),
    "up": ("to the top", "upwards", "towards the top of the scene"),
}
STARTS = {"right": "left", "left": "right", "down": "top", "up": "bottom"}


def _road(rng: np.random.Generator, f: dict[str, Any], extended: bool) -> list[str]:
    places = ("across the scene", "through the scene") if f["place"] == "whole" else PLACES[f["place"]]
    place = lambda: _pick(rng, places)  # noqa: E731
    cover = f.get("cover", "bareland")
    on = lambda: _pick(rng, COVERS[cover])  # noqa: E731
    if not extended:
        orient = lambda: _pick(rng, ORIENTATIONS[f["orientation"]])  # noqa: E731
        s = [
            f"{_road_adj(rng, f)} is built {place()}",
            f"{_road_adj(rng, f)} appears {orient()}",
            f"{_road_adj(rng, f)} is constructed {on()}",
            f"{_road_adj(rng, f)} has been built {on()} {place()}",
            f"{_road_adj(rng, f)} runs {orient()}",
            f"a new road crosses {_pick(rng, COVER_NOUNS[cover])} {place()}",
        ]
        if cover == "trees":
            s.append("some trees are removed and a road is built")
        return s
    d = lambda: _pick(rng, DIRECTIONS[f["direction"]])  # noqa: E731
    start = STARTS[f["direction"]]
    return [
        f"the road is extended {d()}",
        f"the original road extends {d()}",
        f"the road on the {start} is lengthened {d()}",
        f"the road becomes longer and reaches the {_pick(rng, ('other side', 'edge of the scene'))}",
        f"the road is extended {on()}",
        f"the end of the road on the {start} is extended {d()}",
        f"a road that ended {_pick(rng, ('in the middle', 'halfway'))} now continues {d()}",
    ]


def _vegetation(rng: np.random.Generator, f: dict[str, Any], cleared: bool) -> list[str]:
    place = lambda: _pick(rng, PLACES[f["place"]])  # noqa: E731
    if cleared:
        return [
            f"the trees {place()} are cut down",
            f"the woods {place()} are removed",
            f"some trees disappear {place()}",
            f"the forest {place()} becomes bareland",
            f"the vegetation {place()} is cleared",
            f"many trees {place()} are removed and the ground is bare",
            f"the trees {place()} are replaced by bare land",
        ]
    kind = f.get("vegetation", "trees")
    if kind == "grass":
        return [
            f"the bare ground {place()} is covered with grass",
            f"grass grows on the bareland {place()}",
            f"the vegetation {place()} has been restored",
            f"the bareland {place()} turns green",
            f"some plants appear {place()}",
            f"the open space {place()} becomes a meadow",
        ]
    return [
        f"trees grow on the bareland {place()}",
        f"more trees appear {place()}",
        f"the vegetation {place()} has been restored",
        f"the bareland {place()} is covered with trees",
        f"some trees are planted {place()}",
        f"a small forest grows {place()}",
    ]


def _water(rng: np.random.Generator, f: dict[str, Any], expanded: bool) -> list[str]:
    place = lambda: _pick(rng, PLACES[f["place"]])  # noqa: E731
    body = lambda: _pick(rng, ("pond", "lake", "pond"))  # noqa: E731
    if expanded:
        return [
            f"the {body()} {place()} becomes larger",
            f"the water area {place()} expands",
            f"the {body()} floods the land around it",
            f"the {body()} {place()} grows bigger",
            f"more land {place()} is covered by water",
            f"the water of the {body()} spreads over the surrounding ground",
        ]
    return [
        f"the {body()} {place()} shrinks",
        f"the water {place()} recedes",
        f"the {body()} becomes smaller and bare ground appears",
        f"the water level drops and the shore {place()} is exposed",
        f"part of the {body()} {place()} dries up",
        f"the water area {place()} becomes smaller",
    ]


def captions_for(facts: dict[str, Any], rng: np.random.Generator) -> list[str]:
    """Five distinct sentences for one tile's event facts (`facts["type"]` is a change type)."""
    kind = facts["type"]
    if kind == "none":
        pool = list(NO_CHANGE_SENTENCES)
    elif kind in ("buildings_built", "buildings_demolished"):
        pool = _buildings(rng, facts, built=kind == "buildings_built")
    elif kind == "road_and_buildings_built":
        pool = _road_and_buildings(rng, facts)
    elif kind == "vegetation_cleared_for_buildings":
        pool = _clearing_for_buildings(rng, facts)
    elif kind in ("road_built", "road_extended"):
        pool = _road(rng, facts, extended=kind == "road_extended")
    elif kind in ("vegetation_cleared", "vegetation_grown"):
        pool = _vegetation(rng, facts, cleared=kind == "vegetation_cleared")
    elif kind in ("water_expanded", "water_receded"):
        pool = _water(rng, facts, expanded=kind == "water_expanded")
    else:
        raise ValueError(f"unknown change type {kind!r}")
    pool = list(dict.fromkeys(" ".join(s.split()) for s in pool))  # normalise spaces, drop duplicates
    order = rng.permutation(len(pool))[:CAPTIONS_PER_PAIR]
    return [pool[i] for i in order]
