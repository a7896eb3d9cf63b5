"""Small building blocks shared by the temporal and depth transformers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """y = x * rsqrt(mean(x^2) + eps) * scale (scale multiplied directly, no bias).

    ``reduce_fp32=False`` mimics the official temporal norms under bf16 compute: x^2 and rsqrt
    stay in the compute dtype (only the mean accumulates in f32). In f32 both are the same.
    """

    def __init__(self, dim: int, eps: float = 1e-6, reduce_fp32: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.reduce_fp32 = reduce_fp32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        if self.reduce_fp32:
            return F.rms_norm(x.float(), self.weight.shape, None, self.eps).to(x.dtype) * self.weight
        ms = (x * x).float().mean(-1, keepdim=True).to(x.dtype)
        return x * torch.rsqrt(ms + self.eps) * self.weight


class LayerNorm(nn.LayerNorm):
    """LayerNorm with statistics in at least f32 (official encoder_ln / final_ln)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.float(), self.normalized_shape, None, None, self.eps)
        return y.to(x.dtype) * self.weight + self.bias


class FFN(nn.Module):
    """W2 gelu_tanh(W1 x + b1) + b2: not gated, with biases."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))
