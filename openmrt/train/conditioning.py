"""Training conditioning: the 144 channels built from labels, with the paper's augmentations.

Each augmentation is a deterministic function of explicit choices (easy to check by hand),
plus one random wrapper, ``augment``, that draws those choices. Raw values: -1 masked,
notes 0 off / 1 held / 2 onset / 3 on (model picks the onset), drums 0/1.

Order inside ``augment``: pitch-dimension masking and onset masking rewrite the note states,
contiguous regions are masked per signal, in some examples a whole signal on every frame (the style:
no prompt; the notes: no MIDI held; the drums flag: "auto"), then every token may drop out on its own (0.15).
The CFG channels carry the scales the model should read (defaults, or sampled for the
guidance-distillation stage).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from openmrt import tokens as tk

MASK = tk.MASKED


# --------------------------------------------------------------------------- deterministic cores
def drop_tokens(x: np.ndarray, drop: np.ndarray) -> np.ndarray:
    """Mask the entries where ``drop`` is True."""
    return np.where(drop, MASK, x)


def mask_region(x: np.ndarray, start: int, length: int) -> np.ndarray:
    """Mask frames [start, start + length) of a [T, ...] signal (every channel of it)."""
    y = x.copy()
    y[start : start + length] = MASK
    return y


def note_runs(notes: np.ndarray) -> list[tuple[int, int, int]]:
    """Notes as (pitch, first frame, end frame): an onset (2) and the held (1) frames after it."""
    runs = []
    t_len = len(notes)
    for p in range(notes.shape[1]):
        col = notes[:, p]
        for t in np.flatnonzero(col == tk.NOTE_ONSET):
            end = t + 1
            while end < t_len and col[end] == tk.NOTE_HELD:
                end += 1
            runs.append((p, int(t), int(end)))
    return runs


def mask_onsets(notes: np.ndarray, runs: list[tuple[int, int, int]]) -> np.ndarray:
    """Replace the onset/held states of the given notes with 3 ("on, onset left to the model"),
    as Auto-Strum sends them at play time."""
    y = notes.copy()
    for p, a, b in runs:
        y[a:b, p] = tk.NOTE_ON_EITHER
    return y


def unmask_width(notes: np.ndarray, width: int) -> np.ndarray:
    """Pitch-dimension masking, the live engine's unmask width per frame: pitches within ±width
    of a sounding note are off, the rest masked; width >= 127 keeps every pitch (Solo)."""
    if width >= 127:
        return notes.copy()
    y = np.full_like(notes, MASK)
    for t, p in zip(*np.nonzero(notes > tk.NOTE_OFF), strict=True):
        y[t, max(0, p - width) : p + width + 1] = np.maximum(y[t, max(0, p - width) : p + width + 1], tk.NOTE_OFF)
    sounding = notes > tk.NOTE_OFF
    y[sounding] = notes[sounding]
    return y


def sticky(style: np.ndarray, keep_previous: np.ndarray) -> np.ndarray:
    """Style tokens [T, L] where frame t copies frame t-1's *output* when ``keep_previous[t]``."""
    y = style.copy()
    for t in range(1, len(y)):
        if keep_previous[t]:
            y[t] = y[t - 1]
    return y


def assemble(style: np.ndarray, notes: np.ndarray, drums: np.ndarray,
             cfg: dict[str, float] | None = None) -> np.ndarray:
    """[T, 12] style, [T, 128] notes, [T] drums -> [T, 144] raw conditioning with CFG codes."""
    t = len(notes)
    out = np.empty((t, tk.NUM_COND), dtype=np.int64)
    out[:, tk.STYLE] = style
    out[:, tk.NOTES] = notes
    out[:, tk.DRUMS] = drums
    out[:, tk.CFG_STYLE :] = tk.cfg_codes(cfg)
    return out


# --------------------------------------------------------------------------- random wrapper
@dataclass(frozen=True)
class Augment:
    token_dropout: float = 0.15  # each style level / pitch / drums token, independently
    region_prob: float = 0.3  # per signal and example: mask one contiguous region...
    region_scale: float = 0.5  # ...of up to this fraction of the crop
    onset_mask_prob: float = 0.5  # per example: Auto-Strum-style onset masking...
    onset_mask_frac: float = 0.5  # ...of this fraction of its notes
    pitch_mask_prob: float = 0.5  # per example: unmask-width masking with a random width
    widths: tuple[int, ...] = (0, 0, 1, 2, 4, 7, 12)
    sticky: float = 0.995  # style: keep the previous frame's tokens
    style_levels: tuple[int, ...] = (6, 12)  # live play uses the coarsest 6: train on both
    drums_auto_prob: float = 0.2  # per example: the drums flag masked on every frame, as live play's default
    # ("let the model decide") sends it; without it a whole masked window never occurs in training
    notes_free_prob: float = 0.15  # per example: every pitch masked on every frame, as live play sends with no
    # MIDI held (a prompt alone); region masks cover at most region_scale of a crop
    style_free_prob: float = 0.1  # per example: the style masked on every frame (no prompt; CFG's unconditioned row)


def augment(style: np.ndarray, notes: np.ndarray, drums: np.ndarray, rng: np.random.Generator,
            aug: Augment = Augment(), cfg: dict[str, float] | None = None, fixed_drums: bool = False) -> np.ndarray:
    """One training example's conditioning [T, 144] from its labels.

    ``fixed_drums``: the drums flag is never masked (drumless twins: edited copies made to teach "off"; masked,
    they would teach the model that "decide" means no drums for half the pieces that have them)."""
    t = len(notes)
    style = sticky(style, rng.random(t) < aug.sticky)
    levels = int(rng.choice(aug.style_levels))
    style = style.copy()
    style[:, levels:] = MASK
    if rng.random() < aug.pitch_mask_prob:
        notes = unmask_width(notes, int(rng.choice(aug.widths)))
    if rng.random() < aug.onset_mask_prob:
        runs = note_runs(notes)
        chosen = [r for r in runs if rng.random() < aug.onset_mask_frac]
        notes = mask_onsets(notes, chosen)
    signals = [style, notes, drums]
    for i, x in enumerate(signals):
        if t and rng.random() < aug.region_prob:
            length = int(np.ceil(rng.random() * aug.region_scale * t))
            signals[i] = mask_region(x, int(rng.integers(0, t)), length)
    for i, prob in enumerate((aug.style_free_prob, aug.notes_free_prob, aug.drums_auto_prob)):
        if prob and rng.random() < prob:
            signals[i] = np.full_like(signals[i], MASK)
    style, notes, masked_drums = (drop_tokens(x, rng.random(x.shape) < aug.token_dropout) for x in signals)
    return assemble(style, notes, drums if fixed_drums else masked_drums, cfg)
