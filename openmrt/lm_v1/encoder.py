"""The T5 encoder over the 1006 context + style ids (shared/spec/mrt_v1.md §5): token embedding plus the
fixed sinusoidal table, pre-norm layers without any relative bias, a final RMSNorm."""

from __future__ import annotations

import torch
from torch import nn

from openmrt.lm_v1.attention import Attention, mask_bias
from openmrt.lm_v1.config import V1Config
from openmrt.lm_v1.layers import GatedMLP, RMSNorm, sinusoid_table


class EncoderLayer(nn.Module):
    def __init__(self, cfg: V1Config):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.eps)
        self.attn = Attention(cfg.dim, cfg.num_heads, cfg.head_dim)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.eps)
        self.mlp = GatedMLP(cfg.dim, cfg.mlp_dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        h = self.attn_norm(x)
        x = x + self.attn(h, h, bias)
        return x + self.mlp(self.mlp_norm(x))


class Encoder(nn.Module):
    def __init__(self, cfg: V1Config):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.norm = RMSNorm(cfg.dim, cfg.eps)
        # A constant, not a weight: rebuilt on load, so it is kept out of the state dict.
        self.register_buffer("positions", sinusoid_table(cfg.encoder_len, cfg.dim), persistent=False)

    def forward(self, emb: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """emb [B, S, D] (token embeddings of ``ids`` [B, S]) -> encoded [B, S, D]. Pairs with an id of 0
        (PAD) are masked, as the official key/query > 0 mask does (never the case for real inputs)."""
        valid = ids > 0
        bias = mask_bias(valid[:, None, :, None] & valid[:, None, None, :])
        x = emb + self.positions[: ids.shape[1]].to(emb.dtype)
        for layer in self.layers:
            x = layer(x, bias)
        return self.norm(x)
