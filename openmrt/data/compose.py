"""The composer: a seed and a style name in, a multi-track General MIDI piece out.

A piece is a sequence of sections (intro, A, B, break, outro) over the style's chord progressions.
Each part of the style's band (``styles.py``) is generated per section by ``parts.py`` in beats,
then placed in seconds with swing and humanised timing and velocity. Everything random is drawn
from one ``numpy`` generator seeded by the caller, so the same (style, seed, seconds) always gives
the same MIDI.

The style, mode and caption words travel inside the MIDI itself (instrument names, a text event,
key and time signatures), so ``labels.py`` reads every label from the MIDI alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pretty_midi

from openmrt.data.drums import CRASH, GROOVES, KICK
from openmrt.data.labels import META_PREFIX
from openmrt.data.parts import GENERATORS, Ctx, Ev
from openmrt.data.styles import STYLES, PartSpec, Style
from openmrt.data.theory import PITCH_NAMES, SCALES, closest_voicing, parse_chord, parse_progression

__all__ = ["Piece", "compose", "style_names"]

TAIL_S = 1.5  # silence after the last note-off: room for release and reverb
ENERGY = {"intro": 0.78, "A": 0.9, "B": 1.0, "break": 0.82, "outro": 0.8}
_KIND_LETTER = {"intro": "i", "A": "A", "B": "B", "break": "b", "outro": "o"}


@dataclass
class Piece:
    """A composed piece: the MIDI and the facts it was made from."""

    midi: pretty_midi.PrettyMIDI
    style: str
    seed: int
    tempo: float
    key: str  # e.g. "D dorian"
    duration: float  # seconds, last note-off plus a tail


def style_names() -> list[str]:
    return sorted(STYLES)


def compose(style: str, seed: int, seconds: float = 40.0) -> Piece:
    """Compose about ``seconds`` of music in ``style`` (rounded to whole sections)."""
    if style not in STYLES:
        raise KeyError(f"unknown style {style!r}; known: {', '.join(style_names())}")
    st = STYLES[style]
    rng = np.random.default_rng([seed, _stable_hash(style)])
    tempo = float(rng.integers(st.tempo[0], st.tempo[1] + 1))
    mode = str(rng.choice(list(st.modes)))
    tonic = int(rng.choice(st.keys))
    plan = _plan_sections(st, mode, tonic, rng, seconds * tempo / 60 / st.beats)
    bars = [bar for _, prog in plan for bar in prog]
    ctx = Ctx(rng, st.beats, tonic, tuple((tonic + i) % 12 for i in SCALES[mode]), bars)
    band = _choose_band(st, rng)

    pm = pretty_midi.PrettyMIDI(resolution=960, initial_tempo=tempo)  # fine ticks: a saved file keeps the timing
    pm.time_signature_changes.append(pretty_midi.TimeSignature(st.beats, 4, 0.0))
    minor = mode in ("minor", "harmonic minor", "dorian")
    pm.key_signature_changes.append(pretty_midi.KeySignature(tonic + 12 * minor, 0.0))
    key = f"{PITCH_NAMES[tonic]} {mode}"
    for text in (f"style={style}", f"mode={mode}", f"seed={seed}"):
        pm.text_events.append(pretty_midi.Text(META_PREFIX + text, 0.0))

    sec_per_beat = 60.0 / tempo
    for spec, program, name in band:
        events = _play_part(ctx, spec, plan)
        if spec.gen != "drums" and spec.sections.endswith("o"):
            events += _final_chord(ctx, spec, len(bars))
        elif spec.gen == "drums" and "o" in spec.sections:
            events += [Ev(len(bars) * st.beats, 0.5, CRASH, 96), Ev(len(bars) * st.beats, 0.5, KICK, 100)]
        if not events:
            continue
        is_drum = spec.gen == "drums"
        label = GROOVES[spec.params["groove"]].name if is_drum else name
        inst = pretty_midi.Instrument(program, is_drum=is_drum, name=label)
        humanize = st.humanize_ms / 1000 * (0.6 if is_drum else 1.0)  # drummers keep tighter time
        for e in events:
            t0 = _swing(e.start, st.swing) * sec_per_beat + e.spread + rng.normal(0, humanize)
            t1 = _swing(e.start + e.dur, st.swing) * sec_per_beat + rng.normal(0, humanize / 2)
            t0 = max(t0, 0.0)
            inst.notes.append(pretty_midi.Note(int(np.clip(e.vel, 1, 127)), int(e.pitch), t0, max(t1, t0 + 0.03)))
        inst.notes.sort(key=lambda n: (n.start, n.pitch))
        # Spread the band across the stereo field; bass and drums stay in the middle.
        pan = 64 if is_drum or spec.gen == "bass" else int(rng.integers(30, 99))
        inst.control_changes += [pretty_midi.ControlChange(10, pan, 0.0),
                                 pretty_midi.ControlChange(91, int(rng.integers(20, 70)), 0.0)]
        pm.instruments.append(inst)
    end = max((n.end for i in pm.instruments for n in i.notes), default=0.0)
    return Piece(pm, style, seed, tempo, key, end + TAIL_S)


def _stable_hash(text: str) -> int:
    """A hash that is the same in every process (Python's ``hash`` of str is salted)."""
    return sum((i + 1) * ord(c) for i, c in enumerate(text))


def _swing(beat: float, swing: float) -> float:
    """Delay off-beat eighths: an eighth at x.5 moves to x + swing."""
    frac = beat - math.floor(beat)
    if abs(frac - 0.5) < 1e-6 and swing != 0.5:
        return math.floor(beat) + swing
    return beat


def _choose_band(st: Style, rng: np.random.Generator) -> list[tuple[PartSpec, int, str]]:
    """Which of the style's parts play, and on which instruments. Alternative parts of one kind
    (two bass styles, two drum grooves) are drawn as alternatives: at most one of each plays."""
    chosen: list[tuple[PartSpec, int, str]] = []
    picked: dict[int, tuple[int, str]] = {}
    alt_used: set[str] = set()
    for i, spec in enumerate(st.parts):
        group = spec.gen if spec.gen in ("bass", "drums") else f"{spec.gen}{i}"
        if group in alt_used or rng.random() >= spec.prob:
            continue
        if spec.same_program_as is not None:
            program, name = picked.get(spec.same_program_as, next(iter(picked.values()), spec.programs[0]))
        else:
            program, name = spec.programs[int(rng.integers(len(spec.programs)))]
        picked[i] = (program, name)
        alt_used.add(group)
        chosen.append((spec, program, name))
    if not any(s.gen == "lead" for s, _, _ in chosen) and not any(s.gen == "comp" for s, _, _ in chosen):
        spec = next(s for s in st.parts if s.gen in ("comp", "lead"))  # a piece needs something tonal
        chosen.insert(0, (spec, *spec.programs[0]))
    return chosen


def _plan_sections(st: Style, mode: str, tonic: int, rng: np.random.Generator, target_bars: float):
    """[(kind, bars of chords)] filling about ``target_bars``: optional intro, A/B sections with a
    possible break, optional outro. Sections last at least 8 bars (4 for intro and outro)."""
    progs = st.modes[mode]
    prog = {k: parse_progression(str(rng.choice(progs)), tonic) for k in ("A", "B")}

    def section(kind: str, n_min: int) -> tuple[str, list]:
        base = prog["B" if kind in ("B", "break") else "A"]
        if kind == "intro":
            return kind, (base * 4)[:4]
        if kind == "outro":  # the progression's last four bars: its turnaround, then the final chord
            return kind, (base * 4)[-4:]
        return kind, base * max(1, math.ceil(n_min / len(base)))

    plan = []
    if rng.random() < 0.6 and target_bars >= 16:
        plan.append(section("intro", 4))
    order = ["A", "B", "A", "break", "B", "A", "B"] if rng.random() < 0.4 else ["A", "B", "A", "B"]
    total = sum(len(b) for _, b in plan)
    i = 0
    while total < target_bars - 2 or i < 1:
        kind = order[i % len(order)]
        plan.append(section(kind, 8))
        total += len(plan[-1][1])
        i += 1
    if rng.random() < 0.7 and total + 4 <= 1.2 * target_bars:
        plan.append(section("outro", 4))
    return plan


def _play_part(ctx: Ctx, spec: PartSpec, plan) -> list[Ev]:
    gen = GENERATORS[spec.gen]
    events: list[Ev] = []
    bar = 0
    for kind, bars in plan:
        if _KIND_LETTER[kind] in spec.sections:
            energy = ENERGY[kind] * (0.92 + 0.16 * ctx.rng.random())
            events += gen(ctx, range(bar, bar + len(bars)), energy, spec.params)
        bar += len(bars)
    return events


def _final_chord(ctx: Ctx, spec: PartSpec, n_bars: int) -> list[Ev]:
    """The last bar: the tonic chord, held (melody on a chord tone, bass on the root)."""
    tonic_chord = parse_chord("i" if ctx.scale[2] == (ctx.tonic + 3) % 12 else "I", ctx.tonic)
    start, dur = n_bars * ctx.beats, float(ctx.beats)
    if spec.gen == "bass":
        return [Ev(start, dur, tonic_chord.bass(spec.params.get("low", 28), spec.params.get("high", 55)), 80)]
    if spec.gen in ("lead", "counter"):
        lo, hi = spec.params.get("low", 60), spec.params.get("high", 84)
        return [Ev(start, dur, tonic_chord.tones(lo, hi)[len(tonic_chord.tones(lo, hi)) // 3], 72)]
    return [Ev(start, dur, q, 66) for q in closest_voicing(tonic_chord, None, spec.params.get("center", 62), 3)]
