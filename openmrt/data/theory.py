"""Just enough music theory for the composer: scales, chord symbols, voicings, progressions.

Chord symbols are Roman numerals measured chromatically from the tonic (I=0, II=2, III=4, IV=5,
V=7, VI=9, VII=11, with ``b``/``#`` prefixes), upper case for major, lower case for minor, plus a
suffix: ``7`` ``maj7`` ``6`` ``9`` ``ø7`` ``°`` ``°7`` ``sus2`` ``sus4`` ``add9`` ``5``. So ``bVII`` in
any mode is a major chord a whole tone below the tonic and ``V7`` in minor is the dominant seventh,
with no key-dependent guessing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Chord", "SCALES", "PITCH_NAMES", "chord_scale", "closest_voicing", "parse_chord", "parse_progression"]

PITCH_NAMES = ["C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]

SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "harmonic minor": (0, 2, 3, 5, 7, 8, 11),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "blues": (0, 3, 5, 6, 7, 10),
}

_NUMERALS = {"I": 0, "II": 2, "III": 4, "IV": 5, "V": 7, "VI": 9, "VII": 11}
# Suffix -> intervals above the root, given the numeral's case (major, minor).
_SUFFIX: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "": ((0, 4, 7), (0, 3, 7)),
    "7": ((0, 4, 7, 10), (0, 3, 7, 10)),
    "maj7": ((0, 4, 7, 11), (0, 3, 7, 11)),
    "6": ((0, 4, 7, 9), (0, 3, 7, 9)),
    "9": ((0, 4, 7, 10, 14), (0, 3, 7, 10, 14)),
    "ø7": ((0, 3, 6, 10), (0, 3, 6, 10)),
    "°": ((0, 3, 6), (0, 3, 6)),
    "°7": ((0, 3, 6, 9), (0, 3, 6, 9)),
    "sus2": ((0, 2, 7), (0, 2, 7)),
    "sus4": ((0, 5, 7), (0, 5, 7)),
    "add9": ((0, 4, 7, 14), (0, 3, 7, 14)),
    "5": ((0, 7), (0, 7)),
}
_CHORD_RE = re.compile(r"^([b#]?)(VII|VI|V|IV|III|II|I|vii|vi|v|iv|iii|ii|i)(.*)$")


@dataclass(frozen=True)
class Chord:
    """A chord as an absolute root pitch class and intervals above it."""

    root: int  # pitch class 0..11
    intervals: tuple[int, ...]
    symbol: str = ""

    @property
    def pcs(self) -> tuple[int, ...]:
        """Pitch classes, root first."""
        return tuple((self.root + i) % 12 for i in self.intervals)

    def tones(self, low: int, high: int) -> list[int]:
        """Every MIDI pitch in [low, high] that belongs to the chord, ascending."""
        return [p for p in range(low, high + 1) if p % 12 in self.pcs]

    def bass(self, low: int = 28, high: int = 52) -> int:
        """The root in the bass register, as close to the middle of [low, high] as possible."""
        mid = (low + high) // 2
        return min((p for p in range(low, high + 1) if p % 12 == self.root), key=lambda p: abs(p - mid))


def parse_chord(symbol: str, tonic: int) -> Chord:
    """Roman-numeral symbol (see module doc) in the key whose tonic pitch class is ``tonic``."""
    m = _CHORD_RE.match(symbol)
    if m is None or m.group(3) not in _SUFFIX:
        raise ValueError(f"bad chord symbol {symbol!r}")
    acc, numeral, suffix = m.groups()
    offset = _NUMERALS[numeral.upper()] + {"": 0, "b": -1, "#": 1}[acc]
    major, minor = _SUFFIX[suffix]
    return Chord((tonic + offset) % 12, major if numeral.isupper() else minor, symbol)


def parse_progression(text: str, tonic: int) -> list[list[Chord]]:
    """``"ii7 V7 | Imaj7"`` -> one list of chords per bar (chords share a bar evenly)."""
    return [[parse_chord(s, tonic) for s in bar.split()] for bar in text.split("|")]


def chord_scale(scale_pcs: tuple[int, ...], chord: Chord) -> list[int]:
    """The key's scale adjusted to fit a chord: chord tones outside the scale (the leading tone of
    V7 in minor, a secondary dominant) replace the scale tones a semitone away from them."""
    pcs = set(scale_pcs)
    for c in chord.pcs:
        if c not in pcs:
            pcs -= {(c + 1) % 12, (c - 1) % 12}
            pcs.add(c)
    return sorted(pcs)


def closest_voicing(chord: Chord, prev: list[int] | None, center: int, size: int = 4) -> list[int]:
    """A close-position voicing of ``size`` notes near ``center`` that moves least from ``prev``.

    Tries every inversion; with no previous voicing it picks the one whose middle is nearest
    ``center``. Ninths are folded into the octave (close position).
    """
    pcs = list(chord.pcs)
    if len(pcs) > size:  # drop the fifth first: it adds least colour
        fifth = (chord.root + 7) % 12
        pcs = [p for p in pcs if p != fifth or len(pcs) <= size][:size]
    candidates = []
    for inv in range(len(pcs)):
        order = pcs[inv:] + pcs[:inv]
        for base in range(center - 14, center + 2):
            if base % 12 != order[0]:
                continue
            notes = [base]
            for pc in order[1:]:
                nxt = notes[-1] + 1
                while nxt % 12 != pc:
                    nxt += 1
                notes.append(nxt)
            candidates.append(notes)
    if prev:
        def cost(v: list[int]) -> float:
            return sum(min(abs(n - p) for p in prev) for n in v) + 0.3 * abs(sum(v) / len(v) - center)
    else:
        def cost(v: list[int]) -> float:
            return abs(sum(v) / len(v) - center)
    return min(candidates, key=cost)
