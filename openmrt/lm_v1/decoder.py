"""The two decoder stacks (shared/spec/mrt_v1.md §6): temporal layers (causal self-attention with the
128-bucket relative bias, cross-attention to the encoder, MLP) over frames, and depth layers (causal
self-attention with the 16-bucket bias, MLP) over the 16 levels of one frame."""

from __future__ import annotations

import torch
from torch import nn

from openmrt.lm_v1.attention import Attention, KVCache, mask_bias
from openmrt.lm_v1.config import V1Config
from openmrt.lm_v1.layers import GatedMLP, RelativeBias, RMSNorm


class DecoderLayer(nn.Module):
    def __init__(self, cfg: V1Config, cross: bool):
        super().__init__()
        self.self_norm = RMSNorm(cfg.dim, cfg.eps)
        self.self_attn = Attention(cfg.dim, cfg.num_heads, cfg.head_dim)
        if cross:
            self.cross_norm = RMSNorm(cfg.dim, cfg.eps)
            self.cross_attn = Attention(cfg.dim, cfg.num_heads, cfg.head_dim)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.eps)
        self.mlp = GatedMLP(cfg.dim, cfg.mlp_dim)

    def _cross_mlp(self, x: torch.Tensor, cross: KVCache | None, cross_bias: torch.Tensor | None) -> torch.Tensor:
        if cross is not None:
            x = x + self.cross_attn.attend(self.cross_attn.split(self.cross_attn.query(self.cross_norm(x))),
                                           cross.k, cross.v, cross_bias)
        return x + self.mlp(self.mlp_norm(x))

    def forward(self, x: torch.Tensor, bias: torch.Tensor, cross: KVCache | None = None,
                cross_bias: torch.Tensor | None = None) -> torch.Tensor:
        """Whole sequence: x [B, T, D]; ``cross`` holds the encoder's projected keys/values for this layer."""
        h = self.self_norm(x)
        return self._cross_mlp(x + self.self_attn(h, h, bias), cross, cross_bias)

    def step(self, x: torch.Tensor, cache: KVCache, pos: torch.Tensor, bias: torch.Tensor, cross: KVCache | None = None,
             cross_bias: torch.Tensor | None = None) -> torch.Tensor:
        """One position: x [B, 1, D] at ``pos`` ([1] index tensor); ``bias`` [1, H, 1, capacity] (relative bias
        + causal mask)."""
        x = x + self.self_attn.step(self.self_norm(x), cache, pos, bias)
        return self._cross_mlp(x, cross, cross_bias)


def causal_bias(rel: RelativeBias, length: int) -> torch.Tensor:
    """[1, H, length, length]: the relative bias plus -1e10 on keys after the query."""
    i = torch.arange(length, device=rel.weight.device)
    return rel(length, length) + mask_bias(i[None, :] <= i[:, None])


class Stack(nn.Module):
    """A stack of decoder layers sharing one relative-position bias (temporal: with cross-attention)."""

    def __init__(self, cfg: V1Config, num_layers: int, cross: bool, buckets: int, max_distance: int):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(cfg, cross) for _ in range(num_layers))
        self.rel_bias = RelativeBias(cfg.num_heads, buckets, max_distance)

    def forward(self, x: torch.Tensor, cross: list[KVCache] | None = None,
                cross_bias: torch.Tensor | None = None) -> torch.Tensor:
        bias = causal_bias(self.rel_bias, x.shape[1])
        for i, layer in enumerate(self.layers):
            x = layer(x, bias, None if cross is None else cross[i], cross_bias)
        return x

    def step(self, x: torch.Tensor, caches: list[KVCache], pos: torch.Tensor, bias: torch.Tensor,
             cross: list[KVCache] | None = None, cross_bias: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, 1, D] at ``pos``; ``bias`` is row ``pos`` of ``causal_bias`` (precomputed per chunk)."""
        for i, layer in enumerate(self.layers):
            x = layer.step(x, caches[i], pos, bias, None if cross is None else cross[i], cross_bias)
        return x
