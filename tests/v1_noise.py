"""The official run's Gumbel noise of a v1 golden scenario, step by step (no pytest: the GPU check imports it)."""

from __future__ import annotations

import torch

from openmrt.lm_v1.config import V1Config


def recorded_noise(d, device=None):
    """step -> the official Gumbel noise [2, V] on the ids that survived its top-k (0 elsewhere: those ids
    are masked to -1e7 before the noise is added, so their noise never matters)."""
    idx, val = torch.as_tensor(d["gumbel_idx"]).long(), torch.as_tensor(d["gumbel_val"])

    def noise(s: int) -> torch.Tensor:
        g = torch.zeros(2, V1Config.num_embeddings)  # the logit width: the vocabulary rounded up to 128
        ok = idx[s] >= 0
        g.scatter_(1, idx[s].clamp(min=0), torch.where(ok, val[s], 0.0))
        return g.to(device)

    return noise
