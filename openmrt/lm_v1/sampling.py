"""v1 sampling over the whole vocabulary (shared/spec/mrt_v1.md §7), in the official order:
CFG on row pairs, divide by the temperature, top-k (ties at the k-th value kept), Gumbel-max.
Unlike MRT2 there is no per-level restriction of the candidate ids."""

from __future__ import annotations

import torch

TOPK_MASKED = -1e7  # t5x's NEG_INF for logits outside the top-k
GREEDY_BELOW = 1e-4  # t5x: temperatures at or below this take the argmax


def cfg_combine(logits: torch.Tensor, weight: float | torch.Tensor) -> torch.Tensor:
    """logits [2G, V] as (conditioned, unconditioned) row pairs -> (1+w) L0 - w L1 repeated to both rows
    of each pair (the official repeats the guided row); a number w = 0 leaves every row as it is (a tensor
    weight, as a CUDA graph reads it, always combines)."""
    if not torch.is_tensor(weight) and weight == 0:
        return logits
    pairs = logits.unflatten(0, (-1, 2))
    guided = (1 + weight) * pairs[:, 0] - weight * pairs[:, 1]
    return guided.repeat_interleave(2, dim=0)


def top_k_mask(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep values >= the k-th largest per row; the rest -> -1e7. k <= 0 keeps everything."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, TOPK_MASKED)


def gumbel_noise(shape: tuple[int, ...], generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """-log(-log(U)), U uniform in (0, 1)."""
    u = torch.rand(shape, generator=generator, device=device).clamp_(min=torch.finfo(torch.float32).tiny)
    return -torch.log(-torch.log(u))


def sample(logits: torch.Tensor, temperature: float | torch.Tensor, top_k: int, gumbel: torch.Tensor | None = None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """logits [B, V] float32 -> ids [B]. ``gumbel`` [B, V] injects the noise (e.g. the official run's);
    without it the noise is drawn from ``generator``. A number temperature <= 1e-4 takes the argmax (a tensor
    one, as a CUDA graph reads it, never: the caller decides greedy decoding)."""
    if not torch.is_tensor(temperature) and temperature <= GREEDY_BELOW:
        return logits.argmax(-1)
    l = top_k_mask(logits / temperature, top_k)
    if gumbel is None:
        gumbel = gumbel_noise(tuple(l.shape), generator, l.device)
    return (l + gumbel).argmax(-1)
