"""T5 building blocks as the official flaxformer stack uses them (shared/spec/mrt_v1.md §3):
RMSNorm, gated-GELU MLP, the relative-position buckets and the encoder's sinusoidal table."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """T5LayerNorm: x * rsqrt(mean(x^2) + eps) * scale, no centring, no bias."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


class GatedMLP(nn.Module):
    """wo(gelu_tanh(x wi_0) * (x wi_1)); flax's gelu is the tanh approximation."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.wi_0 = nn.Linear(dim, hidden, bias=False)
        self.wi_1 = nn.Linear(dim, hidden, bias=False)
        self.wo = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(F.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x))


def relative_buckets(rel: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Unidirectional T5 buckets of ``rel = key_pos - query_pos`` (int tensor): distance n = max(-rel, 0);
    exact below num_buckets/2, log-spaced above (computed in float32 like the official numpy code)."""
    n = torch.clamp(-rel, min=0)
    max_exact = num_buckets // 2
    eps = float(np.finfo(np.float32).eps)
    large = max_exact + (
        torch.log(n.float() / max_exact + eps) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).to(torch.int64)
    large = torch.clamp(large, max=num_buckets - 1)
    return torch.where(n < max_exact, n, large)


class RelativeBias(nn.Module):
    """Per-head learned bias rel_embedding[h, bucket(k - q)], added to the attention logits."""

    def __init__(self, heads: int, num_buckets: int, max_distance: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(heads, num_buckets))
        self.num_buckets, self.max_distance = num_buckets, max_distance

    def forward(self, q_len: int, k_len: int) -> torch.Tensor:
        """[1, H, q_len, k_len] for query positions 0..q_len-1 and key positions 0..k_len-1."""
        q = torch.arange(q_len, device=self.weight.device)
        k = torch.arange(k_len, device=self.weight.device)
        b = relative_buckets(k[None, :] - q[:, None], self.num_buckets, self.max_distance)
        return self.weight[:, b][None]


def sinusoid_table(length: int, dim: int) -> torch.Tensor:
    """FixedEmbed [length, dim]: sin(p * 10000^(-i/(dim/2 - 1))) in the first half, cos in the second,
    computed in float64 and stored as float32 (the official table is built with numpy)."""
    half = dim // 2
    pos = np.arange(length, dtype=np.float64)[:, None]
    freq = np.exp(np.arange(half, dtype=np.float64) * (-math.log(10000.0) / (half - 1)))
    pe = np.zeros((length, dim), dtype=np.float32)
    pe[:, :half] = np.sin(pos * freq)
    pe[:, half : 2 * half] = np.cos(pos * freq)
    return torch.from_numpy(pe)
