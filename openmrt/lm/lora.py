"""LoRA adapters for fine-tuning: y = W x + (alpha / r) * B A x on the attention and MLP
projections, with W frozen. ``merge`` folds the adapters into W and restores plain Linears."""

from __future__ import annotations

import math

import torch
from torch import nn

TARGETS = ("attn.q", "attn.k", "attn.v", "attn.o", "ffn.fc1", "ffn.fc2")


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.rank, self.scale = rank, alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, dtype=base.weight.dtype,
                                               device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype,
                                               device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # B = 0: the adapter starts as a no-op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale

    def merged(self) -> nn.Linear:
        with torch.no_grad():
            self.base.weight += (self.lora_b @ self.lora_a) * self.scale
        return self.base


def apply_lora(model: nn.Module, rank: int = 8, alpha: float = 16.0, targets: tuple[str, ...] = TARGETS) -> nn.Module:
    """Freeze ``model`` and wrap every Linear whose name ends with a target in a LoRALinear."""
    for p in model.parameters():
        p.requires_grad_(False)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and name.endswith(targets):
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent), leaf, LoRALinear(module, rank, alpha))
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (same outputs, plain Linears again)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent), leaf, module.merged())
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter weights (what a LoRA fine-tune needs to save)."""
    return {k: v for k, v in model.state_dict().items() if ".lora_" in k}
