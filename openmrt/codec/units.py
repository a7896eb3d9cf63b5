"""Residual units of the SpectroStream encoder ("down") and decoder ("up"), shared/spec/spectrostream.md §4, §6.

Attribute names mirror the official Flax scopes (``conv2d_3x3``, ``conv2d_3x4_a``,
``conv2dtranspose_4x3``, ``shortcut_layer/conv1x1``) so that weight conversion is a rename.
Every unit runs whole-sequence (``forward``) or one step (``step``) through the same ``_run``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from openmrt.codec.layers import (
    CausalConv2d,
    CausalConvTranspose2d,
    Conv1x1,
    ConvState,
    ConvTState,
    Pointwise,
    upsample,
)
from openmrt.streaming import StreamState


@dataclass
class UnitState(StreamState):
    """States of a unit's two body convs (first, second)."""

    first: ConvState | ConvTState
    second: ConvState


def _call(m: nn.Module, x: torch.Tensor, state: StreamState | None) -> torch.Tensor:
    return m(x) if state is None else m.step(x, state)


class Shortcut(nn.Module):
    """The 1×1 channel change on the residual shortcut (scope ``shortcut_layer``)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1x1 = Conv1x1(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1x1(x)


class DownUnit(nn.Module):
    """Encoder unit: ELU, 3×3 (Cin→Cin); ELU, (kT, kF)/stride (Cin→Cout); shortcut AvgPool then 1×1.

    With stride (1, 1) and Cin == Cout this is the bottleneck (``conv2d_3x3`` then ``conv2d_3x3_a``).
    """

    def __init__(self, cin: int, cout: int, stride: tuple[int, int]):
        super().__init__()
        st, sf = stride
        kt, kf = max(3, 2 * st), max(3, 2 * sf)
        self.stride = stride
        self.conv2d_3x3 = CausalConv2d(cin, cin, (3, 3), act=True)
        self.down_name = f"conv2d_{kt}x{kf}_a"
        self.add_module(self.down_name, CausalConv2d(cin, cout, (kt, kf), stride, act=True))
        self.shortcut_layer = Shortcut(cin, cout) if cin != cout else None

    def _run(self, x: torch.Tensor, state: UnitState | None) -> torch.Tensor:
        """[B, Cin, T, F] -> [B, Cout, T / sT, F / sF]"""
        h = _call(self.conv2d_3x3, x, None if state is None else state.first)
        h = _call(getattr(self, self.down_name), h, None if state is None else state.second)
        s = x if self.stride == (1, 1) else F.avg_pool2d(x, self.stride, self.stride)
        if self.shortcut_layer is not None:
            s = self.shortcut_layer(s)
        return h + s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, None)

    def step(self, x: torch.Tensor, state: UnitState) -> torch.Tensor:
        return self._run(x, state)

    def init_state(self, batch: int, chunk: int, freq: int, device=None, dtype=torch.float32) -> UnitState:
        """For steps of ``chunk`` frames of ``freq`` bins (the unit's input)."""
        return UnitState(
            first=self.conv2d_3x3.init_state(batch, chunk, freq, device, dtype),
            second=getattr(self, self.down_name).init_state(batch, chunk, freq, device, dtype),
        )


class UpUnit(nn.Module):
    """Decoder unit: ELU, ConvT (kT, kF)/stride (or 3×3 ``conv2d_3x3_a`` when the stride is 1);
    ELU, 3×3 (Cout→Cout); shortcut 1×1 then nearest upsample."""

    def __init__(self, cin: int, cout: int, stride: tuple[int, int]):
        super().__init__()
        st, sf = stride
        kt, kf = max(3, 2 * st), max(3, 2 * sf)
        self.stride = stride
        if stride == (1, 1):
            self.up_name = "conv2d_3x3_a"
            self.add_module(self.up_name, CausalConv2d(cin, cout, (3, 3), act=True))
        else:
            self.up_name = f"conv2dtranspose_{kt}x{kf}"
            self.add_module(self.up_name, CausalConvTranspose2d(cin, cout, (kt, kf), stride, act=True))
        self.conv2d_3x3 = CausalConv2d(cout, cout, (3, 3), act=True)
        self.shortcut_layer = Shortcut(cin, cout) if cin != cout else None

    def _run(self, x: torch.Tensor, state: UnitState | None) -> torch.Tensor:
        """[B, Cin, T, F] -> [B, Cout, T·sT, F·sF]"""
        h = _call(getattr(self, self.up_name), x, None if state is None else state.first)
        h = _call(self.conv2d_3x3, h, None if state is None else state.second)
        s = x if self.shortcut_layer is None else self.shortcut_layer(x)
        return h + upsample(s, self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, None)

    def step(self, x: torch.Tensor, state: UnitState) -> torch.Tensor:
        return self._run(x, state)

    def init_state(self, batch: int, chunk: int, freq: int, device=None, dtype=torch.float32) -> UnitState:
        """For steps of ``chunk`` input frames of ``freq`` bins."""
        up = getattr(self, self.up_name)
        st, sf = self.stride
        if isinstance(up, CausalConvTranspose2d):
            first: ConvState | ConvTState = up.init_state(batch, freq, device, dtype)
        else:
            first = up.init_state(batch, chunk, freq, device, dtype)
        return UnitState(first=first, second=self.conv2d_3x3.init_state(batch, chunk * st, freq * sf, device, dtype))


class PointwiseShortcut(nn.Module):
    """``shortcut_layer`` of the dense blocks: conv1x1_b2(ELU(conv1x1_b1(·)))."""

    def __init__(self, cin: int, hidden: int, cout: int):
        super().__init__()
        self.conv1x1_b1 = Pointwise(cin, hidden)
        self.conv1x1_b2 = Pointwise(hidden, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1x1_b2(F.elu(self.conv1x1_b1(x)))


class EncoderOutput(nn.Module):
    """``output_convs``: y = conv1x1_last(h) + conv1x1_b2(ELU(conv1x1_b1(ELU(h)))), channels-last."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1x1_last = Pointwise(cin, cout)
        self.shortcut_layer = PointwiseShortcut(cin, cin, cout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """[..., Cin] -> [..., Cout]"""
        return self.conv1x1_last(h) + self.shortcut_layer(F.elu(h))


class DecoderInput(nn.Module):
    """``input_layer``: y = conv1x1_first(x) + conv1x1_b2(ELU(conv1x1_b1(x))), channels-last."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1x1_first = Pointwise(cin, cout)
        self.shortcut_layer = PointwiseShortcut(cin, cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., Cin] -> [..., Cout]"""
        return self.conv1x1_first(x) + self.shortcut_layer(x)
