"""The MRT2 token layout (shared/spec/mrt2_lm.md §2).

Target tokens: one flat 12294-id space. Ids 0..5 are reserved (0 = SOS); RVQ level q with codec
code c is ``6 + 1024*q + c``.

Conditioning: 144 raw int channels per frame (12 style, 128 pitches, 1 drums, 3 CFG-scale codes),
each shifted by +7 before the model so that masked (-1) becomes 6, the dropout token.
"""

from __future__ import annotations

import numpy as np
import torch

NUM_RESERVED = 6
SOS_ID = 0
NUM_LEVELS = 12
CODEBOOK_SIZE = 1024
VOCAB_SIZE = NUM_RESERVED + NUM_LEVELS * CODEBOOK_SIZE  # 12294

# Conditioning channels, in order.
NUM_STYLE = 12
NUM_PITCHES = 128
STYLE = slice(0, 12)
NOTES = slice(12, 140)
DRUMS = 140
CFG_STYLE, CFG_NOTES, CFG_DRUMS = 141, 142, 143
NUM_COND = 144
COND_OFFSET = NUM_RESERVED + 1  # +7: masked (-1) -> 6
MASKED = -1

STYLE_VOCAB = 1024 + NUM_RESERVED + 1  # 1031 rows per style level in the dequantizer table
# Regular (non-style) channels 12..143 and their vocab sizes: 128 pitches (4 states + 7),
# drums (2 + 7), the two 0.2-step CFG codes (41 + 6), the drums CFG code (9 + 6).
REGULAR_VOCABS = [11] * NUM_PITCHES + [9, 47, 47, 15]
REGULAR_OFFSETS = np.concatenate([[0], np.cumsum(REGULAR_VOCABS)[:-1]]).astype(np.int64)
REGULAR_ROWS = 1536  # 1526 rounded up to a multiple of 128; the padding rows are reachable (CFG 7.0)

# Note states per pitch (raw values).
NOTE_OFF, NOTE_HELD, NOTE_ONSET, NOTE_ON_EITHER = 0, 1, 2, 3

# CFG-scale binning: (step, max_bin) per signal.
CFG_STEP = {"musiccoca": 0.2, "notes": 0.2, "drums": 1.0}
CFG_MAX_BIN = {"musiccoca": 40, "notes": 40, "drums": 8}
CFG_DEFAULTS = {"musiccoca": 3.0, "notes": 1.0, "drums": 1.0}


def discretize_cfg(scale: float, signal: str) -> int:
    """Guidance scale -> CFG code: clamp to [-1, 7], bin, round half to even (Python's round).

    Code 40 (7.0) for style/notes and 8 for drums keep the official overflow into the next
    channel's rows of the flat regular table; that happens in the encoder, not here.
    """
    step, max_bin = CFG_STEP[signal], CFG_MAX_BIN[signal]
    s = min(max(float(scale), -1.0), 7.0)
    return int(min(max(round((s + 1.0) / step), 0), max_bin))


def cfg_value(code: int, signal: str) -> float:
    """The scale a CFG code represents."""
    return -1.0 + CFG_STEP[signal] * code


def cfg_codes(scales: dict[str, float] | None = None) -> list[int]:
    """The three CFG channels [musiccoca, notes, drums]; missing keys use the official defaults."""
    scales = scales or {}
    return [discretize_cfg(scales.get(k, CFG_DEFAULTS[k]), k) for k in ("musiccoca", "notes", "drums")]


def to_unique(codes: torch.Tensor) -> torch.Tensor:
    """Codec codes [..., L] (0..1023) -> unique token ids 6 + 1024*q + c."""
    levels = torch.arange(codes.shape[-1], device=codes.device)
    return codes + NUM_RESERVED + CODEBOOK_SIZE * levels


def from_unique(tokens: torch.Tensor) -> torch.Tensor:
    """Unique token ids -> codec codes, (id - 6) mod 1024."""
    return (tokens - NUM_RESERVED) % CODEBOOK_SIZE


def level_slice(q: int) -> slice:
    """The ids level q may produce."""
    start = NUM_RESERVED + CODEBOOK_SIZE * q
    return slice(start, start + CODEBOOK_SIZE)


def encode_conditioning(raw: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Raw conditioning values [..., 144] (-1 masked) -> model input (+7)."""
    t = torch.as_tensor(np.asarray(raw) if not isinstance(raw, torch.Tensor) else raw)
    if t.shape[-1] != NUM_COND:
        raise ValueError(f"conditioning has {t.shape[-1]} channels, expected {NUM_COND}")
    return t.long() + COND_OFFSET


def make_conditioning(
    style: list[int] | np.ndarray | None = None,
    notes: list[int] | np.ndarray | None = None,
    drums: int = MASKED,
    cfg: dict[str, float] | None = None,
) -> np.ndarray:
    """One frame of raw conditioning (144 ints). Missing signals are masked (-1)."""
    row = np.full(NUM_COND, MASKED, dtype=np.int64)
    if style is not None:
        s = np.asarray(style, dtype=np.int64)
        row[: len(s)] = s  # fewer than 12 levels: the finer ones stay masked
    if notes is not None:
        row[NOTES] = np.asarray(notes, dtype=np.int64)
    row[DRUMS] = drums
    row[CFG_STYLE:] = cfg_codes(cfg)
    return row
