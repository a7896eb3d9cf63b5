"""The v1 encoder-decoder LM (shared/spec/mrt_v1.md §5-6).

Two modes over the same weights:

* ``forward(enc_ids, targets)``: teacher-forced, whole chunk at once (the official training-mode
  definition): raw logits for every target position.
* ``init_state`` / ``begin`` / ``step``: the official decode mode, one target token per call, with
  fixed-size state: the encoder's projected keys/values for every temporal layer (computed once per
  chunk), the temporal KV caches (one slot per frame), the depth KV caches (one slot per level),
  the current frame's input embeddings and the last temporal output.

Step s = 16 f + q takes the previous output token (0 = BOS at s = 0). At q = 0 the temporal stack
runs once on the mean embedding of the previous frame's 16 tokens (16 x e(0) for f = 0) and its output
c_f is the depth stack's first input; the other 15 steps feed the previous token's embedding to the
depth stack only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from openmrt.errors import ConfigError
from openmrt.lm_v1.attention import KVCache, mask_bias
from openmrt.lm_v1.config import V1Config
from openmrt.lm_v1.decoder import Stack, causal_bias
from openmrt.lm_v1.encoder import Encoder
from openmrt.lm_v1.layers import RMSNorm
from openmrt.streaming import StreamState

BOS = 0  # decoder start token (= PAD row of the embedding)


@dataclass
class V1State(StreamState):
    """Decode state of one chunk for B rows; every buffer keeps its shape for the life of the stream."""

    cross: list[KVCache]  # per temporal layer: encoder keys/values [B, encoder_len, H, hd]
    cross_bias: torch.Tensor  # [B, 1, 1, encoder_len]: -1e10 on PAD encoder ids
    temporal: list[KVCache]  # per temporal layer [B, frames, H, hd]
    depth: list[KVCache]  # per depth layer [B, levels, H, hd]
    temporal_bias: torch.Tensor  # [1, H, frames, frames] relative bias + causal mask
    depth_bias: torch.Tensor  # [1, H, levels, levels]
    frame_inputs: torch.Tensor  # [B, levels, D] embeddings of the previous frame's tokens
    context: torch.Tensor  # [B, 1, D] temporal output c_f of the current frame
    step: torch.Tensor  # [] int64: next decode step


class V1LM(nn.Module):
    def __init__(self, cfg: V1Config):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.num_embeddings, cfg.dim)  # shared by encoder and decoder
        self.encoder = Encoder(cfg)
        self.temporal = Stack(cfg, cfg.temporal_layers, True, cfg.temporal_buckets, cfg.temporal_max_distance)
        self.depth = Stack(cfg, cfg.depth_layers, False, cfg.depth_buckets, cfg.depth_max_distance)
        self.final_norm = RMSNorm(cfg.dim, cfg.eps)
        self.to_logits = nn.Linear(cfg.dim, cfg.num_embeddings, bias=False)  # untied from the embedding

    # ----------------------------------------------------------------- shared pieces
    def _check_ids(self, enc_ids: torch.Tensor) -> None:
        if enc_ids.dim() != 2 or enc_ids.shape[1] > self.cfg.encoder_len:
            raise ConfigError(f"encoder ids must be [B, <= {self.cfg.encoder_len}], got {list(enc_ids.shape)}")

    def encode(self, enc_ids: torch.Tensor) -> torch.Tensor:
        """[B, S] ids -> encoder output [B, S, D]."""
        self._check_ids(enc_ids)
        return self.encoder(self.embed(enc_ids), enc_ids)

    def cross_kv(self, encoded: torch.Tensor) -> list[KVCache]:
        """Every temporal layer's cross-attention keys/values of the encoder output."""
        return [KVCache(*layer.cross_attn.project_kv(encoded)) for layer in self.temporal.layers]

    @staticmethod
    def cross_mask(enc_ids: torch.Tensor) -> torch.Tensor:
        return mask_bias(enc_ids > 0)[:, None, None, :]

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.to_logits(self.final_norm(h)).float()

    # ----------------------------------------------------------------- teacher-forced
    def forward(self, enc_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """enc_ids [B, S], targets [B, n*16] (whole frames, n <= 50) -> raw logits [B, n*16, V] (float32),
        position s predicting targets[:, s] from everything before it."""
        cfg = self.cfg
        b, t = targets.shape
        if t % cfg.levels or t > cfg.steps:
            raise ConfigError(f"targets must be whole frames of {cfg.levels} tokens, at most {cfg.steps}; got {t}")
        encoded = self.encode(enc_ids)
        e = self.embed(targets).view(b, t // cfg.levels, cfg.levels, cfg.dim)
        bos = self.embed.weight[BOS].expand(b, 1, cfg.levels, cfg.dim)
        prev = torch.cat([bos, e[:, :-1]], 1).mean(2)  # [B, F, D]: the previous frame's mean embedding
        c = self.temporal(prev, self.cross_kv(encoded), self.cross_mask(enc_ids))
        depth_in = torch.cat([c[:, :, None], e[:, :, :-1]], 2).flatten(0, 1)  # [B*F, 16, D]
        return self.logits(self.depth(depth_in)).view(b, t, -1)

    # ----------------------------------------------------------------- decode mode
    def init_state(self, batch: int) -> V1State:
        """Zeroed buffers for ``batch`` rows (allocate once, ``begin`` refills them every chunk)."""
        cfg, p = self.cfg, self.embed.weight
        kv = lambda n: KVCache.empty(batch, n, cfg.num_heads, cfg.head_dim, p.device, p.dtype)  # noqa: E731
        return V1State(
            cross=[kv(cfg.encoder_len) for _ in range(cfg.temporal_layers)],
            cross_bias=torch.zeros(batch, 1, 1, cfg.encoder_len, device=p.device, dtype=p.dtype),
            temporal=[kv(cfg.frames) for _ in range(cfg.temporal_layers)],
            depth=[kv(cfg.levels) for _ in range(cfg.depth_layers)],
            temporal_bias=torch.zeros(1, cfg.num_heads, cfg.frames, cfg.frames, device=p.device, dtype=p.dtype),
            depth_bias=torch.zeros(1, cfg.num_heads, cfg.levels, cfg.levels, device=p.device, dtype=p.dtype),
            frame_inputs=torch.zeros(batch, cfg.levels, cfg.dim, device=p.device, dtype=p.dtype),
            context=torch.zeros(batch, 1, cfg.dim, device=p.device, dtype=p.dtype),
            step=torch.zeros((), dtype=torch.long),
        )

    def begin(self, state: V1State, enc_ids: torch.Tensor) -> torch.Tensor:
        """Start a chunk: run the encoder on ``enc_ids`` [B, encoder_len], fill the cross-attention keys/values
        and reset the decoder state in place. Returns the encoder output [B, encoder_len, D]."""
        cfg = self.cfg
        if tuple(enc_ids.shape) != (state.frame_inputs.shape[0], cfg.encoder_len):
            raise ConfigError(f"encoder ids must be [{state.frame_inputs.shape[0]}, {cfg.encoder_len}] "
                              f"for this state, got {list(enc_ids.shape)}")
        state.reset_()
        encoded = self.encode(enc_ids)
        for dst, src in zip(state.cross, self.cross_kv(encoded), strict=True):
            dst.copy_(src)
        state.cross_bias.copy_(self.cross_mask(enc_ids))
        state.temporal_bias.copy_(causal_bias(self.temporal.rel_bias, cfg.frames))
        state.depth_bias.copy_(causal_bias(self.depth.rel_bias, cfg.levels))
        state.frame_inputs.copy_(self.embed.weight[BOS].expand_as(state.frame_inputs))
        return encoded

    def step(self, state: V1State, token: torch.Tensor) -> torch.Tensor:
        """Feed the previous output ``token`` [B] (ignored at step 0, where the input is BOS) and return the raw
        logits [B, V] (float32) of the next target position; advances ``state.step``."""
        cfg = self.cfg
        s = int(state.step)
        if s >= cfg.steps:
            raise ConfigError(f"the chunk is complete ({cfg.steps} steps); call begin() for the next one")
        f, q = divmod(s, cfg.levels)
        at = lambda i: torch.tensor([i], device=token.device)  # noqa: E731
        logits = self.advance(state, token, at(f), at(q), at((s - 1) % cfg.levels), frame_start=q == 0,
                              write=s > 0)
        state.step += 1
        return logits

    def advance(self, state: V1State, token: torch.Tensor, frame: torch.Tensor, level: torch.Tensor,
                prev: torch.Tensor, frame_start: bool, write: bool = True) -> torch.Tensor:
        """One decode step with its positions as [1] index tensors on the model's device (frame f, level q,
        and the previous step's level): no host value is read, so a CUDA graph can capture it (graphs.py).
        ``frame_start`` (q == 0) runs the temporal stack first. ``write``: store ``token``'s embedding as the
        previous step's token (skipped at step 0; writing BOS there would leave the state as it is)."""
        e = self.embed(token)
        if write:
            state.frame_inputs.index_copy_(1, prev, e[:, None])  # the previous frame's tokens, for the next mean
        if frame_start:
            x = state.frame_inputs.mean(1, keepdim=True)
            x = self.temporal.step(x, state.temporal, frame, state.temporal_bias.index_select(2, frame),
                                   state.cross, state.cross_bias)
            state.context.copy_(x)
        else:
            x = e[:, None]
        h = self.depth.step(x, state.depth, level, state.depth_bias.index_select(2, level))
        return self.logits(h)[:, 0]
