"""The conditioning encoder: 144 int channels per frame -> one vector per frame (stateless).

Two branches, averaged, then a LayerNorm (shared/spec/mrt2_lm.md §3):
* style: SUM over the 12 MusicCoCa levels of a 12 x 1031-row dequantizer table, then a Dense;
* regular: MEAN over the 132 other channels of one flat 1536-row table with cumulative offsets
  (the CFG-7.0 overflow into the next channel's rows is reproduced, never clamped); our demo
  preset sums them instead (``LMConfig.regular_sum``).
"""

from __future__ import annotations

import torch
from torch import nn

from openmrt import tokens as tk
from openmrt.config import LMConfig
from openmrt.lm.layers import LayerNorm


class ConditioningEncoder(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.style_table = nn.Embedding(cfg.style_levels * tk.STYLE_VOCAB, cfg.style_emb_dim)
        self.style_proj = nn.Linear(cfg.style_emb_dim, cfg.enc_dim, bias=False)
        self.regular_table = nn.Embedding(tk.REGULAR_ROWS, cfg.enc_dim)
        self.norm = LayerNorm(cfg.enc_dim, eps=cfg.eps)
        self.regular_sum = cfg.regular_sum
        self.register_buffer(
            "style_offsets", torch.arange(cfg.style_levels) * tk.STYLE_VOCAB, persistent=False
        )
        self.register_buffer("regular_offsets", torch.as_tensor(tk.REGULAR_OFFSETS), persistent=False)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        """cond [..., 144] model tokens (raw + 7) -> [..., D_enc]."""
        n_style = self.style_offsets.numel()
        style = self.style_table(cond[..., :n_style] + self.style_offsets).sum(-2)
        a = self.style_proj(style)
        rows = self.regular_table(cond[..., n_style:] + self.regular_offsets).float()
        r = (rows.sum(-2) if self.regular_sum else rows.mean(-2)).to(a.dtype)
        return self.norm((a + r) / 2)
