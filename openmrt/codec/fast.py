"""Fast CPU inference for the SpectroStream decoder step: prepacked oneDNN weights, fewer copies.

    fast = prepare_decoder(codec, precision="f32")  # or "int8", or "bf16" (CPUs with AVX-512 BF16 / AMX)
    state = fast.init_decode_state(batch)
    audio = fast.decode_step(codes, state)  # [B, L] -> [B, 1920, 2], as SpectroStream.decode_step

Why it is faster than ``SpectroStream.decode_step`` on a CPU (docs/benchmarks.md has the figures):

* every conv and transposed conv runs on weights reordered once into oneDNN's blocked layout
  (``torch.ops.mkldnn._convolution_pointwise``); plain ``F.conv2d`` reorders the weights on every
  call, which for decoder_0's 38 MB 3×3 kernel costs more than the arithmetic;
* ELU is written straight into the conv's state buffer (``elu(out=view)``), the residual
  upsample is a broadcast in-place add, and the transposed convs' bias rides in the op;
* the state has the same structure as the reference (``DecodeStreamState``), updated in place, so
  ``reset_``/``state_dict`` and the streaming contract carry over unchanged.

``precision="f32"`` equals the reference decode to float rounding; ``"bf16"`` stores activations
and weights in bfloat16 (accumulation in float32 inside oneDNN), measured in
benchmarks/codec_precision.py; it needs AVX-512 BF16 or AMX (oneDNN has no bf16 conv on AVX2).
``"int8"`` runs the layers with ≥ 1 M weights (input linears, input residual unit, decoder_0,
decoder_1's transposed conv: 110 of the 143 MB) as fbgemm int8 GEMMs (per-channel int8 weights,
activations quantized per call, AVX2 ``vpmaddubsw`` or VNNI) and the high-resolution, compute-bound
layers in float32: those few positions make weight traffic the cost, which int8 quarters.
No precision changes the streaming contract or the state layout; none is a default anywhere.

The returned object delegates everything else (``encode``, ``decode``, ``quantizer``, ...) to the
original codec, whose float32 weights it shares.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from openmrt.codec.decoder import _HALF_STAGES, _MERGED_STAGES, FREQ_IN, Decoder
from openmrt.codec.layers import CausalConv2d, CausalConvTranspose2d, split_halves
from openmrt.codec.model import DecodeStreamState, SpectroStream
from openmrt.codec.stft import init_istft_state, istft_step
from openmrt.codec.units import UpUnit
from openmrt.errors import ConfigError

PRECISIONS = {"f32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
              "int8": torch.float32}
INT8_MIN_WEIGHTS = 1_000_000  # int8 for the big low-resolution layers only: there weight traffic is the cost

_mk = torch.ops.mkldnn


def _elu_into(x: torch.Tensor, out: torch.Tensor) -> None:
    torch._C._nn.elu(x, 1.0, 1.0, 1.0, out=out)


def bf16_supported() -> bool:
    """oneDNN's bfloat16 convolutions need AVX-512 (BW/VL/DQ) or AVX-NE-CONVERT; AVX2 alone has none."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class _Conv:
    """A packed :class:`CausalConv2d` step on its ``ConvState`` buffer (same buffer as the reference)."""

    def __init__(self, conv: CausalConv2d, in_shape: tuple[int, ...], dtype: torch.dtype):
        self.ctx, self.fl, self.act, self.stride = conv.ctx, conv.fpad[0], conv.act, list(conv.stride)
        w = conv.weight.detach().to(dtype).contiguous()
        self.weight = torch._C._nn.mkldnn_reorder_conv2d_weight(
            w.to_mkldnn(), [0, 0], self.stride, [1, 1], 1, list(in_shape)
        )
        self.bias = conv.bias.detach().to(dtype)

    def __call__(self, x: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
        """[B, Cin, chunk, F] -> [B, Cout, chunk / sT, F']; the buffer keeps the past inputs."""
        ctx, fl = self.ctx, self.fl
        chunk, freq = x.shape[2], x.shape[3]
        view = buf[:, :, ctx:, fl : fl + freq]
        if self.act:
            _elu_into(x, view)
        else:
            view.copy_(x)
        y = self._conv(buf)
        if ctx:
            last = buf[:, :, chunk:]
            buf[:, :, :ctx].copy_(last if chunk >= ctx else last.clone())  # clone when regions overlap
        return y

    def _conv(self, buf: torch.Tensor) -> torch.Tensor:
        return _mk._convolution_pointwise(buf, self.weight, self.bias, [0, 0], self.stride, [1, 1], 1, "none", [], "")


class _ConvT:
    """A packed :class:`CausalConvTranspose2d` step: overlap-add carry as in the reference."""

    def __init__(self, conv: CausalConvTranspose2d, in_shape: tuple[int, ...], dtype: torch.dtype):
        self.ctx, self.act, self.stride = conv.ctx, conv.act, list(conv.stride)
        w = conv.weight.detach().to(dtype).contiguous()  # [Cin, Cout, kT, kF]
        self.weight = _mk._reorder_convolution_transpose_weight(
            w, [0, 0], [0, 0], self.stride, [1, 1], 1, list(in_shape)
        )
        self.bias = conv.bias.detach().to(dtype)
        self.bias4 = self.bias[:, None, None]

    def __call__(self, x: torch.Tensor, carry: torch.Tensor) -> torch.Tensor:
        """[B, Cin, n, F] -> [B, Cout, n·sT, F·sF]"""
        if self.act:
            x = F.elu(x)
        f, n = x.shape[3], x.shape[2] * self.stride[0]
        y = self._full(x)[:, :, :, 1 : 1 + f * self.stride[1]]  # bias included, on every frame
        y[:, :, : self.ctx] += carry
        torch.sub(y[:, :, n:], self.bias4, out=carry)  # the carry is kept without the bias
        return y[:, :, :n]

    def _full(self, x: torch.Tensor) -> torch.Tensor:
        return _mk._convolution_transpose_pointwise(
            x, self.weight, self.bias, [0, 0], [0, 0], self.stride, [1, 1], 1, "none", [], ""
        )


def _int8_linear(w2d: torch.Tensor, bias: torch.Tensor | None) -> object:
    """fbgemm-packed int8 weights (per output channel) for ``quantized.linear_dynamic``."""
    w2d = w2d.detach().float().contiguous()
    scale = (w2d.abs().amax(1) / 127.0).clamp(min=1e-12).double()
    with warnings.catch_warnings():  # torch 2.13 deprecates quantized tensors; fbgemm's packed GEMM still needs one
        warnings.simplefilter("ignore", UserWarning)
        wq = torch.quantize_per_channel(w2d, scale, torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8)
    return torch.ops.quantized.linear_prepack(wq, None if bias is None else bias.detach().float())


def _linear_int8(x: torch.Tensor, packed) -> torch.Tensor:
    # Activations are quantized per call (per tensor, 7 bits: fbgemm's reduce_range avoids vpmaddubsw overflow).
    return torch.ops.quantized.linear_dynamic(x, packed, True)


class _Conv8(_Conv):
    """A :class:`CausalConv2d` step as im2col + int8 GEMM (layers with few positions and big weights)."""

    def __init__(self, conv: CausalConv2d, in_shape: tuple[int, ...], dtype: torch.dtype):
        self.ctx, self.fl, self.act, self.stride = conv.ctx, conv.fpad[0], conv.act, list(conv.stride)
        self.kernel, self.cout = conv.kernel, conv.cout
        self.packed = _int8_linear(conv.weight.reshape(conv.cout, -1), conv.bias)

    def _conv(self, buf: torch.Tensor) -> torch.Tensor:
        b, _, t, f = buf.shape
        (kt, kf), (st, sf) = self.kernel, self.stride
        to, fo = (t - kt) // st + 1, (f - kf) // sf + 1
        cols = F.unfold(buf, self.kernel, stride=self.stride)  # [B, Cin·kT·kF, To·Fo], (c, kt, kf) order
        y = _linear_int8(cols.transpose(1, 2).reshape(b * to * fo, -1), self.packed)  # [B·To·Fo, Cout]
        return y.view(b, to, fo, self.cout).permute(0, 3, 1, 2)  # channels-last view


class _ConvT8(_ConvT):
    """A :class:`CausalConvTranspose2d` step as int8 GEMM + col2im (``fold`` sums the overlaps)."""

    def __init__(self, conv: CausalConvTranspose2d, in_shape: tuple[int, ...], dtype: torch.dtype):
        self.ctx, self.act, self.stride = conv.ctx, conv.act, list(conv.stride)
        self.kernel = conv.kernel
        cin, cout, kt, kf = conv.weight.shape
        self.packed = _int8_linear(conv.weight.permute(1, 2, 3, 0).reshape(cout * kt * kf, cin), None)
        self.bias = conv.bias.detach().float()
        self.bias4 = self.bias[:, None, None]

    def _full(self, x: torch.Tensor) -> torch.Tensor:
        b, _, n, f = x.shape
        (kt, kf), (st, sf) = self.kernel, self.stride
        z = _linear_int8(x.permute(0, 2, 3, 1).reshape(b * n * f, -1), self.packed)  # [B·n·F, Cout·kT·kF]
        cols = z.view(b, n * f, -1).transpose(1, 2)
        y = F.fold(cols, ((n - 1) * st + kt, (f - 1) * sf + kf), self.kernel, stride=self.stride)
        return y.add_(self.bias4)


class _OutConv(_Conv):
    """The 7×7 64→2 output conv as one GEMM over channels plus 49 shifted adds.

    oneDNN's direct conv runs at a third of its usual rate with 2 output channels; the GEMM
    ``[positions, 64] @ [64, 7·7·2]`` is fully vectorised and the taps are summed by slicing.
    """

    def __init__(self, conv: CausalConv2d, in_shape: tuple[int, ...], dtype: torch.dtype):
        self.ctx, self.fl, self.act, self.stride = conv.ctx, conv.fpad[0], conv.act, list(conv.stride)
        self.kernel, self.cout = conv.kernel, conv.cout
        assert conv.stride == (1, 1), conv.stride
        self.w = conv.weight.detach().permute(1, 2, 3, 0).reshape(conv.cin, -1).to(dtype).contiguous()
        self.bias = conv.bias.detach().to(dtype)

    def _conv(self, buf: torch.Tensor) -> torch.Tensor:
        b, c, t, f = buf.shape
        kt, kf = self.kernel
        to, fo = t - kt + 1, f - kf + 1
        z = (buf.permute(0, 2, 3, 1).reshape(-1, c) @ self.w).view(b, t, f, kt, kf, self.cout)
        out = z[:, :to, :fo, 0, 0] + self.bias  # [B, To, Fo, Cout]
        for i in range(kt):
            for j in range(kf):
                if i or j:
                    out += z[:, i : i + to, j : j + fo, i, j]
        return out.permute(0, 3, 1, 2)  # channels-last view [B, Cout, To, Fo]


def _make_conv(conv: CausalConv2d, in_shape: tuple[int, ...], dtype: torch.dtype, int8: bool) -> _Conv:
    return (_Conv8 if int8 and conv.weight.numel() >= INT8_MIN_WEIGHTS else _Conv)(conv, in_shape, dtype)


def _make_convt(conv: CausalConvTranspose2d, in_shape: tuple[int, ...], dtype: torch.dtype, int8: bool) -> _ConvT:
    return (_ConvT8 if int8 and conv.weight.numel() >= INT8_MIN_WEIGHTS else _ConvT)(conv, in_shape, dtype)


class _Unit:
    """A packed :class:`UpUnit`: first conv (transposed or 3×3), 3×3, 1×1 shortcut, upsample-add."""

    def __init__(self, unit: UpUnit, batch: int, chunk: int, freq: int, dtype: torch.dtype, int8: bool = False):
        up = getattr(unit, unit.up_name)
        st, sf = self.stride = unit.stride
        cin = up.cin
        if isinstance(up, CausalConvTranspose2d):
            self.first: _Conv | _ConvT = _make_convt(up, (batch, cin, chunk, freq), dtype, int8)
        else:
            self.first = _make_conv(up, (batch, cin, up.ctx + chunk, freq + sum(up.fpad)), dtype, int8)
        c2 = unit.conv2d_3x3
        self.second = _make_conv(c2, (batch, c2.cin, c2.ctx + chunk * st, freq * sf + sum(c2.fpad)), dtype, int8)
        self.shortcut = None
        if unit.shortcut_layer is not None:
            s = unit.shortcut_layer.conv1x1
            self.shortcut = torch._C._nn.mkldnn_reorder_conv2d_weight(
                s.weight.detach().to(dtype).contiguous().to_mkldnn(), [0, 0], [1, 1], [1, 1], 1,
                [batch, s.weight.shape[1], chunk, freq],
            )
            self.shortcut_bias = s.bias.detach().to(dtype)

    def __call__(self, x: torch.Tensor, state) -> torch.Tensor:
        h = self.first(x, state.first.carry if isinstance(self.first, _ConvT) else state.first.buf)
        h = self.second(h, state.second.buf)  # a fresh tensor: add the shortcut into it in place
        s = x
        if self.shortcut is not None:
            s = _mk._convolution_pointwise(x, self.shortcut, self.shortcut_bias, [0, 0], [1, 1], [1, 1], 1,
                                           "none", [], "")
        st, sf = self.stride
        if (st, sf) == (1, 1):
            return h.add_(s)
        b, c, t, f = s.shape
        h.unflatten(2, (t, st)).unflatten(4, (f, sf)).add_(s[:, :, :, None, :, None])  # nearest upsample
        return h


class FastDecoder(nn.Module):
    """The decoder step of :class:`Decoder` on packed weights (see the module docstring)."""

    def __init__(self, decoder: Decoder, batch: int, dtype: torch.dtype, int8: bool = False):
        super().__init__()
        self.dtype = dtype
        self.input_layer = decoder.input_layer  # three linears on one frame (34 MB of float32 weights)
        self.int8_input = None
        if int8:
            il = decoder.input_layer
            self.int8_input = [_int8_linear(m.weight, m.bias) for m in
                               (il.conv1x1_first, il.shortcut_layer.conv1x1_b1, il.shortcut_layer.conv1x1_b2)]
        self.merged, self.halves = [], []
        chunk, freq = 1, FREQ_IN
        for stages, bsz, out in ((_MERGED_STAGES, batch, self.merged), (_HALF_STAGES, 2 * batch, self.halves)):
            for name, *_ in stages:
                unit = getattr(decoder, name)
                out.append(_Unit(unit, bsz, chunk, freq, dtype, int8))
                chunk, freq = chunk * unit.stride[0], freq * unit.stride[1]
        conv = decoder.output_layer.base_conv_last
        shape = (2 * batch, conv.cin, conv.ctx + chunk, freq + sum(conv.fpad))
        # The GEMM form sums 49 taps in the activation dtype: float32 only (bf16 lost 14 dB that way).
        self.out = (_OutConv if dtype == torch.float32 else _Conv)(conv, shape, dtype)
        self._reference = decoder

    def init_state(self, batch: int, device=None):
        return self._reference.init_state(batch, device, self.dtype)

    @torch.inference_mode()
    def step(self, emb: torch.Tensor, state) -> torch.Tensor:
        """One frame: [B, 1, D] -> [B, 4, 4, 480] float32; updates ``state`` in place."""
        b = emb.shape[0]
        if self.int8_input is None:
            x = self.input_layer(emb)  # [B, 1, 5·C]
        else:
            first, b1, b2 = self.int8_input
            e = emb.reshape(b, -1)
            x = _linear_int8(e, first).add_(_linear_int8(F.elu(_linear_int8(e, b1)), b2))
        x = x.reshape(b, 1, FREQ_IN, -1).permute(0, 3, 1, 2).to(self.dtype)  # [B, C, 1, 5], channels-last
        for unit, st in zip(self.merged, state.merged, strict=True):
            x = unit(x, st)
        x = split_halves(x)
        for unit, st in zip(self.halves, state.halves, strict=True):
            x = unit(x, st)
        x = self.out(x, state.out.buf)  # [2B, 2, 4, 480]
        return x.reshape(b, 4, x.shape[2], x.shape[3]).float()


class FastCodec(nn.Module):
    """A :class:`SpectroStream` whose ``decode_step`` runs on :class:`FastDecoder`; all else delegates."""

    def __init__(self, codec: SpectroStream, precision: str = "f32", batch: int = 1):
        super().__init__()
        if precision not in PRECISIONS:
            raise ConfigError(f"codec precision: expected one of f32, bf16, int8, got {precision!r}")
        dtype = PRECISIONS[precision]
        if dtype == torch.bfloat16 and not bf16_supported():
            raise ConfigError("codec precision bf16: this CPU has no fast bfloat16 convolutions (needs AVX-512 "
                              "BF16 or AMX); use precision='f32'")
        if next(codec.parameters()).device.type != "cpu":
            raise ConfigError("prepare_decoder packs weights for oneDNN on the CPU; on a GPU use the codec as is")
        self.codec = codec
        self.precision = precision
        self.fast = FastDecoder(codec.decoder, batch, dtype, int8=precision == "int8")

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["codec"], name)

    def init_decode_state(self, batch: int, device=None, dtype=None) -> DecodeStreamState:
        """As :meth:`SpectroStream.init_decode_state`; conv buffers in this decoder's precision."""
        return DecodeStreamState(
            decoder=self.fast.init_state(batch, device),
            istft=init_istft_state(batch, device, torch.float32),
            steps=torch.zeros((), dtype=torch.long, device=device),
        )

    @torch.inference_mode()
    def decode_latents_step(self, emb: torch.Tensor, state: DecodeStreamState) -> torch.Tensor:
        codec = self.codec
        spec = self.fast.step(emb[:, None], state.decoder)
        spec.mul_((state.steps >= codec.decoder_latency_frames).to(spec.dtype))  # the lookahead's silent frame
        state.steps.add_(1).clamp_(max=codec.decoder_latency_frames)
        return istft_step(spec, state.istft, codec.synthesis_window)

    def decode_step(self, codes: torch.Tensor, state: DecodeStreamState) -> torch.Tensor:
        """One code frame [B, L] -> raw audio [B, 1920, 2] of the previous code frame (no host sync)."""
        return self.decode_latents_step(self.codec.quantizer.decode(codes), state)


def prepare_decoder(codec: SpectroStream, precision: str = "f32", batch: int = 1) -> FastCodec:
    """A codec with the fast CPU ``decode_step`` (``batch`` sizes the packed layouts; others still work)."""
    return FastCodec(codec.eval(), precision, batch)


__all__ = ["FastCodec", "FastDecoder", "PRECISIONS", "bf16_supported", "prepare_decoder"]
