"""Sampling one RVQ level (shared/spec/mrt2_lm.md §9, §10.2), in the official order:

1. batched CFG on the soft-capped f32 logits: pos + sum_i s_i * (pos - neg_i), accumulated in order;
2. restrict to the level's 1024 valid ids (the callers pass only that slice);
3. top-k on the UNSCALED logits (ties at the k-th value survive);
4. temperature through Gumbel-max: argmax(l + T * g); T = 0 is greedy.
"""

from __future__ import annotations

import torch


def cfg_mix(logits: torch.Tensor, scales: list[float]) -> torch.Tensor:
    """logits [G, A, V] rows [pos, neg_1, ...], scales [s_1, ...] -> guided [G, V]."""
    pos = logits[:, 0]
    out = pos
    for i, s in enumerate(scales, start=1):
        out = out + s * (pos - logits[:, i])
    return out


def top_k_mask(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep entries >= the k-th largest (per row); others -> -inf."""
    k = max(1, min(int(k), logits.shape[-1]))
    if k == logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def sample(logits: torch.Tensor, temperature: float, top_k: int, gumbel: torch.Tensor | None) -> torch.Tensor:
    """logits [G, V] (f32, one level's slice) -> index [G] in 0..V-1."""
    l = top_k_mask(logits, top_k)
    if temperature > 0:
        if gumbel is None:
            raise ValueError("temperature > 0 needs Gumbel noise")
        l = l + temperature * gumbel
    return torch.argmax(l, dim=-1)


# --------------------------------------------------------------------------- graph-safe versions
# Controls as device tensors of shape [G] (one value per stream) and noise from a counter-based
# hash: nothing reads a value back to the host, no shape depends on data, so the same code runs
# eagerly and inside a CUDA graph, and changing a control never recaptures.

_M32 = 0xFFFFFFFF


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xorshift-multiply, a bijection on 0..2^32-1) of int64 tensors
    holding 32-bit values. Both multipliers are below 2^31, so products stay below 2^63."""
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & _M32
    return x ^ (x >> 15)


def noise_index(levels: int, size: int, device=None) -> torch.Tensor:
    """The per-draw constant of ``hashed_gumbel``: mix32 of the flat (level, index) counter."""
    return mix32(torch.arange(levels * size, device=device, dtype=torch.long)).view(levels, size)


def hashed_gumbel(seed: torch.Tensor, frame: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Gumbel noise [G, levels, size] that is a pure function of (seed, frame, level, index).

    Each stream's noise depends only on its own seed and frame counter (not on the other rows,
    on the batch size or on the device), so a stream replays exactly after reset or reload.
    seed, frame: [G] int64; index: ``noise_index(levels, size)``.
    """
    key = mix32(mix32(seed & _M32) ^ (frame & _M32))  # [G]
    bits = mix32(key[:, None, None] ^ index)  # [G, levels, size]
    u = ((bits >> 8).float() + 0.5) * (1.0 / (1 << 24))  # 24 bits: exact in float32, in (0, 1)
    return -torch.log(-torch.log(u))


def cfg_mix_rows(logits: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``cfg_mix`` with per-stream scales: logits [G, A, V], scales [G, A-1] -> [G, V]."""
    pos = logits[:, 0]
    out = pos
    for i in range(1, logits.shape[1]):
        out = out + scales[:, i - 1 : i] * (pos - logits[:, i])
    return out


def sample_rows(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor,
                gumbel: torch.Tensor) -> torch.Tensor:
    """``sample`` with per-stream settings: logits [G, V] f32, temperature [G] (0 = greedy),
    top_k [G] int64 in 1..V, gumbel [G, V] -> index [G]. The k-th largest value comes from one
    sort, so each row keeps its own k; ties at the k-th value survive, as in ``top_k_mask``."""
    kth = torch.sort(logits, dim=-1, descending=True).values.gather(-1, (top_k - 1)[:, None])
    l = logits.masked_fill(logits < kth, float("-inf"))
    return torch.argmax(l + temperature[:, None] * gumbel, dim=-1)
