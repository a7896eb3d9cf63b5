"""Linear layers of the inference weights: float (``Dense``) or int8 (``Int8Dense``, CPU).

``Int8Dense`` stores the weight quantised per output channel (symmetric int8) and prepacked
for the CPU's int8 kernels (fbgemm/x86 on AVX2: ``vpmaddubsw``); the activations are quantised
per call (dynamic quantisation).
Packed weights, not modules, so the fused projections and each of the 12 per-level logit heads
(slices of ``to_logits``, which module quantisation cannot see) are quantised too.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from openmrt.errors import ConfigError


class Dense:
    """y = x W^T + b with W [out, in] (views of the model's parameters or fused copies)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        self.weight, self.bias = weight, bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class Int8Dense:
    """Dynamic int8 linear (CPU): int8 weights per output channel, activations quantised per call.

    Activations get 8 bits where the CPU has VNNI (int8 dot products accumulate in 32 bits), else
    7 bits: plain AVX2's ``vpmaddubsw`` adds two u8 x s8 products in 16 bits with saturation. On
    mrt2_small's seeded golden, 8-bit activations missed 8 greedy decisions of 192 where 7-bit ones
    missed 15 (16 frames; over all 48 frames the two are close, benchmarks/lm_int8_agreement.py);
    7-bit weights with 8-bit activations were worse than either, so the weights keep 8 bits."""

    def __init__(self, dense: Dense):
        w = dense.weight.detach().float()
        if w.device.type != "cpu":
            raise ConfigError("int8 weights run on the CPU only (use bfloat16 and CUDA graphs on a GPU)")
        scale = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()
        zero = torch.zeros(w.shape[0], dtype=torch.long)
        with warnings.catch_warnings():  # quantized tensors are deprecated in favour of torchao (not installed)
            warnings.simplefilter("ignore")
            qw = torch.quantize_per_channel(w, scale, zero, 0, torch.qint8)
            b = None if dense.bias is None else dense.bias.detach().float().contiguous()
            self.packed = torch.ops.quantized.linear_prepack(qw, b)
        self.reduce_range = not has_vnni()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = torch.ops.quantized.linear_dynamic(x.reshape(-1, shape[-1]).contiguous(), self.packed, self.reduce_range)
        return y.view(*shape[:-1], y.shape[-1])


@functools.cache
def has_vnni() -> bool:
    """Whether the CPU has int8 dot products with 32-bit accumulation (AVX512-VNNI or AVX-VNNI)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags

