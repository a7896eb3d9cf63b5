"""T5 multi-head attention with UNSCALED logits (no 1/sqrt(head_dim); rescale_logits=False in the
official config) and an additive bias carrying both the relative positions and the mask.

Masked pairs get -1e10 added, as flax does: in float32 that swamps any logit, so a fully masked
query row becomes uniform (the official behaviour) and masked cache slots get weight exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from openmrt.streaming import StreamState

MASKED = -1e10


@dataclass
class KVCache(StreamState):
    """Projected keys/values [B, capacity, H, hd]; slot p holds position p."""

    k: torch.Tensor
    v: torch.Tensor

    @staticmethod
    def empty(batch: int, capacity: int, heads: int, head_dim: int, device=None, dtype=torch.float32) -> KVCache:
        shape = (batch, capacity, heads, head_dim)
        return KVCache(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))


def mask_bias(visible: torch.Tensor) -> torch.Tensor:
    """bool -> additive float bias (0 where visible, -1e10 elsewhere)."""
    return torch.where(visible, 0.0, MASKED)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.query = nn.Linear(dim, inner, bias=False)
        self.key = nn.Linear(dim, inner, bias=False)
        self.value = nn.Linear(dim, inner, bias=False)
        self.out = nn.Linear(inner, dim, bias=False)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, self.head_dim))

    def project_kv(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, S, D] -> k, v [B, S, H, hd]."""
        return self.split(self.key(source)), self.split(self.value(source))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """q [B, T, H, hd], k/v [B, S, H, hd], bias broadcastable to [B, H, T, S] -> [B, T, D]."""
        # Softmax in float32 whatever the compute dtype (a no-op in the float32 parity runs).
        logits = torch.einsum("bthd,bshd->bhts", q, k).float() + bias.float()
        w = torch.softmax(logits, dim=-1).to(v.dtype)
        return self.out(torch.einsum("bhts,bshd->bthd", w, v).flatten(-2))

    def forward(self, x: torch.Tensor, source: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        k, v = self.project_kv(source)
        return self.attend(self.split(self.query(x)), k, v, bias)

    def step(self, x: torch.Tensor, cache: KVCache, pos: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Self-attention of one new position: x [B, 1, D] is written to slot ``pos`` ([1] index tensor) of the
        cache, then attends over the whole cache (``bias`` [.., 1, capacity] hides slots after ``pos``)."""
        k, v = self.project_kv(x)
        cache.k.index_copy_(1, pos, k)
        cache.v.index_copy_(1, pos, v)
        return self.attend(self.split(self.query(x)), cache.k, cache.v, bias)
