"""Every streaming module against the one contract (tests/streaming_contract.py): causal and transposed convs,
the codec's STFT and inverse STFT steps, the LM (self-attention with sink and window, cross-attention, the depth
loop; teacher-forced logits against steps with forced tokens) and the codec's encoder and decoder."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from streaming_contract import Streaming, check_streaming

from openmrt import tokens as tk
from openmrt.codec import SpectroStream
from openmrt.codec.layers import CausalConv2d, CausalConvTranspose2d
from openmrt.codec.stft import (
    HOP,
    analysis_window,
    init_istft_state,
    init_stft_state,
    istft,
    istft_step,
    stft,
    stft_step,
    synthesis_window,
)
from openmrt.config import codec_config, lm_config
from openmrt.frame import FRAME_SAMPLES
from openmrt.lm.generate import LMGenerator
from openmrt.lm.model import Depthformer


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _t(x: torch.Tensor) -> torch.Tensor:
    """[B, C, T, F] <-> [B, T, C, F]: the convs keep time on axis 2, the contract on axis 1."""
    return x.transpose(1, 2)


@pytest.mark.parametrize("kernel, stride, act", [((3, 3), (1, 1), False), ((4, 4), (2, 2), True),
                                                 ((1, 3), (1, 1), False), ((5, 3), (2, 1), False)])
def test_causal_conv(kernel, stride, act):
    conv, freq = CausalConv2d(3, 5, kernel, stride, act).eval(), 8
    check_streaming(Streaming(
        whole=lambda x: _t(conv(_t(x))),
        init=lambda b, chunk: conv.init_state(b, chunk * stride[0], freq),
        step=lambda st, x: _t(conv.step(_t(x), st)),
        unit=stride[0],
    ), torch.randn(3, 12 * stride[0], 3, freq))


@pytest.mark.parametrize("kernel, stride", [((4, 3), (2, 1)), ((3, 4), (1, 2)), ((4, 4), (4, 2))])
def test_causal_conv_transpose(kernel, stride):
    conv, freq = CausalConvTranspose2d(4, 3, kernel, stride, act=True).eval(), 6
    check_streaming(Streaming(
        whole=lambda x: _t(conv(_t(x))),
        init=lambda b, chunk: conv.init_state(b, freq),
        step=lambda st, x: _t(conv.step(_t(x), st)),
        variable=True,  # the carry does not depend on the chunk
    ), torch.randn(3, 13, 4, freq))


def test_stft_step():
    """One block late: a block of k·480 samples emits the k frames that start in the block before it."""
    window = analysis_window()
    check_streaming(Streaming(
        whole=lambda x: _t(stft(x)),
        init=lambda b, chunk: init_stft_state(b, chunk * HOP),
        step=lambda st, x: _t(stft_step(x, st, window)),
        unit=HOP,
        latency=lambda chunk: chunk,  # frames
        pad=lambda chunk: chunk * HOP,  # one more block lets the last frames out
        prefix_drop=1,  # the last frame of a prefix reaches 480 samples past it
    ), 0.3 * torch.randn(3, 11 * HOP, 2))


def test_istft_step():
    window = synthesis_window()
    check_streaming(Streaming(
        whole=lambda x: istft(_t(x)),
        init=lambda b, chunk: init_istft_state(b),
        step=lambda st, x: istft_step(_t(x), st, window),
        variable=True,
    ), torch.randn(3, 14, 4, 480))


# ------------------------------------------------------------------------------------------------- the LM


def _lm(self_window: int, cross_window: int, ours: bool = False) -> Depthformer:
    cfg = dataclasses.replace(lm_config("tiny"), self_window=self_window, cross_window=cross_window,
                              cond_to_input=ours, regular_sum=ours)
    m = Depthformer(cfg)
    with torch.no_grad():  # weights large enough that every path (sinks included) moves the logits
        for name, p in m.named_parameters():
            p.normal_(1.0 if "norm" in name else 0.0, 0.3 if "norm" in name or "sink" in name else 0.05)
        m.encoder.regular_table.weight.normal_(0, 1.0)
        m.to_logits.weight.mul_(10)
    return m.eval()


def _lm_inputs(batch: int, frames: int, seed: int = 1) -> torch.Tensor:
    """[B, T, 144 + 12]: model conditioning tokens, then the frame's tokens (unique ids)."""
    g = np.random.default_rng(seed)
    raw = np.stack([tk.make_conditioning(style=g.integers(0, 1024, 12), notes=g.integers(-1, 4, 128),
                                         drums=int(g.integers(-1, 2)), cfg={"musiccoca": float(g.uniform(-1, 7))})
                    for _ in range(batch * frames)]).reshape(batch, frames, -1)
    codes = torch.as_tensor(g.integers(0, 1024, (batch, frames, 12)))
    return torch.cat([tk.encode_conditioning(raw), tk.to_unique(codes)], -1)


