"""SpectroStream encoder: packed STFT [B, 4, T, 480] at 100 Hz -> latents [B, T/4, D] at 25 Hz.

shared/spec/spectrostream.md §4. Everything from ``base_conv_first`` to ``encoder_5`` runs on
each audio channel's (Re, Im) pair with shared weights; the two halves ride in the batch axis
(``[2B, ...]``, L at even rows) and are concatenated on channels (L first) before ``encoder_6``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from openmrt.codec.layers import CausalConv2d, ConvState, merge_halves
from openmrt.codec.stft import BINS
from openmrt.codec.units import DownUnit, EncoderOutput, UnitState
from openmrt.streaming import StreamState

# (name, input channels, output channels, stride (time, freq)) in units of the base depth (32 official).
_HALF_STAGES = [
    ("encoder_0", 1, 2, (1, 2)),
    ("encoder_1", 2, 2, (1, 2)),
    ("encoder_2", 2, 4, (1, 3)),
    ("encoder_3", 4, 4, (1, 2)),
    ("encoder_4", 4, 4, (1, 2)),
    ("encoder_5", 4, 8, (2, 2)),
]
FRAMES_PER_STEP = 4  # STFT frames per latent frame (time stride 4)


@dataclass
class EncoderState(StreamState):
    """Conv buffers: ``base`` and ``halves`` at batch 2B, ``merged`` (encoder_6, bottleneck) at B."""

    base: ConvState
    halves: list[UnitState]
    merged: list[UnitState]


class Encoder(nn.Module):
    """Args:
    base: channels of ``base_conv_first`` (32 official; scales with the width multiplier).
    latent_dim: output width D (256).
    """

    def __init__(self, base: int = 32, latent_dim: int = 256):
        super().__init__()
        self.base = base
        self.base_conv_first = CausalConv2d(2, base, (7, 7))
        for name, cin, cout, stride in _HALF_STAGES:
            self.add_module(name, DownUnit(cin * base, cout * base, stride))
        self.encoder_6 = DownUnit(16 * base, 8 * base, (2, 1))
        self.bottleneck = DownUnit(8 * base, 8 * base, (1, 1))
        self.freq_out = BINS // 96  # 5 bins after the frequency strides 2·2·3·2·2·2
        self.output_convs = EncoderOutput(self.freq_out * 8 * base, latent_dim)

    def _halves(self) -> list[DownUnit]:
        return [getattr(self, name) for name, *_ in _HALF_STAGES]

    def _run(self, spec: torch.Tensor, state: EncoderState | None) -> torch.Tensor:
        b, c, t, f = spec.shape
        assert c == 4 and f == BINS and t % FRAMES_PER_STEP == 0, f"spec must be [B, 4, 4k, 480], got {spec.shape}"
        x = spec.reshape(b * 2, 2, t, f)  # split L / R into the batch (shared weights)
        x = self.base_conv_first(x) if state is None else self.base_conv_first.step(x, state.base)
        for i, unit in enumerate(self._halves()):
            x = unit(x) if state is None else unit.step(x, state.halves[i])
        x = merge_halves(x)  # concat channels, L first
        for i, unit in enumerate((self.encoder_6, self.bottleneck)):
            x = unit(x) if state is None else unit.step(x, state.merged[i])
        x = x.permute(0, 2, 3, 1).flatten(2)  # [B, T/4, F·C], row-major f·C + c
        return self.output_convs(x)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """Whole sequence: [B, 4, T, 480] (T a multiple of 4) -> latents [B, T/4, D]."""
        return self._run(spec, None)

    def step(self, spec: torch.Tensor, state: EncoderState) -> torch.Tensor:
        """One latent frame: [B, 4, 4, 480] -> [B, 1, D]; updates ``state`` in place."""
        return self._run(spec, state)

    def init_state(self, batch: int, device=None, dtype=torch.float32) -> EncoderState:
        b2, chunk, freq = 2 * batch, FRAMES_PER_STEP, BINS
        base = self.base_conv_first.init_state(b2, chunk, freq, device, dtype)
        halves = []
        for unit in self._halves():
            halves.append(unit.init_state(b2, chunk, freq, device, dtype))
            chunk, freq = chunk // unit.stride[0], freq // unit.stride[1]
        merged = [
            self.encoder_6.init_state(batch, chunk, freq, device, dtype),
            self.bottleneck.init_state(batch, chunk // 2, freq, device, dtype),
        ]
        return EncoderState(base=base, halves=halves, merged=merged)
