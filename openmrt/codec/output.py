"""The official output gain stage (shared/spec/spectrostream.md §11, golden/seeded/README.md §3.3).

The official system maps the decoder's float audio y to int16 with
``round_half_even(32767.5 · clip(0.5 · y, −1, 1) − 0.5)``, evaluated in float32 with one
rounding per operation, and its Python ``generate()`` then divides by 32768. The result is
about half the decoder output (−6 dB), quantised, and hard-clipped where |y| > 2.
"""

from __future__ import annotations

import torch


def to_int16(y: torch.Tensor) -> torch.Tensor:
    """Raw decoder audio (any shape, float) -> int16, exactly as the official API does."""
    y = y.to(torch.float32)
    t = torch.clamp(y * 0.5, -1.0, 1.0)  # each op rounds once in float32 (no fused multiply-add)
    t = t * 32767.5
    t = t - 0.5
    return torch.round(t).to(torch.int16)  # torch.round rounds half to even


def official_output(y: torch.Tensor) -> torch.Tensor:
    """Raw decoder audio -> the float waveform the official ``generate()`` returns: int16 / 32768."""
    return to_int16(y).to(torch.float32) / 32768.0
