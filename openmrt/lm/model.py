"""The Depthformer network (shared/spec/mrt2_lm.md).

``forward`` is the teacher-forced whole-sequence path (training, fast prefill): conditioning
and target tokens in, soft-capped logits for every frame and level out. The per-frame pieces
used by the streaming generator (``temporal_step``, ``depth_step``, ``level_logits``) share
the same weights; ``openmrt.lm.generate`` owns sampling and the stream state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from openmrt import tokens as tk
from openmrt.config import LMConfig
from openmrt.lm.attention import KVCache, band_mask
from openmrt.lm.encoder import ConditioningEncoder
from openmrt.lm.layers import LayerNorm
from openmrt.lm.transformer import DepthLayer, TemporalLayer, TemporalLayerState
from openmrt.streaming import StreamState


@dataclass
class TemporalState(StreamState):
    """Everything that persists between frames inside the network: per layer, the self- and
    cross-attention ring buffers."""

    layers: list[TemporalLayerState]


class Depthformer(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        t, d = cfg.temporal, cfg.depth
        self.encoder = ConditioningEncoder(cfg)
        self.embedding = nn.Embedding(cfg.vocab_size, t.dim)
        self.cond_input = nn.Linear(cfg.enc_dim, t.dim, bias=False) if cfg.cond_to_input else None
        self.emb_scale = math.sqrt(t.dim)  # sqrt(D_t), also on the depth path
        self.temporal = nn.ModuleList(TemporalLayer(t, cfg.enc_dim, cfg.eps) for _ in range(t.num_layers))
        self.depth_adapter = nn.Linear(t.dim, d.dim, bias=False)
        self.depth = nn.ModuleList(DepthLayer(d, cfg.eps) for _ in range(d.num_layers))
        self.final_norm = LayerNorm(d.dim, eps=cfg.eps)
        self.to_logits = nn.Linear(d.dim, cfg.vocab_size)

    # ----------------------------------------------------------------- shared pieces
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids) * self.emb_scale

    def temporal_input(self, prev: torch.Tensor, src: torch.Tensor | None = None) -> torch.Tensor:
        """prev tokens [..., 12], this frame's conditioning [..., D_enc] -> mean of the tokens' scaled embeddings
        [..., D_t] (mean in f32), plus the projected conditioning where the config says so (``cond_to_input``)."""
        e = self.embed(prev)
        x = e.float().mean(-2).to(e.dtype)
        return x if self.cond_input is None else x + self.cond_input(src.to(x.dtype))

    def soft_cap(self, logits: torch.Tensor) -> torch.Tensor:
        c = self.cfg.soft_cap
        return (c * torch.tanh(logits / c)).float()

    # ----------------------------------------------------------------- whole sequence
    def temporal_forward(self, cond: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cond [B, T, 144] (+7), tokens [B, T, 12] -> (source [B, T, D_enc], temporal out [B, T, D_t])."""
        b, t, _ = tokens.shape
        src = self.encoder(cond)
        prev = torch.cat([torch.full_like(tokens[:, :1], tk.SOS_ID), tokens[:, :-1]], dim=1)
        x = self.temporal_input(prev, src)
        self_mask = band_mask(t, t, self.cfg.self_window, x.device)
        cross_mask = band_mask(t, t, self.cfg.cross_window, x.device)
        for layer in self.temporal:
            x = layer(x, src, self_mask, cross_mask)
        return src, x

    def depth_forward(self, h: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """h [N, D_t] temporal outputs, tokens [N, 12] -> soft-capped logits [N, 12, V]."""
        z = torch.cat([h[:, None], self.embed(tokens[:, :-1])], dim=1)
        x = self.depth_adapter(z)
        mask = band_mask(x.shape[1], x.shape[1], None, x.device)
        for layer in self.depth:
            x = layer(x, mask)
        return self.soft_cap(self.to_logits(self.final_norm(x)))

    def level_logits_all(self, h: torch.Tensor) -> torch.Tensor:
        """Final-normed depth hidden [..., 12, D_d] -> soft-capped logits of each level's own 1024 ids
        [..., 12, 1024] (what training's cross-entropy and the sampler look at)."""
        n, v = self.cfg.num_levels, self.cfg.codebook_size
        w = self.to_logits.weight[tk.NUM_RESERVED :].view(n, v, -1)
        b = self.to_logits.bias[tk.NUM_RESERVED :].view(n, v)
        return self.soft_cap(torch.einsum("...qd,qvd->...qv", h, w) + b)

    def training_logits(self, cond: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced, level slices only: cond [B, T, 144] (+7), tokens [B, T, 12] -> [B, T, 12, 1024]."""
        b, t, n = tokens.shape
        _, h = self.temporal_forward(cond, tokens)
        z = torch.cat([h.reshape(b * t, 1, -1), self.embed(tokens.reshape(b * t, n)[:, :-1])], dim=1)
        x = self.depth_adapter(z)
        mask = band_mask(n, n, None, x.device)
        for layer in self.depth:
            x = layer(x, mask)
        return self.level_logits_all(self.final_norm(x)).view(b, t, n, -1)

    def forward(self, cond: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced: cond [B, T, 144] (+7), tokens [B, T, 12] -> capped logits [B, T, 12, V]."""
        b, t, n = tokens.shape
        _, h = self.temporal_forward(cond, tokens)
        return self.depth_forward(h.reshape(b * t, -1), tokens.reshape(b * t, n)).view(b, t, n, -1)

    # ----------------------------------------------------------------- step mode
    def init_temporal_state(self, batch: int, device=None, dtype=torch.float32) -> TemporalState:
        t, cfg = self.cfg.temporal, self.cfg
        return TemporalState(
            [
                TemporalLayerState(
                    KVCache.empty(batch, cfg.self_window + 1, t.num_heads, t.head_dim, device, dtype),
                    KVCache.empty(batch, cfg.cross_window + 1, t.num_heads, t.head_dim, device, dtype),
                )
                for _ in range(t.num_layers)
            ]
        )

    def temporal_step(
        self, cond: torch.Tensor, prev: torch.Tensor, state: TemporalState, frame: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame ``frame`` of the stream: cond [B, 144] (+7), prev tokens [B, 12] ->
        (source [B, D_enc], temporal out [B, D_t]). Updates ``state`` in place."""
        src = self.encoder(cond)
        x = self.temporal_input(prev, src)
        ws, wc = self.cfg.self_window + 1, self.cfg.cross_window + 1
        # Ring slots written so far are visible (all of them once the window is full).
        self_vis = (torch.arange(ws, device=x.device) <= frame).expand(x.shape[0], ws)
        cross_vis = (torch.arange(wc, device=x.device) <= frame).expand(x.shape[0], wc)
        for layer, st in zip(self.temporal, state.layers, strict=True):
            x = layer.step(x, src, st, frame % ws, self_vis, frame % wc, cross_vis)
        return src, x

    def init_depth_cache(self, batch: int, device=None, dtype=torch.float32) -> list[KVCache]:
        d = self.cfg.depth
        n = self.cfg.num_levels
        return [KVCache.empty(batch, n, d.num_heads, d.head_dim, device, dtype) for _ in range(d.num_layers)]

    def depth_step(self, z: torch.Tensor, caches: list[KVCache], level: int) -> torch.Tensor:
        """Depth position ``level``: z [B, D_t] (temporal out at level 0, else the scaled embedding
        of the previous level's token) -> final-normed hidden [B, D_d]."""
        x = self.depth_adapter(z)
        n = self.cfg.num_levels
        visible = (torch.arange(n, device=x.device) <= level).expand(x.shape[0], n)
        for layer, cache in zip(self.depth, caches, strict=True):
            x = layer.step(x, cache, level, visible)
        return self.final_norm(x)

    def level_logits(self, h: torch.Tensor, level: int) -> torch.Tensor:
        """Soft-capped f32 logits of level ``level``'s 1024 valid ids only: h [B, D_d] -> [B, 1024].

        Equal to slicing the full 12294-wide head (the rest is masked before sampling anyway),
        at 1/12 of the cost."""
        sl = tk.level_slice(level)
        w, b = self.to_logits.weight[sl], self.to_logits.bias[sl]
        return self.soft_cap(torch.nn.functional.linear(h, w, b))
