"""Multi-head attention with a per-dim query scale, an optional learned attention sink and a
sliding window; no positional encoding (NoPE).

Whole-sequence mode (``forward``) uses a banded causal mask: query i sees keys j with
i - window <= j <= i. Step mode (``step``) keeps the last ``window + 1`` keys/values in a
fixed-size ring buffer (``KVCache``). With no positions in the model, attention is invariant
to the order of cache slots, so a ring buffer needs no re-shifting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from openmrt.streaming import StreamState

INVALID_LOGIT = -1e9  # official mask value for invisible keys
R_SOFTPLUS_0 = 1.442695041  # 1 / softplus(0): per_dim_scale = 0 gives exactly 1/sqrt(dh)


@dataclass
class KVCache(StreamState):
    """Ring buffer of projected keys/values: [B, capacity, H, dh] each."""

    k: torch.Tensor
    v: torch.Tensor

    @staticmethod
    def empty(batch: int, capacity: int, heads: int, head_dim: int, device, dtype) -> KVCache:
        shape = (batch, capacity, heads, head_dim)
        return KVCache(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))


class Attention(nn.Module):
    """Attention of ``x`` [B, T, D] over ``source`` [B, S, D_kv] (self-attention: source = x)."""

    def __init__(self, dim: int, kv_dim: int, num_heads: int, head_dim: int, sink: bool):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        inner = num_heads * head_dim
        self.q = nn.Linear(dim, inner, bias=False)
        self.k = nn.Linear(kv_dim, inner, bias=False)
        self.v = nn.Linear(kv_dim, inner, bias=False)
        self.o = nn.Linear(inner, dim, bias=False)
        self.per_dim_scale = nn.Parameter(torch.zeros(head_dim))
        if sink:
            self.sink_k = nn.Parameter(torch.zeros(1, num_heads, head_dim))
            self.sink_v = nn.Parameter(torch.zeros(1, num_heads, head_dim))
        else:
            self.register_parameter("sink_k", None)
            self.register_parameter("sink_v", None)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim))

    def project_kv(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[..., D_kv] -> k, v [..., H, dh]."""
        return self._heads(self.k(source)), self._heads(self.v(source))

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """q [B, T, H, dh]; k, v [B, S, H, dh]; visible [T, S] or [B, T, S] bool -> [B, T, D]."""
        scale = (R_SOFTPLUS_0 / math.sqrt(self.head_dim)) * F.softplus(self.per_dim_scale.float())
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, *, dh]
        if visible.dim() == 3:
            visible = visible[:, None]
        if self.sink_k is not None:
            # The sink logit uses the UNSCALED query (official quirk): q . k_s = (q * scale) . (k_s / scale),
            # so the sink becomes one more key in scaled-query space, always visible.
            b = q.shape[0]
            sink_k = (self.sink_k.float() / scale).to(k.dtype).transpose(0, 1).expand(b, -1, -1, -1)
            k = torch.cat([sink_k, k], dim=2)
            v = torch.cat([self.sink_v.transpose(0, 1).expand(b, -1, -1, -1), v], dim=2)
            visible = F.pad(visible, (1, 0), value=True)
        ctx = F.scaled_dot_product_attention(q * scale.to(q.dtype), k, v, attn_mask=visible, scale=1.0)
        return self.o(ctx.transpose(1, 2).flatten(-2))

    def forward(self, x: torch.Tensor, source: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """Whole-sequence attention; ``visible`` [T, S] is the (banded) mask."""
        k, v = self.project_kv(source)
        return self._attend(self._heads(self.q(x)), k, v, visible)

    def step(self, x: torch.Tensor, cache: KVCache, visible: torch.Tensor) -> torch.Tensor:
        """One query per row: x [B, D] over the cached keys ([B, capacity] visible) -> [B, D]."""
        q = self._heads(self.q(x))[:, None]
        return self._attend(q, cache.k, cache.v, visible[:, None])[:, 0]


def band_mask(t: int, s: int, window: int | None, device=None) -> torch.Tensor:
    """[T, S] bool: query i sees keys j with i - window <= j <= i (window None: all j <= i)."""
    i = torch.arange(t, device=device)[:, None]
    j = torch.arange(s, device=device)[None, :]
    m = j <= i
    if window is not None:
        m &= j >= i - window
    return m
