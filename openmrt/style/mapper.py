"""Text -> audio embedding mapper, trained with the pixel MeanFlow (pMF) objective; sampled in one step.

Text and audio embeddings of a contrastive model sit in different regions of the sphere (the "modality gap"), and the
RVQ is fitted on audio embeddings, so a quantised text embedding can land far from any audio the LM was trained on.
The official release maps text embeddings to plausible audio embeddings with a one-step generative model
(shared/spec/musiccoca_assets_api.md §1.4); this is ours, for our style model.

Flow: z_t = (1 - t) x + t e, x = audio embedding (scaled by sqrt(D) to unit per-dimension spread), e ~ N(0, I),
conditional velocity v = e - x. MeanFlow learns the average velocity u(z_t, r, t) over [r, t] through the identity
u = v - (t - r) du/dt (total derivative along the flow, one JVP). pMF's choice: the network predicts the clean
embedding x_theta(z_t, r, t, c) and u = (z_t - x_theta) / t, i.e. the output lives on the data manifold while the
loss stays in velocity space. One step from noise: x = z_1 - u(z_1, 0, 1) = x_theta(e, 0, 1, c), then L2-normalised.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Mapper", "MapperConfig", "pmf_loss"]

T_MIN = 0.02  # u = (z - x)/t blows up at t -> 0; nothing below this is sampled


@dataclass(frozen=True)
class MapperConfig:
    dim: int = 128  # embedding width D (text in, audio out)
    width: int = 256
    layers: int = 3

    def to_dict(self) -> dict:
        return asdict(self)


def _time_features(t: torch.Tensor, n: int = 32) -> torch.Tensor:
    """[B] in [0, 1] -> [B, n] sinusoidal features."""
    freqs = torch.exp(torch.linspace(0.0, math.log(1000.0), n // 2, device=t.device))
    a = t[:, None] * freqs[None]
    return torch.cat([a.sin(), a.cos()], dim=-1)


class Mapper(nn.Module):
    """x_theta(z [B, D], r [B], t [B], c [B, D]) -> [B, D]: residual MLP over (z, c) with (t, t - r) features."""

    def __init__(self, cfg: MapperConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.inp = nn.Linear(2 * cfg.dim + 64, w)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(w), nn.Linear(w, 2 * w), nn.GELU(), nn.Linear(2 * w, w))
                                    for _ in range(cfg.layers))
        self.out = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, cfg.dim))

    def forward(self, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = self.inp(torch.cat([z, c * math.sqrt(self.cfg.dim), _time_features(t), _time_features(t - r)], dim=-1))
        for blk in self.blocks:
            h = h + blk(h)
        return self.out(h)

    @torch.no_grad()
    def sample(self, c: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """One step: text embeddings c [B, D] and noise [B, D] -> L2-normalised audio-space embeddings [B, D]."""
        b = c.shape[0]
        x = self(noise, c.new_zeros(b), c.new_ones(b), c)
        return F.normalize(x, dim=-1)


def seeded_noise(seed: int, dim: int) -> np.ndarray:
    """The mapper's noise for one prompt: numpy RandomState(seed).randn(dim), as the official mapper's (§1.4)."""
    return np.random.RandomState(seed).randn(dim).astype(np.float32)


def pmf_loss(net: Mapper, x: torch.Tensor, c: torch.Tensor, flow_ratio: float = 0.5) -> tuple[torch.Tensor, float]:
    """pMF training loss for a batch of audio embeddings x [B, D] (unit norm) and text embeddings c [B, D].

    (t, r): t from a logit-normal in [T_MIN, 1]; r = t for `flow_ratio` of the batch (plain flow matching, where
    u is the instantaneous velocity), else r ~ U(0, t). Loss weighted adaptively (1 / (err + 1e-3)), as MeanFlow does,
    which makes it ~1 whatever the error: the unweighted mean squared error is returned beside it for logs.
    """
    b, d = x.shape
    x = x * math.sqrt(d)
    t = torch.sigmoid(torch.randn(b) * 1.0 - 0.4).clamp(T_MIN, 1.0)
    r = torch.where(torch.rand(b) < flow_ratio, t, torch.rand(b) * t)
    e = torch.randn_like(x)
    z = (1 - t[:, None]) * x + t[:, None] * e
    v = e - x

    def u_fn(z_: torch.Tensor, r_: torch.Tensor, t_: torch.Tensor) -> torch.Tensor:
        return (z_ - net(z_, r_, t_, c)) / t_[:, None]

    u, dudt = torch.func.jvp(u_fn, (z, r, t), (v, torch.zeros_like(r), torch.ones_like(t)))
    target = (v - (t - r)[:, None] * dudt).detach()
    err = (u - target).pow(2).mean(-1)
    return (err / (err.detach() + 1e-3)).mean(), float(err.detach().mean())
