"""Residual vector quantizer (shared/spec/spectrostream.md §5): greedy L2, codebook [Q, K, D].

Codes are plain codec codes 0..K-1 (not the LM's unique token ids; see openmrt/tokens.py).
"""

from __future__ import annotations

import torch
from torch import nn

from openmrt.errors import DataError


class ResidualVQ(nn.Module):
    """Args:
    num_quantizers: levels Q in the table (64 official).
    codebook_size: entries K per level (1024).
    dim: vector width D (256).
    """

    def __init__(self, num_quantizers: int = 64, codebook_size: int = 1024, dim: int = 256):
        super().__init__()
        self.embedding = nn.Parameter(torch.randn(num_quantizers, codebook_size, dim) / dim**0.5)
        # Level ids for the gather, made once (no per-frame arange; moves with the module).
        self.register_buffer("_level_index", torch.arange(num_quantizers), persistent=False)

    @property
    def num_quantizers(self) -> int:
        return self.embedding.shape[0]

    def _check_levels(self, levels: int) -> None:
        if not 0 <= levels <= self.num_quantizers:
            raise ValueError(f"asked for {levels} RVQ levels; this codebook has {self.num_quantizers}")

    @torch.no_grad()
    def encode(self, x: torch.Tensor, num_levels: int | None = None) -> torch.Tensor:
        """Greedy RVQ: level i picks argmin_k ||r - C_i[k]||² (lowest index on ties), then r -= C_i[k].

        Args:
            x: [..., D] latents.
            num_levels: levels to emit (default all).
        Returns:
            [..., L] int64 codes.
        """
        levels = self.num_quantizers if num_levels is None else num_levels
        self._check_levels(levels)
        shape = x.shape[:-1]
        r = x.reshape(-1, x.shape[-1]).clone()
        codes = torch.empty(r.shape[0], levels, dtype=torch.long, device=x.device)
        for i in range(levels):
            cb = self.embedding[i]  # [K, D]
            # ||r||² is the same for every entry, so only ||c||² - 2 r·c decides (as JAX does).
            d = torch.addmm((cb * cb).sum(-1), r, cb.t(), alpha=-2.0)
            idx = d.argmin(-1)
            codes[:, i] = idx
            r -= cb[idx]
        return codes.reshape(*shape, levels)

    def check_codes(self, codes: torch.Tensor) -> None:
        """Raise :class:`DataError` unless ``codes`` [..., L] are integers in 0..K-1 with L ≤ Q.

        Call it where codes enter (files, the CLI, whole-sequence ``decode``): it reads the values
        back to the host, so the per-frame ``decode`` does not (a CUDA graph cannot sync).
        """
        if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
            raise DataError(f"codes must be integers, got {codes.dtype}")
        if codes.dim() == 0 or codes.shape[-1] > self.num_quantizers:
            raise DataError(f"codes must be [..., levels] with at most {self.num_quantizers} levels, "
                            f"got shape {tuple(codes.shape)}")
        k = self.embedding.shape[1]
        if codes.numel() and bool(((codes < 0) | (codes >= k)).any()):
            raise DataError(f"codes must lie in 0..{k - 1} (codec codes, not the LM's unique token ids: "
                            f"convert those with openmrt.tokens.from_unique)")

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Sum of the supplied levels' entries; missing levels contribute 0.

        No value check and no host sync (fixed shapes, any batch): validate codes where they enter
        with :meth:`check_codes`. Out-of-range codes index out of bounds.

        Args:
            codes: [..., L] integer codes, L ≤ Q.
        Returns:
            [..., D]
        """
        levels = codes.shape[-1]
        self._check_levels(levels)
        emb = self.embedding[:levels]  # [L, K, D]
        if levels == 0:
            return emb.new_zeros(*codes.shape[:-1], emb.shape[-1])
        flat = codes.reshape(-1, levels).long()
        picked = emb[self._level_index[:levels], flat]  # [M, L, D]
        return picked.sum(1).reshape(*codes.shape[:-1], emb.shape[-1])
