"""Causal 2-D convolutions over (time, frequency) with a whole-sequence and a step mode.

Tensors are ``[B, C, T, F]``. Time padding is "semicausal" (shared/spec/spectrostream.md §8, §9):
``kT − sT`` frames of past in front and ``sT − 1`` behind, so every conv and transposed conv is
causal in time. In step mode the past lives in fixed-size state buffers, updated in place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from openmrt.streaming import StreamState


@dataclass
class ConvState(StreamState):
    """Work buffer ``[B, Cin, ctx + chunk, F + freq padding]``.

    The first ``ctx`` frames hold the past inputs; each step writes its ``chunk`` frames after
    them, convolves the whole buffer and shifts the last ``ctx`` frames to the front. The
    frequency padding columns stay zero.
    """

    buf: torch.Tensor


@dataclass
class ConvTState(StreamState):
    """Overlap-add carry of a transposed conv: ``kT − sT`` output frames. [B, Cout, ctx, F_out]"""

    carry: torch.Tensor


def _init_uniform(weight: torch.Tensor, bias: torch.Tensor, fan_in: int) -> None:
    bound = 1.0 / math.sqrt(fan_in)
    nn.init.uniform_(weight, -bound, bound)
    nn.init.uniform_(bias, -bound, bound)


class CausalConv2d(nn.Module):
    """Conv2d causal in time, "same"-style padded in frequency; optional ELU on its input.

    Args:
        cin, cout: channels.
        kernel: (kT, kF).
        stride: (sT, sF).
        act: apply ELU to the input first (so the step buffer holds activated inputs).
    """

    def __init__(
        self, cin: int, cout: int, kernel: tuple[int, int], stride: tuple[int, int] = (1, 1), act: bool = False
    ):
        super().__init__()
        kt, kf = kernel
        st, sf = stride
        self.cin, self.cout, self.kernel, self.stride, self.act = cin, cout, kernel, stride, act
        self.weight = nn.Parameter(torch.empty(cout, cin, kt, kf))
        self.bias = nn.Parameter(torch.empty(cout))
        self.ctx = max(kt - st, 0)  # past frames
        self.tail = kt - 1 - self.ctx  # future frames in layer mode (only read when T % sT != 0)
        p = max(kf - sf, 0)
        self.fpad = (p // 2, p - p // 2)
        _init_uniform(self.weight, self.bias, cin * kt * kf)

    def extra_repr(self) -> str:
        return f"{self.cin}, {self.cout}, kernel={self.kernel}, stride={self.stride}, act={self.act}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, Cin, T, F] -> [B, Cout, ceil(T / sT), F']"""
        if self.act:
            x = F.elu(x)
        x = F.pad(x, (*self.fpad, self.ctx, self.tail))
        return F.conv2d(x, self.weight, self.bias, self.stride)

    def init_state(self, batch: int, chunk: int, freq: int, device=None, dtype=torch.float32) -> ConvState:
        """State for steps of ``chunk`` frames (a multiple of sT) of ``freq`` bins."""
        assert chunk % self.stride[0] == 0, (chunk, self.stride)
        shape = (batch, self.cin, self.ctx + chunk, freq + sum(self.fpad))
        # Channels-last: oneDNN's fast path for these small convs (2-4x over NCHW on CPU).
        return ConvState(buf=torch.zeros(shape, device=device, dtype=dtype).to(memory_format=torch.channels_last))

    def step(self, x: torch.Tensor, state: ConvState) -> torch.Tensor:
        """[B, Cin, chunk, F] -> [B, Cout, chunk / sT, F']"""
        buf, ctx, fl = state.buf, self.ctx, self.fpad[0]
        chunk, freq = x.shape[2], x.shape[3]
        assert buf.shape[2] == ctx + chunk and buf.shape[3] == freq + sum(self.fpad), (x.shape, buf.shape)
        view = buf[:, :, ctx:, fl : fl + freq]
        if self.act:
            torch._C._nn.elu(x, 1.0, 1.0, 1.0, out=view)  # straight into the buffer: no temporary
        else:
            view.copy_(x)
        y = F.conv2d(buf, self.weight, self.bias, self.stride)
        if ctx:
            last = buf[:, :, chunk:]
            buf[:, :, :ctx].copy_(last if chunk >= ctx else last.clone())  # clone when regions overlap
        return y


