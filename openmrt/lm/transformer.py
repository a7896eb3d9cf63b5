"""Temporal and depth transformer layers (pre + post RMSNorm inside every residual branch)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from openmrt.config import TransformerConfig
from openmrt.lm.attention import Attention, KVCache
from openmrt.lm.layers import FFN, RMSNorm
from openmrt.streaming import StreamState


class _Sublayer(nn.Module):
    """Norms around one sub-layer: y = x + post_norm(f(pre_norm(x)))."""

    def __init__(self, dim: int, eps: float, reduce_fp32: bool):
        super().__init__()
        self.pre_norm = RMSNorm(dim, eps, reduce_fp32)
        self.post_norm = RMSNorm(dim, eps, reduce_fp32)


class AttentionBlock(_Sublayer):
    def __init__(self, dim: int, kv_dim: int, cfg: TransformerConfig, sink: bool, eps: float, reduce_fp32: bool):
        super().__init__(dim, eps, reduce_fp32)
        self.attn = Attention(dim, kv_dim, cfg.num_heads, cfg.head_dim, sink)


class FFNBlock(_Sublayer):
    def __init__(self, cfg: TransformerConfig, eps: float, reduce_fp32: bool):
        super().__init__(cfg.dim, eps, reduce_fp32)
        self.ffn = FFN(cfg.dim, cfg.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.post_norm(self.ffn(self.pre_norm(x)))


@dataclass
class TemporalLayerState(StreamState):
    self_kv: KVCache  # projected keys/values of the last self_window + 1 frames
    cross_kv: KVCache  # projected conditioning of the last cross_window + 1 frames


class TemporalLayer(nn.Module):
    """Self-attention (sliding window + sink), streaming cross-attention (+ sink), FFN.

    Official bf16 compute reduces these RMSNorms in bf16 (``reduce_fp32=False``).
    """

    def __init__(self, cfg: TransformerConfig, enc_dim: int, eps: float):
        super().__init__()
        self.self_attn = AttentionBlock(cfg.dim, cfg.dim, cfg, sink=True, eps=eps, reduce_fp32=False)
        self.cross_attn = AttentionBlock(cfg.dim, enc_dim, cfg, sink=True, eps=eps, reduce_fp32=False)
        self.ffn = FFNBlock(cfg, eps, reduce_fp32=False)

    def forward(self, x: torch.Tensor, src: torch.Tensor, self_mask: torch.Tensor, cross_mask: torch.Tensor):
        """x [B, T, D_t], src [B, T, D_enc] (lock-step), masks [T, T]."""
        h = self.self_attn.pre_norm(x)
        x = x + self.self_attn.post_norm(self.self_attn.attn(h, h, self_mask))
        h = self.cross_attn.pre_norm(x)
        x = x + self.cross_attn.post_norm(self.cross_attn.attn(h, src, cross_mask))
        return self.ffn(x)

    def step(
        self,
        x: torch.Tensor,
        src: torch.Tensor,
        state: TemporalLayerState,
        self_slot: int,
        self_visible: torch.Tensor,
        cross_slot: int,
        cross_visible: torch.Tensor,
    ) -> torch.Tensor:
        """One frame: x [B, D_t], src [B, D_enc]; writes this frame's K/V into the ring slots."""
        blk = self.self_attn
        h = blk.pre_norm(x)
        k, v = blk.attn.project_kv(h)
        state.self_kv.k[:, self_slot] = k
        state.self_kv.v[:, self_slot] = v
        x = x + blk.post_norm(blk.attn.step(h, state.self_kv, self_visible))
        blk = self.cross_attn
        k, v = blk.attn.project_kv(src)
        state.cross_kv.k[:, cross_slot] = k
        state.cross_kv.v[:, cross_slot] = v
        x = x + blk.post_norm(blk.attn.step(blk.pre_norm(x), state.cross_kv, cross_visible))
        return self.ffn(x)


class DepthLayer(nn.Module):
    """Causal self-attention over the levels of one frame (no sink), FFN; norms reduce in f32."""

    def __init__(self, cfg: TransformerConfig, eps: float):
        super().__init__()
        self.self_attn = AttentionBlock(cfg.dim, cfg.dim, cfg, sink=False, eps=eps, reduce_fp32=True)
        self.ffn = FFNBlock(cfg, eps, reduce_fp32=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.self_attn.pre_norm(x)
        x = x + self.self_attn.post_norm(self.self_attn.attn(h, h, mask))
        return self.ffn(x)

    def step(self, x: torch.Tensor, cache: KVCache, slot: int, visible: torch.Tensor) -> torch.Tensor:
        blk = self.self_attn
        h = blk.pre_norm(x)
        k, v = blk.attn.project_kv(h)
        cache.k[:, slot] = k
        cache.v[:, slot] = v
        x = x + blk.post_norm(blk.attn.step(h, cache, visible))
        return self.ffn(x)
