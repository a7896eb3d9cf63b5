"""Part generators: bass lines, comping, arpeggios, strums, melodies and drums, in beats.

Each generator fills one section (a run of bars) for one part and returns ``Ev`` events in beats;
``compose.py`` arranges sections and turns beats into seconds with swing and humanised timing.
Generators read everything they need from ``Ctx`` and draw randomness only from ``ctx.rng``, so a
piece is a pure function of its seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from openmrt.data.drums import CRASH, GROOVES, KICK, drum_bar, fill_bar
from openmrt.data.theory import SCALES, Chord, chord_scale, closest_voicing

__all__ = ["GENERATORS", "Ctx", "Ev"]


@dataclass
class Ev:
    """One note in beats. ``spread`` delays the onset in seconds (guitar strums)."""

    start: float
    dur: float
    pitch: int
    vel: int
    spread: float = 0.0


@dataclass
class Ctx:
    """What every generator may read: meter, key, chords per bar, randomness."""

    rng: np.random.Generator
    beats: int  # beats per bar
    tonic: int
    scale: tuple[int, ...]
    bars: list[list[Chord]]
    memory: dict[str, Any] = field(default_factory=dict)  # per-part state across sections (motifs)

    def spans(self, bar: int) -> list[tuple[float, float, Chord]]:
        """(start beat, length, chord) for the chords of one bar."""
        chords = self.bars[bar]
        step = self.beats / len(chords)
        return [(bar * self.beats + i * step, step, c) for i, c in enumerate(chords)]

    def chord_at(self, beat: float) -> Chord:
        bar = min(int(beat // self.beats), len(self.bars) - 1)
        chords = self.bars[bar]
        i = int((beat - bar * self.beats) * len(chords) // self.beats)
        return chords[min(max(i, 0), len(chords) - 1)]

    def pick(self, options: list | tuple) -> Any:
        return options[int(self.rng.integers(len(options)))]


def _vel(ctx: Ctx, base: float, energy: float, accent: float = 0.0) -> int:
    v = base * energy + accent + ctx.rng.normal(0, 5)  # players never hit twice the same
    return int(np.clip(round(v), 8, 127))


def _pattern(grid: str, steps_per_beat: int) -> list[float]:
    return [i / steps_per_beat for i, ch in enumerate(grid) if ch != "."]


# ---------------------------------------------------------------------------- bass lines


def bass(ctx: Ctx, bars: range, energy: float, p: dict) -> list[Ev]:
    """Bass lines by ``p["kind"]``: octaves, funk, bossa, walking, root8, drone, offbeat, boogie,
    continuo, waltz."""
    kind, lo, hi = p["kind"], p.get("low", 28), p.get("high", 55)
    out: list[Ev] = []
    grid = ctx.pick(p["grids"]) if "grids" in p else None  # one riff per section: grooves repeat
    for bar in bars:
        for start, length, ch in ctx.spans(bar):
            r = ch.bass(lo, hi)
            fifth = r + 7 if r + 7 <= hi else r - 5
            if kind == "octaves":  # disco: root, octave, root, octave in eighths
                for k in range(int(length * 2)):
                    out.append(Ev(start + k / 2, 0.4, r + 12 * (k % 2), _vel(ctx, 95, energy, 10 * (k % 2 == 0))))
            elif kind in ("funk", "offbeat"):  # a sixteenth riff on root, octave, fifth and seventh
                sub = grid[: int(length * 4)]
                tones = [r, r, r + 12, fifth, r + (10 if 10 in ch.intervals else 12)]
                for k, pos in enumerate(_pattern(sub, 4)):
                    pitch = r if k == 0 else ctx.pick(tones) if kind == "funk" else r + 12 * (ctx.rng.random() < 0.15)
                    out.append(Ev(start + pos, 0.22, pitch, _vel(ctx, 92, energy, 12 * (k == 0))))
            elif kind == "bossa":  # root (dotted quarter), fifth (eighth) per half bar
                for h in range(int(length // 2) or 1):
                    out.append(Ev(start + 2 * h, 1.4, r, _vel(ctx, 80, energy)))
                    out.append(Ev(start + 2 * h + 1.5, 0.45, fifth, _vel(ctx, 70, energy)))
            elif kind == "root8":  # rock: driving eighths, a passing note at the end
                n = int(length * 2)
                for k in range(n):
                    pitch = fifth if (k == n - 1 and ctx.rng.random() < 0.3) else r
                    out.append(Ev(start + k / 2, 0.42, pitch, _vel(ctx, 90, energy, 8 * (k % 2 == 0))))
            elif kind == "drone":  # ambient: one long root, sometimes with its fifth
                out.append(Ev(start, length * 0.98, r, _vel(ctx, 70, energy)))
            elif kind == "boogie":  # shuffle boogie: R 3 5 6 b7 6 5 3, long-short
                third = r + (4 if 4 in ch.intervals else 3)
                line = [r, third, r + 7, r + 9, r + 10, r + 9, r + 7, third]
                for k in range(int(length * 2)):
                    out.append(Ev(start + k // 2 + (2 / 3) * (k % 2), 0.6 if k % 2 == 0 else 0.3,
                                  line[k % 8], _vel(ctx, 88, energy, 8 * (k % 2 == 0))))
            elif kind == "waltz":  # root on one, the fifth on alternate bars
                out.append(Ev(start, 0.9, r if bar % 2 == 0 else fifth, _vel(ctx, 85, energy)))
            elif kind in ("walking", "continuo"):
                out += _walk(ctx, bar, start, length, ch, r, lo, hi, energy, 1.0 if kind == "walking" else 0.5)
    return out


def _walk(ctx: Ctx, bar: int, start: float, length: float, ch: Chord, r: int, lo: int, hi: int,
          energy: float, step: float) -> list[Ev]:
    """Walking bass: root first, chord and scale tones on the way, an approach into the next root."""
    nxt = ctx.chord_at(start + length)
    target = nxt.bass(lo, hi)
    scale = chord_scale(ctx.scale, ch)
    n = int(round(length / step))
    pitches = [r]
    for k in range(1, n):
        if k == n - 1 and ctx.rng.random() < 0.6:
            pitches.append(target + ctx.pick([-1, 1]))  # chromatic approach
            continue
        direction = 1 if target > pitches[-1] else -1
        cands = [q for q in range(pitches[-1] - 4, pitches[-1] + 5)
                 if q % 12 in scale and q != pitches[-1] and lo <= q <= hi]
        cands.sort(key=lambda q: (q - pitches[-1]) * direction < 0)  # prefer moving towards the target
        pitches.append(cands[int(ctx.rng.integers(min(2, len(cands))))] if cands else r)
    return [Ev(start + k * step, step * 0.9, q, _vel(ctx, 85, energy, 8 * (k == 0))) for k, q in enumerate(pitches)]


# ---------------------------------------------------------------------------- chords


def comp(ctx: Ctx, bars: range, energy: float, p: dict) -> list[Ev]:
    """Chordal parts by ``p["kind"]``: pad, stabs, chop, strum, power, arp, bossa, rootless,
    alberti, broken, oompah, block."""
    kind = p["kind"] if isinstance(p["kind"], str) else ctx.pick(p["kind"])  # a pianist varies the left hand
    center, size = p.get("center", 62), p.get("size", 4)
    spb = p.get("steps", 4)
    grid = ctx.pick(p["grids"]) if "grids" in p else None
    prev = ctx.memory.get(("voicing", id(p)))
    out: list[Ev] = []
    base = p.get("vel", 72)
    for bar in bars:
        for start, length, ch in ctx.spans(bar):
            if kind == "rootless":  # jazz piano: 3rd, 7th, 9th (or 5th) above the bass
                third = 4 if 4 in ch.intervals else 3
                sev = 10 if 10 in ch.intervals else 11 if 11 in ch.intervals else 9
                pcs = tuple((i + ch.root) % 12 for i in (third, sev, 14 if ctx.rng.random() < 0.7 else 7))
                ch = Chord(ch.root, tuple((pc - ch.root) % 12 for pc in pcs), ch.symbol)
            v = closest_voicing(ch, prev, center, size)
            prev = v
            if kind == "pad":
                out += [Ev(start, length * 0.97, q, _vel(ctx, base, energy)) for q in v]
            elif kind in ("stabs", "chop", "block", "bossa", "rootless"):
                hits = _pattern(grid[: int(length * spb)], spb)
                dur = {"stabs": 0.3, "chop": 0.12, "block": 0.9, "bossa": 0.45, "rootless": 0.6}[kind]
                notes = v[-3:] if kind == "chop" else v
                for k, pos in enumerate(hits):
                    nxt = hits[k + 1] if k + 1 < len(hits) else length
                    d = min(dur, nxt - pos) if kind != "block" else (nxt - pos) * 0.9
                    accent = 14 if pos == int(pos) else 0
                    for q in notes:
                        out.append(Ev(start + pos, d, q, _vel(ctx, base, energy, accent)))
                if kind == "bossa":  # the guitarist's thumb: root and fifth on the beats
                    for h in range(int(length // 2) or 1):
                        out.append(Ev(start + 2 * h, 0.9, ch.bass(40, 52), _vel(ctx, base - 8, energy)))
            elif kind == "strum":
                out += _strum(ctx, ch, start, length, grid, energy, base)
            elif kind == "power":  # root-fifth-octave, palm-muted eighths or ringing halves
                r = ch.bass(40, 52)
                chunk = 0.5 if grid == "eighths" else 2.0
                for k in range(int(length / chunk)):
                    for q in (r, r + 7, r + 12):
                        out.append(Ev(start + k * chunk, chunk * 0.85, q, _vel(ctx, base, energy, 10 * (k % 2 == 0))))
            elif kind == "arp":
                out += _arp(ctx, ch, v, start, length, p, energy, base)
            elif kind in ("alberti", "broken"):
                r = ch.bass(36, 50)
                lh = closest_voicing(ch, None, r + 9, 3)
                line = ([r, lh[-1], lh[1], lh[-1]] if kind == "alberti"
                        else [r, r + 7, r + 12, lh[1] + 12 if lh[1] + 12 < 70 else lh[1], r + 12, r + 7])
                line = [q if q > r - 1 else q + 12 for q in line]
                for k in range(int(length * 2)):
                    out.append(Ev(start + k / 2, 0.55, line[k % len(line)], _vel(ctx, base, energy, 8 * (k == 0))))
            elif kind == "oompah":  # waltz: bass on one, chords on two and three
                out.append(Ev(start, 0.9, ch.bass(40, 55), _vel(ctx, base + 8, energy)))
                for b in range(1, int(length)):
                    out += [Ev(start + b, 0.6, q, _vel(ctx, base - 6, energy)) for q in v[:3]]
    ctx.memory[("voicing", id(p))] = prev
    return out


def _strum(ctx: Ctx, ch: Chord, start: float, length: float, grid: str, energy: float, base: float) -> list[Ev]:
    """A guitar strum pattern in eighths: ``D`` down (low to high), ``U`` up (high to low, fewer
    strings). Strings sound 8-15 ms apart, as a hand crosses them."""
    shape = ch.tones(40, 67)
    low = [q for q in shape if q % 12 == ch.root][:1]  # start the shape on the root
    shape = [q for q in shape if q >= (low[0] if low else 40)][:6]
    out = []
    hits = [(i / 2, c) for i, c in enumerate(grid[: int(length * 2)]) if c in "DU"]
    for k, (pos, c) in enumerate(hits):
        nxt = hits[k + 1][0] if k + 1 < len(hits) else length
        strings = shape if c == "D" else shape[::-1][:4]
        gap = ctx.rng.uniform(0.008, 0.015)
        for j, q in enumerate(strings):
            out.append(Ev(start + pos, nxt - pos, q, _vel(ctx, base, energy, 10 if c == "D" else -10), j * gap))
    return out


def _arp(ctx: Ctx, ch: Chord, v: list[int], start: float, length: float, p: dict, energy: float,
         base: float) -> list[Ev]:
    """Arpeggio over the voicing spread to two octaves; the order is fixed per part (a riff)."""
    step = p.get("step", 0.25)
    notes = sorted(set(v + [q + 12 for q in v]))[: p.get("span", 6)]
    order = ctx.memory.setdefault(("arp", id(p)), ctx.pick(["up", "updown", "down", "skip"]))
    if order == "updown":
        notes = notes + notes[-2:0:-1]
    elif order == "down":
        notes = notes[::-1]
    elif order == "skip":
        notes = notes[::2] + notes[1::2]
    return [Ev(start + k * step, step * p.get("legato", 0.9), notes[k % len(notes)],
               _vel(ctx, base, energy, 10 * (k % 4 == 0))) for k in range(int(round(length / step)))]


# ---------------------------------------------------------------------------- melodies


def lead(ctx: Ctx, bars: range, energy: float, p: dict) -> list[Ev]:
    """A melody built from a two-bar motif (rhythm + scale-step contour) repeated on the changing
    chords, with a contrasting motif in the middle of long sections and a long final note.

    Strong beats land on chord tones; other notes walk the chord's scale. ``p``: ``durs`` (beat
    lengths, weighted by ``weights``), ``rest`` (probability), ``low``/``high``, ``scale``
    (override, e.g. ``"blues"``), ``chromatic`` (probability of a chromatic approach note).
    """
    lo, hi = p.get("low", 60), p.get("high", 84)
    motif_a, motif_b = _motif(ctx, p), _motif(ctx, p)
    n = len(bars)
    out: list[Ev] = []
    pitch = ctx.memory.get(("lead", id(p)), (lo + hi) // 2)
    for i in range(0, n, 2):
        motif = motif_b if (n >= 8 and n // 2 <= i < 3 * n // 4) else motif_a
        bar0 = bars[i] * ctx.beats
        last_pair = i + 2 >= n
        for pos, dur, step, rest in motif:
            if rest:
                continue
            if last_pair and pos >= ctx.beats * min(2, n - i) - ctx.beats:
                break  # end the section with a held chord tone instead
            beat = bar0 + pos
            ch = ctx.chord_at(beat)
            if "scale" in p:  # e.g. the blues scale, whose b3 over a major chord is the point
                scale = [(pc + ctx.tonic) % 12 for pc in SCALES[p["scale"]]]
            else:
                scale = chord_scale(ctx.scale, ch)
            pitch = _step(pitch, step, scale, lo, hi)
            if pos % 1 == 0 and (pos % ctx.beats == 0 or ctx.rng.random() < 0.5):
                pitch = min(ch.tones(lo, hi) or [pitch], key=lambda q: abs(q - pitch))
            out.append(Ev(beat, dur * 0.92, pitch, _vel(ctx, p.get("vel", 96), energy, 6 * (pos % 1 == 0))))
            if ctx.rng.random() < p.get("chromatic", 0.0) and dur >= 0.5:
                out[-1].dur = dur * 0.45  # a chromatic lower neighbour before the next note
                out.append(Ev(beat + dur / 2, dur * 0.45, pitch - 1, _vel(ctx, 80, energy)))
    if n:
        end_bar = bars[-1] * ctx.beats + (ctx.beats if n == 1 else 0)
        last_start = max([e.start + e.dur for e in out if e.start < end_bar] + [bars[max(0, n - 2)] * ctx.beats])
        ch = ctx.chord_at(last_start)
        pitch = min(ch.tones(lo, hi) or [pitch], key=lambda q: abs(q - pitch))
        length = (bars[-1] + 1) * ctx.beats - last_start
        if length >= 0.5:
            out.append(Ev(last_start, length * 0.9, pitch, _vel(ctx, p.get("vel", 96) - 6, energy)))
    ctx.memory[("lead", id(p))] = pitch
    ctx.memory.setdefault("lead_notes", []).extend(out)
    return out


def _motif(ctx: Ctx, p: dict) -> list[tuple[float, float, int, bool]]:
    """Two bars of (position, length, scale steps from the previous note, is_rest)."""
    durs, weights = p["durs"], np.asarray(p.get("weights", [1] * len(p["durs"])), dtype=float)
    total, pos, out = 2 * ctx.beats, 0.0, []
    while pos < total - 1e-6:
        d = min(float(ctx.rng.choice(durs, p=weights / weights.sum())), total - pos)
        step = int(ctx.rng.choice([-2, -1, -1, 0, 1, 1, 2, 3, -3, 4, -4],
                                  p=[0.1, 0.2, 0.0, 0.08, 0.22, 0.0, 0.12, 0.1, 0.08, 0.05, 0.05]))
        out.append((pos, d, step, ctx.rng.random() < p.get("rest", 0.1)))
        pos += d
    return out


def _step(pitch: int, steps: int, scale: list[int], lo: int, hi: int) -> int:
    """Move ``steps`` scale degrees from ``pitch`` (snapped into the scale), reflecting off the range."""
    cands = [q for q in range(lo - 12, hi + 13) if q % 12 in scale]
    i = min(range(len(cands)), key=lambda k: abs(cands[k] - pitch))
    j = i + steps
    if not lo <= cands[min(max(j, 0), len(cands) - 1)] <= hi:
        j = i - steps
    return int(np.clip(cands[min(max(j, 0), len(cands) - 1)], lo, hi))


def counter(ctx: Ctx, bars: range, energy: float, p: dict) -> list[Ev]:
    """A second voice a diatonic third (sometimes a sixth) below the lead, as in a trio sonata."""
    t0, t1 = bars[0] * ctx.beats, (bars[-1] + 1) * ctx.beats
    lead_notes = [e for e in ctx.memory.get("lead_notes", []) if t0 <= e.start < t1]
    lo, hi = p.get("low", 55), p.get("high", 79)
    out = []
    for e in lead_notes:
        scale = chord_scale(ctx.scale, ctx.chord_at(e.start))
        below = _step(e.pitch, -2 if ctx.rng.random() < 0.8 else -5, scale, lo, hi)
        out.append(Ev(e.start, e.dur, below, _vel(ctx, p.get("vel", 80), energy)))
    return out


# ---------------------------------------------------------------------------- drums


def drums(ctx: Ctx, bars: range, energy: float, p: dict) -> list[Ev]:
    """The style's groove, a fill at the end of the section (and now and then every four bars), a
    crash on the first downbeat."""
    groove = GROOVES[p["groove"]]
    variant = int(ctx.rng.integers(len(groove.variants)))
    hits: list[tuple[float, int, int]] = []
    for k, bar in enumerate(bars):
        start = bar * ctx.beats
        last = k == len(bars) - 1
        if last or (k % 4 == 3 and ctx.rng.random() < 0.35):
            hits += fill_bar(groove, variant, start, ctx.beats, ctx.rng)
        else:
            hits += drum_bar(groove, variant, start, ctx.beats)
        if k == 0 and p.get("crash", True) and groove.fill_kind != "none":
            hits += [(start, CRASH, 100), (start, KICK, 100)]
    return [Ev(b, 0.2, key, _vel(ctx, v, energy)) for b, key, v in hits]


GENERATORS = {"bass": bass, "comp": comp, "lead": lead, "counter": counter, "drums": drums}
