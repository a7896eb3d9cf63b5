"""Linear layers of the inference weights: float (``Dense``) or int8 (``Int8Dense``, CPU).

``Int8Dense`` stores the weight quantised per output channel (symmetric int8) and prepacked
for the CPU's int8 kernels (fbgemm/x86 on AVX2: ``vpmaddubsw``); the activations are quantised
per call (dynamic quantisation, 7-bit range so the AVX2 16-bit accumulation cannot saturate).
Packed weights, not modules, so the fused projections and each of the 12 per-level logit heads
(slices of ``to_logits``, which module quantisation cannot see) are quantised too.
"""

from __future__ import annotations

import warnings

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
    """Dynamic int8 linear (CPU): int8 weights per output channel, activations quantised per call."""

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

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = torch.ops.quantized.linear_dynamic(x.reshape(-1, shape[-1]).contiguous(), self.packed, True)
        return y.view(*shape[:-1], y.shape[-1])


def int8_supported() -> bool:
    """Whether this PyTorch build has the CPU int8 linear kernels."""
    return "x86" in torch.backends.quantized.supported_engines or "fbgemm" in torch.backends.quantized.supported_engines
