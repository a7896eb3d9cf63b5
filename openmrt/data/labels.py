"""Per-frame labels at 25 Hz from MIDI: the note states and drum flag the model is conditioned on
(shared/spec/mrt2_lm.md §2.2), plus tempo, key, style, instruments and a text caption.

Frame rule. Frame f covers [f/25, (f+1)/25) s, i.e. audio samples [1920 f, 1920 (f+1)) at 48 kHz.
Times are rounded to the microsecond first, so a note written at exactly 0.12 s starts frame 3.
For a note [s, e) of pitch p:
  * frame floor(25 s) is ONSET (2), even when the note is shorter than a frame;
  * every later frame the note overlaps, up to ceil(25 e) - 1, is HELD (1);
  * all other frames are OFF (0).
Onsets win: when notes of one pitch overlap or follow each other (a re-struck note), the frame
holding the new note's start is ONSET and the frames after it are HELD, so a re-strike is always
visible as an onset. Two onsets of one pitch inside one frame give one ONSET. Drum tracks never
enter the 128 pitches. The training-time "either" state (3) is not produced here; a training
recipe may turn labels into it (Auto-Strum semantics, live_engine_and_controls.md §3.2).

Drum flag. A frame is 1 ("drums playing") if it overlaps an interval [t, t + 0.25 s) after any drum
onset t, or lies between two drum onsets less than ``DRUM_GAP_S`` = 2 s apart (the gaps inside a
groove). A drum break longer than 2 s is 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pretty_midi

from openmrt.data.styles import STYLES
from openmrt.data.theory import PITCH_NAMES
from openmrt.frame import FRAME_RATE
from openmrt.tokens import NOTE_HELD, NOTE_OFF, NOTE_ONSET, NUM_PITCHES

__all__ = ["Labels", "caption", "drum_flags", "midi_labels", "n_frames",
           "note_states"]

DRUM_GAP_S = 2.0
DRUM_TAIL_S = 0.25
META_PREFIX = "openmrt:"


@dataclass
class Labels:
    """Frame labels of one example and its descriptive metadata."""

    notes: np.ndarray  # int8 [T, 128]: NOTE_OFF / NOTE_HELD / NOTE_ONSET
    drums: np.ndarray  # int8 [T]: 1 where drums play
    meta: dict = field(default_factory=dict)  # tempo, key, meter, style, instruments, caption


def n_frames(duration_s: float) -> int:
    """Frames needed to cover ``duration_s`` seconds."""
    return max(1, math.ceil(round(duration_s * FRAME_RATE, 6)))


def _frame(t: float) -> int:
    return math.floor(round(t, 6) * FRAME_RATE + 1e-9)


def note_states(notes: Iterable[tuple[float, float, int]], frames: int) -> np.ndarray:
    """(start s, end s, pitch) triples -> int8 [frames, 128] note states (rule in the module doc)."""
    states = np.full((frames, NUM_PITCHES), NOTE_OFF, dtype=np.int8)
    onsets = []
    for start, end, pitch in notes:
        f0 = _frame(start)
        if f0 >= frames or not 0 <= pitch < NUM_PITCHES:
            continue
        f1 = min(frames, max(f0 + 1, math.ceil(round(end, 6) * FRAME_RATE - 1e-9)))  # exclusive
        states[f0 + 1:f1, pitch] = NOTE_HELD
        onsets.append((max(f0, 0), pitch))
    for f, pitch in onsets:  # after all holds: an onset is never overwritten
        states[f, pitch] = NOTE_ONSET
    return states


def drum_flags(
    onsets: Iterable[float], frames: int, gap_s: float = DRUM_GAP_S, tail_s: float = DRUM_TAIL_S
) -> np.ndarray:
    """Drum onset times (s) -> int8 [frames] drums-playing flag (rule in the module doc)."""
    flags = np.zeros(frames, dtype=np.int8)
    times = sorted(t for t in onsets if t >= 0)
    spans = [(t, t + tail_s) for t in times]
    spans += [(a, b) for a, b in zip(times, times[1:], strict=False) if b - a < gap_s]
    for a, b in spans:
        flags[_frame(a):min(frames, max(_frame(a) + 1, math.ceil(round(b, 6) * FRAME_RATE - 1e-9)))] = 1
    return flags


def _meta_events(pm: pretty_midi.PrettyMIDI) -> dict[str, str]:
    out = {}
    for ev in pm.text_events:
        if ev.text.startswith(META_PREFIX) and "=" in ev.text:
            k, v = ev.text[len(META_PREFIX):].split("=", 1)
            out[k] = v
    return out


def midi_labels(pm: pretty_midi.PrettyMIDI, frames: int) -> Labels:
    """All labels of one MIDI piece over ``frames`` frames."""
    notes = note_states(((n.start, n.end, n.pitch) for i in pm.instruments if not i.is_drum for n in i.notes), frames)
    drums = drum_flags([n.start for i in pm.instruments if i.is_drum for n in i.notes], frames)
    tags = _meta_events(pm)
    _, tempi = pm.get_tempo_changes()
    tempo = float(tempi[0]) if len(tempi) else 120.0
    if "mode" in tags and pm.key_signature_changes:
        key = f"{PITCH_NAMES[pm.key_signature_changes[0].key_number % 12]} {tags['mode']}"
    elif pm.key_signature_changes:
        key = pretty_midi.key_number_to_key_name(pm.key_signature_changes[0].key_number).lower().capitalize()
    else:
        key = ""
    ts = pm.time_signature_changes
    meta = {
        "tempo": round(tempo, 2),
        "key": key,
        "meter": f"{ts[0].numerator}/{ts[0].denominator}" if ts else "",
        "style": tags.get("style", ""),
        "instruments": [
            {"program": i.program, "is_drum": i.is_drum, "name": i.name,
             "gm_name": "Drums" if i.is_drum else pretty_midi.program_to_instrument_name(i.program)}
            for i in pm.instruments if i.notes
        ],
        "has_drums": bool(drums.any()),
    }
    meta["caption"] = caption(meta, seed=int(tags.get("seed", 0)))
    return Labels(notes, drums, meta)


def _tempo_word(bpm: float) -> str:
    return "slow" if bpm < 76 else "mid-tempo" if bpm < 100 else "upbeat" if bpm < 126 else "fast"


def caption(meta: dict, seed: int = 0) -> str:
    """Tags then a sentence, e.g. "upbeat disco funk, slap bass, brass stabs, four-on-the-floor
    drums, 118 bpm, E minor. An upbeat, groovy disco funk piece in E minor at 118 bpm with ...".
    """
    style = STYLES.get(meta.get("style", ""))
    label = style.label if style else "instrumental"
    names = []
    for inst in meta.get("instruments", []):
        name = inst.get("name") or inst.get("gm_name", "").lower()
        if name and name not in names and not inst.get("is_drum"):
            names.append(name)
    drums = [i.get("name") or "drums" for i in meta.get("instruments", []) if i.get("is_drum")]
    bpm = int(round(meta.get("tempo", 120)))
    tempo_word = _tempo_word(bpm)
    key = meta.get("key", "")
    tags = [f"{tempo_word} {label}", *names, *(drums[:1] or ["no drums"]), f"{bpm} bpm"] + ([key] if key else [])
    mood = style.moods[seed % len(style.moods)] if style else tempo_word
    listing = ", ".join(names[:-1]) + (" and " if len(names) > 1 else "") + (names[-1] if names else "")
    sentence = f"A {tempo_word}, {mood} {label} piece" + (f" in {key}" if key else "") + f" at {bpm} bpm"
    sentence += (f" with {listing}" if listing else "") + (f", over {drums[0]}." if drums else ", without drums.")
    sentence = sentence.replace("A upbeat", "An upbeat")
    return ", ".join(tags) + ". " + sentence
