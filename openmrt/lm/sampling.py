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


def gumbel_noise(shape: tuple[int, ...], generator: torch.Generator | None, device=None) -> torch.Tensor:
    """Standard Gumbel noise: -log(E) with E ~ Exp(1)."""
    e = torch.empty(shape, device=device, dtype=torch.float32).exponential_(generator=generator)
    return -torch.log(e)


def sample(logits: torch.Tensor, temperature: float, top_k: int, gumbel: torch.Tensor | None) -> torch.Tensor:
    """logits [G, V] (f32, one level's slice) -> index [G] in 0..V-1."""
    l = top_k_mask(logits, top_k)
    if temperature > 0:
        if gumbel is None:
            raise ValueError("temperature > 0 needs Gumbel noise")
        l = l + temperature * gumbel
    return torch.argmax(l, dim=-1)
