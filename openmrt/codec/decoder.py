"""SpectroStream decoder: embeddings [B, N, D] at 25 Hz -> packed STFT [B, 4, 4N, 480] at 100 Hz.

shared/spec/spectrostream.md §6. The output here is *before* the one-token Lookahead (the model
drops its first 4 STFT frames). Every layer is causal in time, so step mode needs only past
state. From ``decoder_1`` on, the L and R halves share weights and ride in the batch axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from openmrt.codec.layers import CausalConv2d, ConvState, split_halves
from openmrt.codec.stft import BINS
from openmrt.codec.units import DecoderInput, UnitState, UpUnit
from openmrt.streaming import StreamState

# (name, input channels, output channels, stride (time, freq)) in units of the base depth (64 official).
_MERGED_STAGES = [
    ("input_layers_residual_unit", 8, 8, (1, 1)),
    ("decoder_0", 8, 16, (2, 1)),
]
_HALF_STAGES = [  # per half, after the split of decoder_0's 16·base channels
    ("decoder_1", 8, 4, (2, 2)),
    ("decoder_2", 4, 4, (1, 2)),
    ("decoder_3", 4, 4, (1, 2)),
    ("decoder_4", 4, 2, (1, 3)),
    ("decoder_5", 2, 2, (1, 2)),
    ("decoder_6", 2, 1, (1, 2)),
]
FREQ_IN = BINS // 96  # 5 bins at the bottleneck


@dataclass
class DecoderState(StreamState):
    """Conv buffers and transposed-conv carries: ``merged`` at batch B, ``halves`` and ``out`` at 2B."""

    merged: list[UnitState]
    halves: list[UnitState]
    out: ConvState


class OutputLayer(nn.Module):
    """``output_layer``: ELU then 7×7 conv to (Re, Im)."""

    def __init__(self, cin: int):
        super().__init__()
        self.base_conv_last = CausalConv2d(cin, 2, (7, 7), act=True)


class Decoder(nn.Module):
    """Args:
    base: channels of the last unit (64 official; scales with the width multiplier).
    latent_dim: input width D (256).
    """

    def __init__(self, base: int = 64, latent_dim: int = 256):
        super().__init__()
        self.base = base
        self.input_layer = DecoderInput(latent_dim, FREQ_IN * 8 * base)
        for name, cin, cout, stride in _MERGED_STAGES + _HALF_STAGES:
            self.add_module(name, UpUnit(cin * base, cout * base, stride))
        self.output_layer = OutputLayer(base)

    def _units(self, stages: list) -> list[UpUnit]:
        return [getattr(self, name) for name, *_ in stages]

    def _run(self, emb: torch.Tensor, state: DecoderState | None) -> torch.Tensor:
        b, n, _ = emb.shape
        x = self.input_layer(emb)  # [B, N, 5·C]
        x = x.reshape(b, n, FREQ_IN, -1).permute(0, 3, 1, 2)  # [B, C, N, 5], row-major f·C + c
        for i, unit in enumerate(self._units(_MERGED_STAGES)):
            x = unit(x) if state is None else unit.step(x, state.merged[i])
        x = split_halves(x)  # [0:C/2] -> L, rest -> R
        for i, unit in enumerate(self._units(_HALF_STAGES)):
            x = unit(x) if state is None else unit.step(x, state.halves[i])
        conv = self.output_layer.base_conv_last
        x = conv(x) if state is None else conv.step(x, state.out)  # [2B, 2, 4N, 480]
        return x.reshape(b, 4, x.shape[2], x.shape[3])  # [Re L, Im L, Re R, Im R]

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """Whole sequence: [B, N, D] -> [B, 4, 4N, 480] (before the lookahead trim)."""
        return self._run(emb, None)

    def step(self, emb: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """One frame: [B, 1, D] -> [B, 4, 4, 480]; updates ``state`` in place."""
        return self._run(emb, state)

    def init_state(self, batch: int, device=None, dtype=torch.float32) -> DecoderState:
        chunk, freq = 1, FREQ_IN
        merged, halves = [], []
        groups = ((_MERGED_STAGES, batch, merged), (_HALF_STAGES, 2 * batch, halves))  # halves ride in the batch
        for stages, bsz, out in groups:
            for unit in self._units(stages):
                out.append(unit.init_state(bsz, chunk, freq, device, dtype))
                chunk, freq = chunk * unit.stride[0], freq * unit.stride[1]
        out_state = self.output_layer.base_conv_last.init_state(2 * batch, chunk, freq, device, dtype)
        return DecoderState(merged=merged, halves=halves, out=out_state)
