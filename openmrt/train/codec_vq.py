"""Codebook learning for the codec's residual VQ: k-means init, EMA updates, dead-code restarts.

The codebook (``ResidualVQ.embedding`` [Q, K, D]) is not trained by the optimizer: each level's
entries move to the running (EMA) mean of the residuals assigned to them, which keeps the
entries where the encoder's latents are. Codes unused for ``restart_every`` steps are re-seeded
on residuals of the current batch, so every one of the K entries per level stays in use.
Under DDP the assignment statistics are summed over ranks and restarts come from rank 0's
batch (then broadcast), so every rank holds the same codebook.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from openmrt.codec.quantizer import ResidualVQ


def _ddp() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _nearest(r: torch.Tensor, cb: torch.Tensor) -> torch.Tensor:
    """Index of the nearest entry: r [N, D], cb [K, D] -> [N] (same rule as ResidualVQ.encode)."""
    return torch.addmm((cb * cb).sum(-1), r, cb.t(), alpha=-2.0).argmin(-1)


class CodebookLearner(nn.Module):
    """Quantizes with straight-through gradients and learns ``vq``'s first ``levels`` levels.

    Buffers (saved in training checkpoints): EMA cluster sizes [L, K], EMA sums [L, K, D], steps
    since each code was last used [L, K], and whether k-means has initialised the codebook.
    """

    def __init__(self, vq: ResidualVQ, levels: int, decay: float = 0.99, restart_every: int = 50, eps: float = 1e-5):
        super().__init__()
        self.vq, self.levels, self.decay, self.restart_every, self.eps = vq, levels, decay, restart_every, eps
        q, k, d = vq.embedding.shape
        vq.embedding.requires_grad_(False)
        self.register_buffer("cluster_size", torch.zeros(levels, k))
        self.register_buffer("embed_sum", torch.zeros(levels, k, d))
        self.register_buffer("idle", torch.zeros(levels, k, dtype=torch.long))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    @property
    def codebook(self) -> torch.Tensor:
        return self.vq.embedding

    def quantize(self, z: torch.Tensor, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """Greedy RVQ of latents z [B, T, D] (float32).

        Args:
            keep: [B] levels each example keeps (quantizer dropout); default all ``levels``.
        Returns:
            (z + sg(q_keep − z) [B, T, D]: the decoder input with straight-through gradients,
             {"codes" [B, T, L], "residuals" [L, B·T, D] (detached), "quantized" full q [B, T, D]}).
        """
        b, t, d = z.shape
        r = z.detach().reshape(-1, d).float()
        keep = torch.full((b,), self.levels, device=z.device) if keep is None else keep
        keep_rows = keep.repeat_interleave(t)  # [B·T]
        q_keep, q_full = torch.zeros_like(r), torch.zeros_like(r)
        codes, residuals = [], []
        with torch.no_grad():
            for i in range(self.levels):
                cb = self.codebook[i]
                residuals.append(r)
                idx = _nearest(r, cb)
                codes.append(idx)
                e = cb[idx]
                q_full = q_full + e
                q_keep = q_keep + e * (keep_rows > i).unsqueeze(1).to(e.dtype)
                r = r - e
        q_keep, q_full = q_keep.view(b, t, d), q_full.view(b, t, d)
        st = z + (q_keep.to(z.dtype) - z).detach()
        return st, {"codes": torch.stack(codes, -1).view(b, t, self.levels), "residuals": torch.stack(residuals),
                    "quantized": q_full}

    @torch.no_grad()
    def kmeans_init(self, z: torch.Tensor, iters: int = 10, seed: int = 0) -> None:
        """Level by level, k-means (Lloyd, random start) on the residuals of latents z [N, D]."""
        g = torch.Generator(device="cpu").manual_seed(seed)
        r = z.reshape(-1, z.shape[-1]).float()
        k = self.codebook.shape[1]
        for i in range(self.levels):
            pick = torch.randint(0, len(r), (k,), generator=g).to(r.device)
            noise = 1e-3 * r.std() * torch.randn(k, r.shape[1], generator=g).to(r.device)
            cb = r[pick] + noise  # with fewer latents than codes, duplicates split through the noise
            for _ in range(iters):
                idx = _nearest(r, cb)
                counts = torch.bincount(idx, minlength=k).float()
                sums = torch.zeros_like(cb).index_add_(0, idx, r)
                used = counts > 0
                cb[used] = sums[used] / counts[used, None]
            idx = _nearest(r, cb)
            self.codebook[i].copy_(cb)
            self.cluster_size[i] = torch.bincount(idx, minlength=k).float().clamp(min=1.0)
            self.embed_sum[i] = cb * self.cluster_size[i, :, None]
            r = r - cb[idx]
        self.initialised.fill_(True)
        if _ddp():
            dist.broadcast(self.codebook, 0)
            dist.broadcast(self.cluster_size, 0)
            dist.broadcast(self.embed_sum, 0)

    @torch.no_grad()
    def seed_from_codebook(self) -> None:
        """Start the EMA from an already trained codebook (fine-tuning): every code counts once."""
        self.cluster_size.fill_(1.0)
        self.embed_sum.copy_(self.codebook[: self.levels])
        self.idle.zero_()
        self.initialised.fill_(True)

    @torch.no_grad()
    def update(self, out: dict, generator: torch.Generator) -> int:
        """EMA step from ``quantize``'s output; then restarts codes idle ``restart_every`` steps.

        ``generator`` (CPU) draws the restart residuals, seeded by the caller per step so that a
        resumed run repeats them. Returns the number of codes restarted.
        """
        residuals, codes = out["residuals"], out["codes"].reshape(-1, self.levels)
        k = self.codebook.shape[1]
        counts = torch.stack([torch.bincount(codes[:, i], minlength=k) for i in range(self.levels)]).float()
        sums = torch.stack([torch.zeros(k, residuals.shape[-1], device=residuals.device)
                            .index_add_(0, codes[:, i], residuals[i]) for i in range(self.levels)])
        if _ddp():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum(-1, keepdim=True)
        size = (self.cluster_size + self.eps) / (n + k * self.eps) * n  # Laplace smoothing: no division by 0
        self.codebook[: self.levels].copy_(self.embed_sum / size.unsqueeze(-1))
        self.idle.add_(1).masked_fill_(counts > 0, 0)
        return self._restart(residuals, generator)

    def _restart(self, residuals: torch.Tensor, generator: torch.Generator) -> int:
        dead = self.idle >= self.restart_every  # [L, K]
        total = int(dead.sum())
        if total:
            for i in range(self.levels):
                idx = dead[i].nonzero().squeeze(1)
                if len(idx):
                    pool = residuals[i]
                    pick = torch.randint(0, len(pool), (len(idx),), generator=generator).to(pool.device)
                    noise = 1e-2 * pool.std() * torch.randn(len(idx), pool.shape[1], generator=generator)
                    new = pool[pick] + noise.to(pool.device)
                    self.codebook[i, idx] = new
                    self.cluster_size[i, idx] = 1.0
                    self.embed_sum[i, idx] = new
            self.idle.masked_fill_(dead, 0)
            if _ddp():  # ``dead`` is the same on every rank (summed counts); rank 0's restart residuals win
                for t in (self.codebook, self.cluster_size, self.embed_sum):
                    dist.broadcast(t, 0)
        return total


def keep_levels(rng: np.random.Generator, batch: int, levels: int, p: float) -> torch.Tensor:
    """Quantizer dropout: with probability p an example keeps 1..levels levels (uniform), else all."""
    drop = rng.random(batch) < p
    return torch.as_tensor(np.where(drop, rng.integers(1, levels + 1, batch), levels))
