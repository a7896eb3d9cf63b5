"""Causal 1-D convolution stacks over frames [B, T, C], whole-sequence and streaming (the demo codec v2's
encoder and decoder trunks). A step takes any number of new frames and keeps the last (k − 1)·d inputs of
each conv in a fixed-size buffer, so stepping frame by frame equals the whole sequence."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from openmrt.streaming import StreamState


@dataclass
class StackState(StreamState):
    """One past-input buffer per conv, [B, C, (k − 1)·d]."""

    buffers: list[torch.Tensor]


class ResBlock(nn.Module):
    """x + W₂ gelu(causal conv_k,d(gelu(x))): one dilated causal conv and a pointwise mix."""

    def __init__(self, width: int, kernel: int = 3, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(width, width, kernel, dilation=dilation)
        self.mix = nn.Conv1d(width, width, 1)
        self.past = (kernel - 1) * dilation

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, past + T] -> [B, C, T] (residual on the last T inputs)."""
        return x[..., self.past:] + self.mix(F.gelu(self.conv(F.gelu(x))))


class CausalStack(nn.Module):
    """Residual causal conv blocks on [B, T, width]."""

    def __init__(self, width: int, dilations: tuple[int, ...], kernel: int = 3):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(width, kernel, d) for d in dilations)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Whole sequence from zero history: [B, T, C] -> [B, T, C]."""
        h = x.transpose(1, 2)
        for blk in self.blocks:
            h = blk.run(F.pad(h, (blk.past, 0)))
        return h.transpose(1, 2)

    def step(self, x: torch.Tensor, state: StackState) -> torch.Tensor:
        """The next frames [B, t, C] -> [B, t, C]; updates ``state`` in place."""
        h = x.transpose(1, 2)
        for blk, buf in zip(self.blocks, state.buffers, strict=True):
            full = torch.cat([buf, h], -1)
            if blk.past:
                buf.copy_(full[..., -blk.past:])
            h = blk.run(full)
        return h.transpose(1, 2)

    def init_state(self, batch: int, device=None, dtype=torch.float32) -> StackState:
        return StackState([torch.zeros(batch, self.width, b.past, device=device, dtype=dtype) for b in self.blocks])