def _levels(logits: torch.Tensor) -> torch.Tensor:
    """[..., 12, V] -> each level's own 1024 logits [..., 12, 1024]."""
    return torch.stack([logits[..., q, tk.level_slice(q)] for q in range(12)], -2)


def _lm_step(gen: LMGenerator, x: torch.Tensor) -> torch.Tensor:
    out = []
    for t in range(x.shape[1]):
        trace: dict = {}
        gen.step(x[:, t, :tk.NUM_COND], forced=x[:, t, tk.NUM_COND:], trace=trace)
        out.append(torch.stack(trace["logits"], -2)[:, 0])  # [B, 12, 1024] (row 0: no batched CFG)
    return torch.stack(out, 1)


@pytest.mark.parametrize("windows", [(5, 3), (2, 6), (4, 4), (4, 4, True)])
def test_lm_teacher_forced_logits_equal_steps_with_forced_tokens(windows):
    """Self-attention (sink, sliding window), cross-attention (window) and the depth loop, past several evictions;
    last case: our demo LM's changes (conditioning added to the temporal input, regular channels summed)."""
    model = _lm(*windows)
    windows = windows[:2]
    check_streaming(Streaming(
        whole=lambda x: _levels(model(x[..., :tk.NUM_COND], x[..., tk.NUM_COND:])),
        init=lambda b, chunk: LMGenerator(model, batch_size=b, temperature=0.0),
        step=_lm_step,
        state=lambda gen: gen.state,
        reset=lambda gen: gen.reset(),
        max_chunk=1,  # one frame per call
        rtol=4e-6,  # of the soft cap (30): 1.2e-4
    ), _lm_inputs(2, 3 * max(windows) + 4))


# ---------------------------------------------------------------------------------------------- the codec

WIDTHS = {"narrow": (3, 8), "spectrostream": (2, 5)}  # preset -> (batch, code frames): full width is slow on CPU


@pytest.fixture(scope="module", params=list(WIDTHS), ids=list(WIDTHS))
def codec(request) -> tuple[SpectroStream, int, int]:
    torch.manual_seed(0)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return SpectroStream(codec_config(request.param)).eval(), *WIDTHS[request.param]


def test_codec_encoder(codec):
    model, batch, frames = codec
    check_streaming(Streaming(
        whole=model.encode_latents,
        init=lambda b, chunk: model.init_encode_state(b),
        step=lambda st, x: model.encode_latents_step(x, st)[:, None],
        unit=FRAME_SAMPLES,
        max_chunk=1,  # blocks of one frame
        latency=lambda chunk: model.encoder_latency_frames,
        pad=lambda chunk: model.encoder_input_latency,  # the STFT window reaches 479 samples ahead
        prefix_drop=1,  # so the last frame of a prefix differs
    ), 0.3 * torch.randn(batch, frames * FRAME_SAMPLES, 2))


def test_codec_decoder(codec):
    model, batch, frames = codec
    check_streaming(Streaming(
        whole=model.decode,
        init=lambda b, chunk: model.init_decode_state(b),
        step=lambda st, x: model.decode_step(x[:, 0], st),
        max_chunk=1,
        latency=lambda chunk: model.decoder_latency_frames * FRAME_SAMPLES,  # step 0 returns a frame of zeros
    ), torch.randint(0, 1024, (batch, frames, 12)))


def test_the_contract_catches_a_leaky_step():
    """The checker itself: a step that keeps state it should not (a running sum) fails it."""
    from openmrt.streaming import StreamState

    @dataclasses.dataclass
    class Acc(StreamState):
        total: torch.Tensor

    def step(st: Acc, x: torch.Tensor) -> torch.Tensor:
        st.total += x.sum()
        return x + st.total * 1e-3

    with pytest.raises(AssertionError, match="chunks of 1 .* max difference"):
        check_streaming(Streaming(whole=lambda x: x, init=lambda b, c: Acc(torch.zeros(())), step=step, variable=True),
                        torch.randn(2, 6, 3))
    # and one that reallocates its state
    def realloc(st: Acc, x: torch.Tensor) -> torch.Tensor:
        st.total = torch.zeros(())
        return x

    with pytest.raises(AssertionError, match="reallocated"):
        check_streaming(Streaming(whole=lambda x: x, init=lambda b, c: Acc(torch.zeros(())), step=realloc),
                        torch.randn(2, 6, 3))