class CausalConvTranspose2d(nn.Module):
    """ConvTranspose2d causal in time: output time cropped to ``[0, T·sT)``, frequency to ``[1, 1 + F·sF)``.

    Weight layout is torch's ``[Cin, Cout, kT, kF]``. The official kernel is a correlation over
    the dilated input, so it is flipped on load (convert.py).
    """

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int], stride: tuple[int, int], act: bool = False):
        super().__init__()
        kt, kf = kernel
        st, sf = stride
        assert kt >= st, (kernel, stride)
        self.cin, self.cout, self.kernel, self.stride, self.act = cin, cout, kernel, stride, act
        self.weight = nn.Parameter(torch.empty(cin, cout, kt, kf))
        self.bias = nn.Parameter(torch.empty(cout))
        self.ctx = kt - st  # overlap-add carry, in output frames
        _init_uniform(self.weight, self.bias, cin * kt * kf // (st * sf))

    def extra_repr(self) -> str:
        return f"{self.cin}, {self.cout}, kernel={self.kernel}, stride={self.stride}, act={self.act}"

    def _full(self, x: torch.Tensor) -> torch.Tensor:
        if self.act:
            x = F.elu(x)
        f = x.shape[3]
        y = F.conv_transpose2d(x, self.weight, None, self.stride)
        return y[:, :, :, 1 : 1 + f * self.stride[1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, Cin, T, F] -> [B, Cout, T·sT, F·sF]"""
        t = x.shape[2]
        return self._full(x)[:, :, : t * self.stride[0]] + self.bias[:, None, None]

    def init_state(self, batch: int, freq: int, device=None, dtype=torch.float32) -> ConvTState:
        """State for inputs of ``freq`` bins."""
        shape = (batch, self.cout, self.ctx, freq * self.stride[1])
        return ConvTState(carry=torch.zeros(shape, device=device, dtype=dtype))

    def step(self, x: torch.Tensor, state: ConvTState) -> torch.Tensor:
        """[B, Cin, n, F] -> [B, Cout, n·sT, F·sF]"""
        n = x.shape[2] * self.stride[0]
        y = self._full(x)  # [B, Cout, n + ctx, F·sF]
        y[:, :, : self.ctx] += state.carry
        state.carry.copy_(y[:, :, n:])
        return y[:, :, :n] + self.bias[:, None, None]


class Pointwise(nn.Module):
    """A 1×1 conv applied channels-last: ``[..., Cin] -> [..., Cout]`` (official kernel [1, 1, Cin, Cout])."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin))
        self.bias = nn.Parameter(torch.empty(cout))
        _init_uniform(self.weight, self.bias, cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class Conv1x1(nn.Module):
    """A 1×1 conv on ``[B, Cin, T, F]`` (the residual shortcuts); weight ``[Cout, Cin, 1, 1]``."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin, 1, 1))
        self.bias = nn.Parameter(torch.empty(cout))
        _init_uniform(self.weight, self.bias, cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias)


def upsample(x: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour upsampling: [B, C, T, F] -> [B, C, T·sT, F·sF]."""
    st, sf = stride
    if (st, sf) == (1, 1):
        return x
    b, c, t, f = x.shape
    return x[:, :, :, None, :, None].expand(b, c, t, st, f, sf).reshape(b, c, t * st, f * sf)


def split_halves(x: torch.Tensor) -> torch.Tensor:
    """[B, 2C, T, F] -> [2B, C, T, F]: channels [0:C] -> row 2b (L), [C:2C] -> row 2b + 1 (R)."""
    b, c2, t, f = x.shape
    if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
        return x.reshape(2 * b, c2 // 2, t, f)
    nhwc = x.permute(0, 2, 3, 1).reshape(b, t, f, 2, c2 // 2).permute(0, 3, 1, 2, 4)  # [B, 2, T, F, C]
    return nhwc.reshape(2 * b, t, f, c2 // 2).permute(0, 3, 1, 2)  # one copy, stays channels-last


def merge_halves(x: torch.Tensor) -> torch.Tensor:
    """[2B, C, T, F] -> [B, 2C, T, F], the inverse of :func:`split_halves` (L channels first)."""
    b2, c, t, f = x.shape
    if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
        return x.reshape(b2 // 2, 2 * c, t, f)
    nhwc = x.permute(0, 2, 3, 1).reshape(b2 // 2, 2, t, f, c).permute(0, 2, 3, 1, 4)  # [B, T, F, 2, C]
    return nhwc.reshape(b2 // 2, t, f, 2 * c).permute(0, 3, 1, 2)
