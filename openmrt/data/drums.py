"""Drum grooves and fills on the General MIDI percussion map (channel 10).

A groove is a one-bar grid per drum: one character per step, ``.`` rest, ``g`` ghost, ``o`` soft,
``x`` normal, ``X`` accent. Steps per beat are 4 (sixteenths) or 3 (triplets, swing and shuffle).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["GROOVES", "Groove", "drum_bar", "fill_bar"]

# GM percussion keys.
KICK, RIM, SNARE, CLAP, CHH, PHH, OHH = 36, 37, 38, 39, 42, 44, 46
TOM_LO, TOM_MID, TOM_HI, FLOOR = 45, 47, 50, 41
CRASH, RIDE, BELL, TAMB, SHAKER, CONGA_HI, CONGA_LO = 49, 51, 53, 54, 70, 63, 64

VELOCITY = {"g": 38, "o": 68, "x": 92, "X": 116}


@dataclass(frozen=True)
class Groove:
    """One bar of drums per variant; a piece picks a variant per section."""

    name: str  # caption words, e.g. "four-on-the-floor drums"
    steps_per_beat: int
    variants: tuple[dict[int, str], ...]
    fill_kind: str = "toms"  # "toms", "snare", "triplet", "none"


GROOVES: dict[str, Groove] = {
    "disco": Groove("four-on-the-floor drums", 4, (
        {KICK: "x...x...x...x...", SNARE: "....X.......X...", CHH: "x.o.x.o.x.o.x.o.", OHH: "..x...x...x...x."},
        {KICK: "x...x...x...x...", CLAP: "....X.......X...", CHH: "xoxoxoxoxoxoxoxo", OHH: "..x...x...x...x.",
         TAMB: "....x.......x..."},
    )),
    "funk": Groove("funky drums", 4, (
        {KICK: "x.....x...x..x..", SNARE: "....X..g.g..X..g", CHH: "xoxoxoxoxoxoxoxo"},
        {KICK: "x..x......x.....", SNARE: "....X..g.g.gX...", CHH: "x.x.x.x.x.x.x.xo", OHH: "..............x."},
    ), "snare"),
    "bossa": Groove("light bossa nova percussion", 4, (
        {KICK: "x..xx..xx..xx..x", RIM: "x..x..x...x..x..", CHH: "o.o.o.o.o.o.o.o."},
        {KICK: "x..xx..xx..xx..x", RIM: "x..x..x...x..x..", SHAKER: "xoooxoooxoooxooo"},
    ), "none"),
    "techno": Groove("pounding techno drums", 4, (
        {KICK: "X...X...X...X...", CLAP: "....x.......x...", OHH: "..x...x...x...x.", CHH: "xoxxxoxxxoxxxoxx"},
        {KICK: "X...X...X...X...", CLAP: "....x.......x...", OHH: "..x...x...x...x.", RIDE: "o.o.o.o.o.o.o.o."},
        {KICK: "X...X...X...X..o", RIM: "...x..x....x..x.", OHH: "..x...x...x...x.", CHH: "x.xxx.xxx.xxx.xx"},
    ), "snare"),
    "rock": Groove("rock drums", 4, (
        {KICK: "x.....x.x.......", SNARE: "....X.......X...", CHH: "x.x.x.x.x.x.x.x."},
        {KICK: "x.x...x.x.x.....", SNARE: "....X.......X...", CHH: "x.x.x.x.x.x.x.x."},
        {KICK: "x.....x.x.......", SNARE: "....X.......X...", RIDE: "x.x.x.x.x.x.x.x.", BELL: "x.......x......."},
    )),
    "swing": Groove("swinging jazz drums", 3, (
        {RIDE: "x..x.xx..x.x", PHH: "...x.....x..", KICK: "g..g..g..g.."},
        {RIDE: "x..x.xx..x.x", PHH: "...x.....x..", SNARE: "....g......g", KICK: "g.....g....."},
    ), "triplet"),
    "shuffle": Groove("shuffle drums", 3, (
        {KICK: "x.....x.....", SNARE: "...X.....X..", CHH: "x.ox.ox.ox.o"},
        {KICK: "x.....x..o..", SNARE: "...X.....X.g", RIDE: "x.ox.ox.ox.o"},
    ), "triplet"),
    "waltz": Groove("light waltz percussion", 4, (
        {KICK: "x...........", SNARE: "....o...o...", CHH: "x.o.x.o.x.o."},
        {KICK: "x...........", TAMB: "....x...x...", SHAKER: "x.o.x.o.x.o."},
    ), "none"),
    "ambient": Groove("soft downtempo beat", 4, (
        {KICK: "x.........x.....", RIM: "....o.......o...", SHAKER: "o.o.o.o.o.o.o.o."},
        {KICK: "x......x..x.....", SNARE: "....o.......o...", CHH: "o.g.o.g.o.g.o.g."},
    ), "none"),
}


def drum_bar(groove: Groove, variant: int, bar_start: float, beats: int) -> list[tuple[float, int, int]]:
    """One bar of (beat, key, velocity) hits. Grids written for 4 beats are cut to ``beats``."""
    steps = groove.steps_per_beat
    out = []
    for key, grid in groove.variants[variant % len(groove.variants)].items():
        for i, ch in enumerate(grid[: beats * steps]):
            if ch != ".":
                out.append((bar_start + i / steps, key, VELOCITY[ch]))
    return out


def fill_bar(
    groove: Groove, variant: int, bar_start: float, beats: int, rng: np.random.Generator
) -> list[tuple[float, int, int]]:
    """A bar ending in a fill: the groove until the last beat (or two), then toms or snare."""
    if groove.fill_kind == "none":
        return drum_bar(groove, variant, bar_start, beats)
    fill_beats = 2 if (beats >= 4 and rng.random() < 0.4) else 1
    fill_from = bar_start + beats - fill_beats
    hits = [h for h in drum_bar(groove, variant, bar_start, beats) if h[0] < fill_from or h[1] == KICK]
    hits = [h for h in hits if h[0] < fill_from or h[0] == fill_from]
    step = 1 / 3 if groove.fill_kind == "triplet" else 0.25
    n = round(fill_beats / step)
    toms = [TOM_HI, TOM_HI, TOM_MID, TOM_MID, TOM_LO, TOM_LO, FLOOR, FLOOR]
    for i in range(n):
        if groove.fill_kind == "toms" and rng.random() < 0.8:
            key = toms[min(len(toms) - 1, i * len(toms) // n)]
        else:
            key = SNARE
        vel = int(70 + 45 * (i + 1) / n)  # crescendo into the next downbeat
        if rng.random() < 0.15 and i < n - 1:
            continue  # leave a gap now and then: fills are not all straight sixteenths
        hits.append((fill_from + i * step, key, vel))
    return hits
