"""A small learnable token-shard folder for LM training tests (no codec needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from openmrt.data.labels import Labels
from openmrt.data.shards import Example, write_index, write_shard


def note_codes(pitch: int, onset: bool) -> np.ndarray:
    """The 12 codes a frame has when it follows its note (a fixed function of pitch and onset)."""
    return (pitch * 13 + np.arange(12) * 97 + (500 if onset else 0)) % 1024


DISTRACTOR = (np.arange(12) * 53 + 301) % 1024  # the codes of a frame that ignores its note


def make_token_shards(root: Path, examples: int = 6, frames: int = 60, seed: int = 0, follow: float = 1.0,
                      hold: int = 6, pitches: tuple[int, ...] | None = None) -> Path:
    """Single pitches, a new one every ``hold`` frames; each frame's 12 codes are ``note_codes`` of the
    sounding pitch, so a model can learn them from the conditioning, or, with probability
    1 − ``follow``, the fixed ``DISTRACTOR`` codes whatever the note (a model then follows the notes
    only as hard as guidance makes it). Pitches walk by up to 3 semitones, or are drawn afresh from
    ``pitches`` (then the previous frames do not give the next note away)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    exs, tokens = [], []
    for e in range(examples):
        notes = np.zeros((frames, 128), np.int8)
        codes = np.zeros((frames, 12), np.int16)
        pitch = 60
        for t in range(frames):
            if t % hold == 0:
                pitch = int(np.clip(pitch + rng.integers(-3, 4), 40, 80)) if pitches is None else int(rng.choice(pitches))
            onset = t % hold == 0
            notes[t, pitch] = 2 if onset else 1
            codes[t] = note_codes(pitch, onset) if follow >= 1.0 or rng.random() < follow else DISTRACTOR
        drums = (np.arange(frames) // 10 % 2).astype(np.int8)
        exs.append(Example(np.zeros((2, frames * 1920), np.float32), Labels(notes, drums, {}), {"caption": f"ex{e}"}))
        tokens.append(codes)
    path = root / "shard_00000.npz"
    write_shard(path, exs)
    with np.load(path) as z:
        arrays = dict(z)
    arrays["tokens"] = np.concatenate(tokens)
    np.savez(path, **arrays)
    write_index(root, {"kind": "test"})
    return root
