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
    """One past-input buffer per conv, [B, (k − 1)·d, C]."""

    buffers: list[torch.Tensor]


class ResBlock(nn.Module):
    """x + W₂ gelu(causal conv_k,d(gelu(x))): one dilated causal conv and a pointwise mix, on [B, T, C].

    The conv is one matrix product over the k taps side by side: on the CPU a Conv1d call on a few frames
    costs ~10× a Linear of the same size (oneDNN set-up), which the streaming step pays every frame."""

    def __init__(self, width: int, kernel: int = 3, dilation: int = 1):
        super().__init__()
        self.conv = nn.Linear(kernel * width, width)
        self.mix = nn.Linear(width, width)
        self.kernel, self.dilation = kernel, dilation
        self.past = (kernel - 1) * dilation

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """[B, past + T, C] -> [B, T, C] (residual on the last T inputs)."""
        t = x.shape[1] - self.past
        a = F.gelu(x)
        taps = torch.cat([a[:, j * self.dilation:j * self.dilation + t] for j in range(self.kernel)], -1)
        return x[:, self.past:] + self.mix(F.gelu(self.conv(taps)))


class CausalStack(nn.Module):
    """Residual causal conv blocks on [B, T, width]."""

    def __init__(self, width: int, dilations: tuple[int, ...], kernel: int = 3):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(width, kernel, d) for d in dilations)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Whole sequence from zero history: [B, T, C] -> [B, T, C]."""
        for blk in self.blocks:
            x = blk.run(F.pad(x, (0, 0, blk.past, 0)))
        return x

    def step(self, x: torch.Tensor, state: StackState) -> torch.Tensor:
        """The next frames [B, t, C] -> [B, t, C]; updates ``state`` in place."""
        for blk, buf in zip(self.blocks, state.buffers, strict=True):
            full = torch.cat([buf, x], 1)
            if blk.past:
                buf.copy_(full[:, -blk.past:])
            x = blk.run(full)
        return x

    def init_state(self, batch: int, device=None, dtype=torch.float32) -> StackState:
        return StackState([torch.zeros(batch, b.past, self.width, device=device, dtype=dtype) for b in self.blocks])
