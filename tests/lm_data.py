"""A small learnable token-shard folder for LM training tests (no codec needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from openmrt.data.labels import Labels
from openmrt.data.shards import Example, write_index, write_shard


def make_token_shards(root: Path, examples: int = 6, frames: int = 60, seed: int = 0) -> Path:
    """Notes from a random walk of single pitches; each frame's 12 codes are a fixed function of the
    sounding pitch and whether it is an onset, so a model can learn them from the conditioning."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    exs, tokens = [], []
    for e in range(examples):
        notes = np.zeros((frames, 128), np.int8)
        codes = np.zeros((frames, 12), np.int16)
        pitch = 60
        for t in range(frames):
            if t % 6 == 0:
                pitch = int(np.clip(pitch + rng.integers(-3, 4), 40, 80))
            onset = t % 6 == 0
            notes[t, pitch] = 2 if onset else 1
            codes[t] = (pitch * 13 + np.arange(12) * 97 + (500 if onset else 0)) % 1024
        drums = (np.arange(frames) // 10 % 2).astype(np.int8)
        exs.append(Example(np.zeros((2, frames * 1920), np.float32), Labels(notes, drums, {}), {"caption": f"ex{e}"}))
        tokens.append(codes)
    write_shard(root / "shard_00000.npz", exs, per_frame={"tokens": tokens})
    write_index(root, {"kind": "test"})
    return root
